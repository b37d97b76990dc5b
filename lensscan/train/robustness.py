"""Leave-one-family-out robustness: does a model find lenses drawn by a renderer it never saw?

For every rendering family (:data:`~lensscan.simulate.population.ALL_FAMILIES`), one member is
trained with that family's rows left out of training and validation (``exclude``), then scored on
a test set of the HSC Wide population in which that family renders every object
(:func:`make_test_sets`, ``TESTS/<choice>-<family>``). A reference member trained on every family
with the same recipe is scored on the same sets: the gap between the two is what the held-out
renderer costs. Members may start from trained weights (``init``); the matrix then says which
families those weights had seen.

Run it with ``python jobs/robustness.py`` (see the README).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from lensscan import modelcard
from lensscan.data.preprocess import Preprocessing
from lensscan.io import storage
from lensscan.simulate.population import ALL_FAMILIES, Rendering, preset, with_families
from lensscan.simulate.survey import SurveySpec, simulate_survey
from lensscan.train.ensemble import member_config
from lensscan.train.metrics import average_precision, recall_at_fpr, roc_auc
from lensscan.train.predict import member_scores, require_both_classes
from lensscan.train.trainer import complete, dataset, run_name, train

#: The recipe of every member of the matrix: the bundled ensemble's first member.
MATRIX_MEMBER: dict[str, Any] = {"arch": "resnet", "seed": 0, "loss": "focal"}
#: The schedule of every member of the matrix (``jobs/robustness.py``'s defaults): shorter, and at
#: a lower peak learning rate, than a single :class:`~lensscan.config.TrainConfig` run's.
MATRIX_SCHEDULE: dict[str, Any] = {"epochs": 4, "steps_per_epoch": 250, "lr": 1e-3}
REFERENCE = "all_families"
COMPLETE = "_complete.json"  # written into a test set's folder once all its shards are


@dataclass(frozen=True)
class Cell:
    """One held-out family's figures on its own test set."""

    choice: str
    family: str
    lenses: int
    nonlenses: int
    auc: float
    ap: float
    recall_1e3: float
    ref_auc: float
    ref_ap: float
    ref_recall_1e3: float
    init_saw: bool  # the starting weights were trained on this family


def families(choices: list[str] | None = None) -> list[tuple[str, str]]:
    """Every (choice, family) pair, optionally for some choices only."""
    return [(c, f) for c, names in ALL_FAMILIES.items() if not choices or c in choices
            for f in names]


def test_set_url(tests: str, choice: str, family: str) -> str:
    return storage.join(tests, f"{choice}-{family}")


def make_test_sets(tests: str, pairs: list[tuple[str, str]], lenses: int, nonlenses: int,
                   seed: int) -> None:
    """One HSC Wide survey per (choice, family) with that family rendering every object (the
    other choices as the ``hsc`` preset draws them); sets already written are kept."""
    cond, pop = preset("hsc")
    for choice, family in pairs:
        url = test_set_url(tests, choice, family)
        done = storage.join(url, COMPLETE)
        if storage.exists(done):
            continue
        spec = SurveySpec(lenses, nonlenses, seed=seed, test_fraction=0.0, conditions=cond,
                          population=with_families(pop, [f"{choice}={family}"]))
        counts = simulate_survey(url, spec, shard_size=2000, progress=False)
        storage.write_bytes_atomic(done, json.dumps(counts).encode())
        print(f"[lensscan] test set {choice}={family}: {lenses} lenses, {nonlenses} non-lenses",
              flush=True)


def _scores(model_url: str, test: str) -> tuple[float, ...]:
    """Lenses, non-lenses, AUC, AP and recall at FPR 1e-3 of one model on one test set."""
    loaded = modelcard.load_model(model_url)
    ds = dataset(test, Preprocessing.from_dict(loaded.preprocessing), "model")
    rows: dict = {}
    y, s, _ = member_scores(loaded.module, ds, rows=rows)
    require_both_classes(y, rows, test, "the robustness matrix")
    s = s[:, 0]
    return (int(y.sum()), int((y == 0).sum()), roc_auc(y, s), average_precision(y, s),
            recall_at_fpr(y, s, 1e-3))


