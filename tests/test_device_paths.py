"""The accelerator code paths, run on CPU torch (the device is a parameter; CUDA joins the
parametrisation where it exists): preprocessing, scoring and augmentation give what today's
numpy path gives (``reference_preprocess``, frozen), and the actor takes the GPU Ray gives it."""

from __future__ import annotations

import numpy as np
import pytest
import reference_preprocess as ref
import torch
from conftest import make_batch

from lensscan import modelcard
from lensscan.config import ScoreConfig
from lensscan.data.preprocess import Preprocessing, preprocess
from lensscan.io.parquet import write_parquet
from lensscan.score.pipeline import score_survey

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _hard_batch(n: int = 64, seed: int = 0) -> np.ndarray:
    """Cutouts with the edge cases: flat borders (noise floor), NaN/inf pixels, bright cores,
    negative skies, values that overflow float32 in the preprocessing."""
    images = make_batch(n, seed=seed)["image"]
    rng = np.random.default_rng(seed)
    images += rng.uniform(-5, 50, (n, 3, 1, 1)).astype(np.float32)  # sky pedestals
    images[0] = 3.0  # flat: sigma at its floor
    images[1, 2, 30, 30] = np.nan
    images[2, 0, 0, 0] = np.inf
    images[3] *= 1e4
    images[4, 1, 32, 32] = 3e38
    return images


def test_numpy_preprocess_matches_todays():
    p = Preprocessing()
    images = _hard_batch()
    with np.errstate(all="ignore"):
        want = ref.preprocess(images, p)
        got = preprocess(images, p)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_pipeline_scores_match_todays(ray_local, tiny_model, tmp_path):
    """Scores out of the pipeline equal today's numpy preprocessing plus the model, for float32
    and float16 shards."""
    import pyarrow as pa
    import pyarrow.dataset as pads
    import pyarrow.parquet as pq

    src, out = tmp_path / "in", str(tmp_path / "out")
    src.mkdir()
    b32 = make_batch(150, seed=41, start_id=0)
    write_parquet(str(src / "a.parquet"), b32, row_group_size=50)
    b16 = make_batch(70, seed=42, start_id=1000)
    b16["image"] = (b16["image"] * 40 + 100).astype(np.float16)  # a survey stored as float16
    image = pa.FixedSizeListArray.from_arrays(pa.array(b16["image"].reshape(-1)), 12288)
    pq.write_table(pa.table({"object_id": b16["object_id"], "ra": b16["ra"], "dec": b16["dec"],
                             "image": image}), str(src / "h.parquet"), row_group_size=35)
    score_survey(ScoreConfig(input=str(src), output=out, model=tiny_model, rows_per_unit=50,
                             batch_size=64, progress=False))
    df = pads.dataset(out + "/scores").to_table().to_pandas().set_index("object_id")
    loaded = modelcard.load_model(tiny_model)
    p = Preprocessing.from_dict(loaded.preprocessing)
    for b in (b32, b16):
        x = torch.from_numpy(ref.preprocess(b["image"].astype(np.float32), p))
        with torch.inference_mode():
            s, m = loaded.module(x)
        got = df.loc[b["object_id"]]
        assert (got["status"] == "ok").all()
        np.testing.assert_allclose(got["score"].to_numpy(), s.numpy(), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(got["score_m0"].to_numpy(), m[:, 0].numpy(), rtol=1e-4,
                                   atol=1e-6)
