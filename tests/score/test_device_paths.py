"""The accelerator code paths, run on CPU torch (the device is a parameter; CUDA joins the
parametrisation where it exists): preprocessing, scoring and augmentation give what today's
numpy path gives (``reference_preprocess``, frozen), and the actor takes the GPU Ray gives it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support import make_batch
from support import reference_preprocess as ref

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
from lensscan.data.stream import ReadUnits, plan, units_to_items
from lensscan.io.batch import NON_FINITE_INPUT, row_status
from lensscan.io.parquet import write_parquet
from lensscan.io.shards import read_unit, split_first
from lensscan.score.pipeline import score_survey
from lensscan.score.predictor import EnsemblePredictor, actor_device, amp_dtype
from lensscan.score.resources import half_pixels

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
    import pyarrow.dataset as pads

    src = tmp_path / "in"
    src.mkdir()
    b32 = make_batch(150, seed=41, start_id=0)
    write_parquet(str(src / "a.parquet"), b32, row_group_size=50)
    b16 = make_batch(70, seed=42, start_id=1000)
    b16["image"] = (b16["image"] * 40 + 100).astype(np.float16)  # a survey stored as float16
    _write_float16(str(src / "h.parquet"), b16, row_group_size=35)
    (tmp_path / "h").mkdir()
    _write_float16(str(tmp_path / "h" / "h.parquet"), b16, row_group_size=35)
    loaded = modelcard.load_model(tiny_model)
    p = Preprocessing.from_dict(loaded.preprocessing)
    # float32 and float16 shards (read as float32), then float16 alone (travels as float16)
    for folder, batches in ((src, (b32, b16)), (tmp_path / "h", (b16,))):
        out = str(folder) + "-out"
        m = score_survey(ScoreConfig(input=str(folder), output=out, model=tiny_model,
                                     rows_per_unit=50, batch_size=64, progress=False))
        assert m["resources"]["row_bytes"] == 12288 * (2 if len(batches) == 1 else 4)
        df = pads.dataset(out + "/scores").to_table().to_pandas().set_index("object_id")
        for b in batches:
            x = torch.from_numpy(ref.preprocess(b["image"].astype(np.float32), p))
            with torch.inference_mode():
                s, mem = loaded.module(x)
            got = df.loc[b["object_id"]]
            assert (got["status"] == "ok").all()
            np.testing.assert_allclose(got["score"].to_numpy(), s.numpy(), rtol=1e-4,
                                       atol=1e-6)
            np.testing.assert_allclose(got["score_m0"].to_numpy(), mem[:, 0].numpy(),
                                       rtol=1e-4, atol=1e-6)


def _write_float16(url: str, b: dict, row_group_size: int = 1024) -> None:
    """A shard whose image column is a plain FixedSizeList<float16>, as other writers make."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    image = pa.FixedSizeListArray.from_arrays(
        pa.array(b["image"].astype(np.float16).reshape(-1)), 12288)
    pq.write_table(pa.table({"object_id": b["object_id"], "ra": b["ra"], "dec": b["dec"],
                             "image": image}), url, row_group_size=row_group_size)


def test_actor_takes_the_gpu_ray_gives_it():
    """Inside Ray: the GPU Ray assigned (the only visible one, cuda:0) when torch has CUDA,
    never one Ray did not give; outside Ray: CUDA when there is one."""
    cuda0, cpu = torch.device("cuda:0"), torch.device("cpu")
    assert actor_device(["0"], cuda=True) == cuda0
    assert actor_device(["0"], cuda=False) == cpu  # a fake GPU (ray start --num-gpus=1)
    assert actor_device([], cuda=True) == cpu
    assert actor_device(None, cuda=True) == cuda0
    assert actor_device(None, cuda=False) == cpu
    assert amp_dtype("auto", cuda0) == torch.float16 and amp_dtype("auto", cpu) is None
    assert amp_dtype("bf16", cpu) == torch.bfloat16
    with pytest.raises(ValueError, match="precision"):
        amp_dtype("fp8", cpu)


