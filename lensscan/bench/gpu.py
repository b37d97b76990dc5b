"""The bench's GPU figures (run when CUDA is present): the model alone, eager and compiled, the
actor's own path from raw cutouts, and training against a plain torch loop."""

from __future__ import annotations

import os
import shutil
import time

import numpy as np
import torch

from lensscan.bench.data import synthetic_batch
from lensscan.config import DEFAULT_CROP
from lensscan.data.preprocess import Preprocessing, preprocess_tensor

BATCH = 8192  # cutouts per forward pass on the GPU
TRAIN_BATCH, TRAIN_STEPS = 512, 120  # training comparison: batch and steps per epoch


def _rate(fn, items: int, seconds: float = 1.0) -> float:
    """Calls of ``fn`` (``items`` cutouts each) per second, after a warm-up call, synced."""
    fn()
    torch.cuda.synchronize()
    calls, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        calls += 1
    torch.cuda.synchronize()
    return calls * items / (time.perf_counter() - t0)


def model_rates(loaded) -> dict:
    """(a) The ensemble alone on the GPU, fp16 autocast and channels-last, batch
    :data:`BATCH`: eager, and ``torch.compile``d (with the compile time)."""
    import copy

    dev = torch.device("cuda")
    pre = Preprocessing.from_dict(loaded.preprocessing)
    raw = torch.from_numpy(synthetic_batch(BATCH, 0, 3)["image"]).to(dev)
    x = preprocess_tensor(raw, pre).contiguous(memory_format=torch.channels_last)
    model = copy.deepcopy(loaded.module).eval().to(dev).to(memory_format=torch.channels_last)
    res = {"batch": BATCH}
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16):
        res["model_eager"] = _rate(lambda: model(x), BATCH)
        res["preprocess_on_gpu"] = _rate(lambda: preprocess_tensor(raw, pre), BATCH)
        t0 = time.perf_counter()
        compiled = torch.compile(model, dynamic=False)
        compiled(x)
        torch.cuda.synchronize()
        res["compile_s"] = time.perf_counter() - t0
        res["model_compiled"] = _rate(lambda: compiled(x), BATCH)
    res["peak_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return res


def actor_rates(model_url: str, preprocessing: dict) -> dict:
    """The scoring actor's own path, raw numpy cutouts in (float32 and float16), pinned chunks,
    copies overlapped with compute, preprocessing and the model on the GPU, scores out."""
    from lensscan.score.predictor import EnsemblePredictor

    pred = EnsemblePredictor(model_url, preprocessing=preprocessing, device="cuda")
    raw = synthetic_batch(BATCH, 0, 4)["image"]
    half = raw.astype(np.float16)
    return {"actor_path_fp32_in": _rate(lambda: pred.scores(raw), BATCH),
            "actor_path_fp16_in": _rate(lambda: pred.scores(half), BATCH)}


def train_rates(workdir: str, n: int = 24000) -> dict:
    """Training cutouts/s of ``lensscan train --gpu`` (one worker, batch :data:`TRAIN_BATCH`,
    ``lr_batch`` 128) in its second epoch (validation of 2,000 rows included), against a plain
    torch loop of the same model, batch and precision on tensors already on the GPU."""
    from lensscan.config import TrainConfig
    from lensscan.io.parquet import write_parquet
    from lensscan.train.trainer import train

    data, val, out = (os.path.join(workdir, k) for k in ("train", "val", "model"))
    for folder, rows, seed in ((data, n, 10), (val, 2000, 11)):
        for k, s in enumerate(range(0, rows, 4000)):
            b = synthetic_batch(min(4000, rows - s), s, seed + k)
            b["label"] = (np.random.default_rng(seed + k).random(len(b["ra"])) < 0.3).astype(
                np.int8)
            write_parquet(f"{folder}/p{k:03d}.parquet", b)
    cfg = TrainConfig(data=data, val=val, out=out, epochs=2, steps_per_epoch=TRAIN_STEPS,
                      batch_size=TRAIN_BATCH, lr_batch=128, gpu=True, workers=1, patience=10)
    card = train(cfg, progress=False)
    last = card.training["history"][-1]
    res = {"train_cutouts_s": TRAIN_STEPS * TRAIN_BATCH / last["seconds"],
           "train_batch": TRAIN_BATCH, "plain_loop_cutouts_s": plain_train_rate(cfg.arch)}
    res["train_over_plain_loop"] = res["train_cutouts_s"] / res["plain_loop_cutouts_s"]
    for folder in (data, val, out):
        shutil.rmtree(folder, ignore_errors=True)
    return res


def plain_train_rate(arch: str) -> float:
    """A plain torch training loop on random tensors already on the GPU: the ceiling."""
    from lensscan.models import create_model
    from lensscan.train.loop import focal_loss

    dev = torch.device("cuda")
    model = create_model(arch).to(dev).to(memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    x = torch.randn(TRAIN_BATCH, 3, DEFAULT_CROP, DEFAULT_CROP, device=dev).contiguous(
        memory_format=torch.channels_last)
    y = (torch.rand(TRAIN_BATCH, device=dev) < 0.3).float()

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(x).reshape(-1).float()
        loss = focal_loss(logits, y, 2.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return _rate(step, TRAIN_BATCH, seconds=2.0)


def gpu_figures(loaded, model_url: str, workdir: str) -> dict:
    """Every GPU figure, each in its own try: one that fails is reported, the rest still run."""
    res: dict = {"device": torch.cuda.get_device_name()}
    for name, fn in (("model", lambda: model_rates(loaded)),
                     ("actor", lambda: actor_rates(model_url, loaded.preprocessing)),
                     ("train", lambda: train_rates(workdir))):
        try:
            res.update(fn())
        except Exception as exc:  # noqa: BLE001  (a figure missing is reported, not fatal)
            res[f"{name}_error"] = repr(exc)[:500]
    return res