def _member(name: str, train_url: str, val: str, out: str, exclude: list[str],
            common: dict) -> str:
    """Train one member into ``out/name``, or keep it when this command trained it before (the
    same run name); a member trained with other settings is refused, not mixed in."""
    url = storage.join(out, name)
    cfg = member_config(name, train_url, val, out, exclude=exclude, **{**MATRIX_MEMBER, **common})
    if storage.exists(storage.join(url, modelcard.CARD)):
        theirs = (modelcard.read_card(url).training or {}).get("run")
        ours = run_name(complete(cfg))
        if theirs != ours:
            raise ValueError(f"--out {out}: member {name} was trained with other settings (run "
                             f"{theirs}, this command's {ours}); give another --out, or remove "
                             "that member to train it anew")
        print(f"[lensscan] {name}: already trained, kept", flush=True)
        return url
    t0 = time.time()
    train(cfg, progress=False)
    print(f"[lensscan] {name}: trained in {time.time() - t0:.0f}s", flush=True)
    return url


def hsc_families() -> set[tuple[str, str]]:
    """The ``hsc`` preset's one family per choice: what a model trained on data made before the
    families existed (the bundled model's rounds 1-4) has seen."""
    hsc = Rendering()
    return {(c, next(iter(getattr(hsc, c)))) for c in ALL_FAMILIES}


def robustness_matrix(train_url: str, val: str, tests: str, out: str,
                      pairs: list[tuple[str, str]] | None = None,
                      init_saw: set[tuple[str, str]] | None = None, **common: Any) -> list[Cell]:
    """Train the reference and one member per held-out family (``pairs``; default every family,
    ``[]`` the reference alone) into ``out``; score each on its family's test set under
    ``tests``; write ``out/matrix.json``. Finished members are kept, so a rerun resumes.
    ``common`` goes to every member's :class:`~lensscan.config.TrainConfig` (``init``, the
    starting weights, included); ``init_saw`` names the families those weights had seen.
    """
    pairs = families() if pairs is None else pairs
    ref_url = _member(REFERENCE, train_url, val, out, [], common)
    saw = init_saw or set()
    cells = []
    for choice, family in pairs:
        url = _member(f"without_{choice}_{family}", train_url, val, out,
                      [f"{choice}_family={family}"], common)
        test = test_set_url(tests, choice, family)
        n_pos, n_neg, *held = _scores(url, test)
        _, _, *ref = _scores(ref_url, test)
        cell = Cell(choice, family, n_pos, n_neg, *held, *ref, (choice, family) in saw)
        cells.append(cell)
        print(f"[lensscan] without {choice}={family}: AUC {cell.auc:.4f} "
              f"(all families {cell.ref_auc:.4f}), recall@1e-3 {cell.recall_1e3:.3f} "
              f"({cell.ref_recall_1e3:.3f})", flush=True)
        storage.write_bytes_atomic(storage.join(out, "matrix.json"), json.dumps(
            [c.__dict__ for c in cells], indent=2).encode())
    return cells


def markdown(cells: list[Cell]) -> str:
    """The matrix as a Markdown table."""
    lines = ["| held-out family | lenses | non-lenses | AUC | AP | recall @ FPR 1e-3 | "
             "trained on all: AUC | AP | recall @ FPR 1e-3 |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for c in cells:
        mark = " (*)" if c.init_saw else ""
        lines.append(f"| {c.choice}: {c.family}{mark} | {c.lenses} | {c.nonlenses} | "
                     f"{c.auc:.4f} | {c.ap:.3f} | {c.recall_1e3:.3f} | {c.ref_auc:.4f} | "
                     f"{c.ref_ap:.3f} | {c.ref_recall_1e3:.3f} |")
    if any(c.init_saw for c in cells):
        lines.append("\n(*) the starting weights had been trained on this family")
    return "\n".join(lines) + "\n"
