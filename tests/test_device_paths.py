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
from lensscan.data.preprocess import (
    Preprocessing,
    finite_rows,
    median,
    normalize,
    preprocess,
    preprocess_tensor,
    stretch,
)
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


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("numpy_on_cpu", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_torch_preprocess_matches_todays(device, numpy_on_cpu, dtype):
    """One function on any device: numpy's kernels on CPU (bit for bit), torch's elsewhere
    (``numpy_on_cpu=False`` runs exactly the GPU code on CPU): within float tolerance of
    today's numpy path; the rows that overflow are the same."""
    p = Preprocessing()
    images = _hard_batch(seed=3)
    if dtype == np.float16:
        images = np.clip(images, -6e4, 6e4).astype(np.float16)
    with np.errstate(all="ignore"):
        want = ref.preprocess(images.astype(np.float32), p)
    x = torch.from_numpy(images).to(device)
    with torch.inference_mode():
        y = preprocess_tensor(x, p, numpy_on_cpu=numpy_on_cpu)
        finite = finite_rows(y).cpu().numpy()
        got = y.cpu().numpy()
    assert y.device.type == device and y.dtype == torch.float32
    assert got.shape == (len(images), 3, p.crop, p.crop)
    np.testing.assert_array_equal(finite, np.isfinite(want).reshape(len(want), -1).all(1))
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-5, atol=2e-6)
    if device == "cpu" and numpy_on_cpu:
        np.testing.assert_array_equal(got[finite], want[finite])


@pytest.mark.parametrize("device", DEVICES)
def test_torch_median_is_numpys(device):
    """numpy's median (mean of the two middle values of an even count), ties included."""
    rng = np.random.default_rng(0)
    for x in (rng.normal(size=(50, 3, 1392)), np.round(rng.normal(size=(50, 1392)) * 2),
              rng.normal(size=(20, 7)), np.ones((4, 10))):
        x = x.astype(np.float32)
        got = median(torch.from_numpy(x).to(device), numpy_on_cpu=False).cpu().numpy()
        np.testing.assert_array_equal(got, np.median(x, axis=-1))


def test_normalize_and_stretch_match_todays():
    p = Preprocessing()
    images = make_batch(32, seed=5)["image"]
    np.testing.assert_array_equal(normalize(images, p), ref.normalize(images, p))
    x = ref.normalize(images, p)
    np.testing.assert_array_equal(stretch(x, p), ref.stretch(x, p))
    with torch.inference_mode():
        t = stretch(torch.from_numpy(x), p, numpy_on_cpu=False).numpy()
    np.testing.assert_allclose(t, ref.stretch(x, p), rtol=1e-5, atol=1e-6)


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