@pytest.mark.parametrize("device", DEVICES)
def test_predictor_preprocesses_and_scores_on_its_device(tiny_model, device):
    """The actor's own path (raw cutouts in, on its device): today's scores for the ok rows,
    NaN for quarantined ones, the row that overflows the preprocessing quarantined."""
    images = _hard_batch(40, seed=7)
    ids = np.arange(40)
    batch = {"object_id": ids, "ra": np.zeros(40), "dec": np.zeros(40), "row": ids,
             "unit": np.zeros(40, np.int32),
             "status": row_status(images, ids), "image": images}
    loaded = modelcard.load_model(tiny_model)
    pred = EnsemblePredictor(tiny_model, preprocessing=loaded.preprocessing, device=device,
                             precision="fp32")
    out = pred(batch)
    assert list(out["status"][[1, 2]]) == ["non_finite_pixels: 1 NaN/inf values"] * 2
    assert out["status"][4] == NON_FINITE_INPUT
    ok = out["status"] == "ok"
    assert ok.sum() == 37 and np.isnan(out["score"][~ok]).all()
    with np.errstate(all="ignore"):
        x = torch.from_numpy(ref.preprocess(images[ok], Preprocessing.from_dict(
            loaded.preprocessing)))
    with torch.inference_mode():
        s, m = loaded.module(x)
    np.testing.assert_allclose(out["score"][ok], s.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(out["score_m1"][ok], m[:, 1].numpy(), rtol=1e-4, atol=1e-6)
    assert set(out["device"]) == {str(pred.device)}
    assert pred.device.type == device


def test_float16_shards_are_read_as_float16(tmp_path):
    """The raw read stage keeps a float16 survey's pixels float16 (half the bytes to the
    actors); a survey that mixes float16 and float32 shards travels as float32."""
    b = make_batch(30, seed=8)
    _write_float16(str(tmp_path / "h.parquet"), b)
    write_parquet(str(tmp_path / "f.parquet"), b)
    units, _ = plan(str(tmp_path))
    assert sorted(u.dtype for u in units) == ["float16", "float32"]
    half = [u for u in units if u.dtype == "float16"]
    assert half_pixels(half) and not half_pixels(units)
    items = {k: np.array([v]) for k, v in units_to_items(half)[0].items()}
    (block,) = ReadUnits(Preprocessing().to_dict(), "raw", half=True)(items)
    assert block["image"].dtype == np.float16 and block["image"].shape == (30, 3, 64, 64)
    np.testing.assert_array_equal(block["image"], b["image"].astype(np.float16))
    (block,) = ReadUnits(Preprocessing().to_dict(), "raw")(items)
    assert block["image"].dtype == np.float32


def test_float16_plain_pages_are_copied_as_they_are(tmp_path):
    """A float16 image column written PLAIN without a dictionary (as lensscan's bench writes it)
    is copied out of its pages, like float32; the same rows and statuses as pyarrow's decoding,
    NaN, infinity and all-zero rows found on the half floats' bits."""
    import pyarrow.parquet as pq

    from lensscan.bench.data import write_survey
    from lensscan.io import plainpages
    from lensscan.io.parquet import decode_images, read_parquet

    write_survey(str(tmp_path), 300, half=True)
    (url,) = [str(p) for p in tmp_path.iterdir()]
    pf = pq.ParquetFile(url)
    assert plainpages.plan(pf, [0]) is not None
    fast = read_parquet(url, half=True)
    slow, _, _ = decode_images(url, pf.read(columns=["image"]).column("image"), half=True)
    assert fast["image"].dtype == np.float16
    np.testing.assert_array_equal(fast["image"], slow)
    np.testing.assert_array_equal(read_parquet(url)["image"], slow.astype(np.float32))
    images = slow[:6].copy()
    images[1, 0, 0, 0], images[2, 1, 2, 3], images[3], images[4] = np.nan, -np.inf, 0.0, -0.0
    assert list(row_status(images, np.arange(6))) == list(
        row_status(images.astype(np.float32), np.arange(6)))


def test_first_unit_is_cut_small_and_read_in_its_row_group(tmp_path):
    b = make_batch(300, seed=9)
    write_parquet(str(tmp_path / "a.parquet"), b, row_group_size=200)
    units = split_first(plan(str(tmp_path), rows_per_unit=300)[0], 64)
    # one unit of both row groups, cut in five: parts of row groups read whole and sliced
    assert [(u.start, u.stop) for u in units] == [(0, 64), (64, 128), (128, 192), (192, 256),
                                                 (256, 300)]
    got = [read_unit(u) for u in units]
    np.testing.assert_array_equal(np.concatenate([g["image"] for g in got]), b["image"])
    assert [list(g["row"][[0, -1]]) for g in got] == [[0, 63], [64, 127], [128, 191],
                                                     [192, 255], [256, 299]]


@pytest.mark.parametrize("device", DEVICES)
def test_training_batches_ema_and_learning_rate(device):
    """A training step's inputs on its device are the rows the CPU loop gathered; the fused EMA
    update is the per-tensor one; the peak learning rate scales with the batch only when asked."""
    import copy

    from lensscan.config import TrainConfig
    from lensscan.models import create_model
    from lensscan.train.feed import DeviceData, ema_update
    from lensscan.train.loop import peak_lr

    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 3, 64, 64)).astype(np.float16)
    y = (rng.random(50) < 0.3).astype(np.int8)
    data = DeviceData(x, y, torch.device(device))
    assert data.on_device == (device == "cuda")
    idx = np.array([3, 1, 4, 1, 5, 9, 2, 6])
    xb, yb = data.batch(idx)
    assert xb.device.type == device and xb.dtype == torch.float32
    assert torch.equal(xb.cpu(), torch.from_numpy(x[idx].astype(np.float32)))
    assert torch.equal(yb.cpu(), torch.from_numpy(y[idx].astype(np.float32)))

    model = create_model("baseline_cnn", widths=[4, 8, 8])
    ema, loop = copy.deepcopy(model), copy.deepcopy(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
        for b in model.buffers():
            if not b.is_floating_point():  # BatchNorm's counters: copied, not averaged
                b += 3
        ema_update(ema, model, 0.995)
        for e, w in zip(loop.state_dict().values(), model.state_dict().values(), strict=True):
            if e.is_floating_point():
                e.mul_(0.995).add_(w.detach(), alpha=1 - 0.995)
            else:
                e.copy_(w)
    for (k, a), b in zip(ema.state_dict().items(), loop.state_dict().values(), strict=True):
        assert torch.equal(a, b), k

    cfg = TrainConfig(data="d", out="o", lr=1e-3, batch_size=512)
    assert peak_lr(cfg) == 1e-3
    cfg.lr_batch = 128
    assert peak_lr(cfg) == pytest.approx(2e-3)
    cfg.batch_size = 128  # four DDP workers of 128: a step of 512, as one worker of 512
    assert peak_lr(cfg, world=4) == pytest.approx(2e-3)
