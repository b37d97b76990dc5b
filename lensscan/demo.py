"""``lensscan demo``: simulate a small survey, score it with the bundled ensemble, report."""

from __future__ import annotations

import os
import time

import numpy as np

from lensscan.catalog.formats import to_text_table
from lensscan.catalog.query import query
from lensscan.config import ScoreConfig
from lensscan.io import storage
from lensscan.score.pipeline import score_survey
from lensscan.simulate.survey import SurveySpec, simulate_survey

DEMO_LENSES, DEMO_NONLENSES, DEMO_SEED = 30, 2970, 20261124


def run_demo(workdir: str = "lensscan-demo", lenses: int = DEMO_LENSES,
             nonlenses: int = DEMO_NONLENSES, seed: int = DEMO_SEED, model: str = "default",
             gallery: bool = True) -> dict:
    """Simulate (once), score, query and draw the gallery; print what a user needs to see."""
    t0 = time.time()
    survey = storage.join(workdir, "survey")
    out = storage.join(workdir, "run")
    if not storage.exists(survey):
        print(f"[demo] simulating {lenses} lenses among {lenses + nonlenses} cutouts -> {survey}")
        simulate_survey(survey, SurveySpec(lenses, nonlenses, seed=seed, test_fraction=0.0),
                        shard_size=500)
    print(f"[demo] scoring {survey} with the {model} model -> {out}")
    # the demo's own folder: an earlier demo with another model is cleared, the same one resumed
    manifest = score_survey(ScoreConfig(input=survey, output=out, model=model, overwrite=True))
    c = manifest["counts"]
    top = query(out, top=10)
    print(f"\n[demo] {c['rows_read']} rows read, {c['rows_scored']} scored, "
          f"{c['rows_quarantined']} quarantined, {c['candidates']} candidates above "
          f"threshold {manifest['threshold']:.3f}\n")
    print(to_text_table(top.select(["rank", "object_id", "ra", "dec", "score"])))
    truth = _truth(survey)
    n_true = int(truth.sum())
    ranked = query(out, top=n_true, columns=["object_id"]).column("object_id").to_numpy()
    found = int(np.isin(ranked, np.flatnonzero(truth)).sum())
    print(f"\n[demo] true lenses recovered in the top {n_true}: {found}/{n_true}")
    result = {"manifest": manifest, "recovered_top_n": found, "n_lenses": n_true,
              "catalog": storage.join(out, "candidates.parquet")}
    print(f"[demo] candidate catalog: {result['catalog']}")
    if gallery:
        from lensscan.catalog.gallery import write_gallery

        page = storage.join(out, "gallery.html")
        write_gallery(out, page, top=100)
        result["gallery"] = page
        print(f"[demo] gallery of the top 100: {os.path.abspath(page)}")
    print(f"[demo] done in {time.time() - t0:.0f}s")
    return result


def _truth(survey: str) -> np.ndarray:
    """Boolean lens flags indexed by object_id (the simulator's ids are 0..N-1)."""
    import pyarrow.dataset as pads

    fs, path = storage.filesystem(survey)
    table = pads.dataset(path, format="parquet", filesystem=fs).to_table(
        columns=["object_id", "label"])
    ids = table.column("object_id").to_numpy()
    flags = np.zeros(int(ids.max()) + 1, bool)
    flags[ids] = table.column("label").to_numpy() == 1
    return flags
