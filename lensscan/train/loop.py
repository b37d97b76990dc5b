"""The per-worker training function run by Ray Train's ``TorchTrainer``.

Each worker pulls its share of the (already normalised, float16) training rows from Ray Data into
memory once (on a GPU, into device memory when they fit: :mod:`lensscan.train.feed`), then trains
with balanced sampling, augmentation and the stretch on its device, and a one-cycle AdamW
schedule (its peak scaled with the batch size when ``lr_batch`` is set); every worker
scores the whole validation set, so all take the same early-stopping decision. Rank 0 writes a
checkpoint every epoch through ``ray.train.report``; a restarted run resumes from the latest one.
"""

from __future__ import annotations

import copy
import math
import sys
import tempfile
import time
from dataclasses import dataclass, field
from functools import cache

import numpy as np
import ray.train
import ray.train.torch
import torch
import torch.nn.functional as F

from lensscan.config import TrainConfig
from lensscan.data.augment import Augment, augment
from lensscan.data.preprocess import Preprocessing, stretch
from lensscan.io.batch import skipped_note
from lensscan.models import create_model
from lensscan.train import checkpoint as ckpt_io
from lensscan.train import warmstart
from lensscan.train.consensus import agree_min, from_rank0
from lensscan.train.feed import DeviceData, ema_update, finite_weights, generator
from lensscan.train.metrics import average_precision, recall_at_fpr, roc_auc

EMA_DECAY = 0.995  # per step (a run of fewer than 2,000 steps uses less: ema_decay)


def ema_decay(total_steps: int) -> float:
    """The weights' EMA decay per step: :data:`EMA_DECAY`, or less for a short run, so that the
    EMA's horizon (1 / (1 - decay) steps) spans at most a tenth of the run; otherwise a short
    fine-tune would end with the EMA still close to the weights it started from."""
    return max(0.0, min(EMA_DECAY, 1.0 - 10.0 / max(1, total_steps)))


def collect(shard, batch_size: int = 1024, prefetch: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Pull a Ray Data shard into memory: normalised images (N, 3, 64, 64) float16, labels (N,);
    ``prefetch`` batches are read ahead while one is copied."""
    xs, ys, statuses = [], [], []
    unlabelled = 0
    for batch in shard.iter_batches(batch_size=batch_size, batch_format="numpy",
                                    prefetch_batches=prefetch):
        ok = batch["status"] == "ok"
        keep = ok & (batch["label"] >= 0)
        unlabelled += int(ok.sum() - keep.sum())
        xs.append(batch["image"][keep].astype(np.float16))
        ys.append(batch["label"][keep].astype(np.int8))
        statuses.append(batch["status"])
    note = skipped_note(np.concatenate(statuses), "lensscan train") if statuses else None
    if note:  # a worker's stderr reaches the driver's terminal through Ray
        print(note, file=sys.stderr)
    if unlabelled:
        print(f"lensscan train: left out {unlabelled} rows without a label", file=sys.stderr)
    if not xs:
        return np.zeros((0, 3, 64, 64), np.float16), np.zeros(0, np.int8)
    return np.concatenate(xs), np.concatenate(ys)


def focal_loss(logits: torch.Tensor, y: torch.Tensor, gamma: float) -> torch.Tensor:
    """Binary focal loss (Lin et al. 2017) on logits; y is float (N,)."""
    ce = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
    p = torch.sigmoid(logits)
    p_t = p * y + (1 - p) * (1 - y)
    return (ce * (1 - p_t) ** gamma).mean()


def weighted_bce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """BCE with the positive class weighted by the batch's negative/positive ratio."""
    pos = y.sum().clamp_min(1.0)
    return F.binary_cross_entropy_with_logits(logits, y, pos_weight=(len(y) - pos) / pos)


@torch.inference_mode()
def predict_logits(model: torch.nn.Module, x: np.ndarray, p: Preprocessing, device,
                   batch: int = 512) -> np.ndarray:
    """Logits of normalised images (N, 3, 64, 64) (stretched and cropped here), float32."""
    model.eval()
    out = []
    for i in range(0, len(x), batch):
        xb = torch.from_numpy(x[i:i + batch].astype(np.float32)).to(device)
        xb = stretch(xb, p, numpy_on_cpu=False).contiguous(memory_format=torch.channels_last)
        out.append(model(xb).float().reshape(-1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


PRECISIONS = ("auto", "bf16", "fp32")


def check_precision(precision: str) -> None:
    """Raise ``ValueError`` unless ``precision`` is one of :data:`PRECISIONS`."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be 'auto', 'bf16' or 'fp32', not {precision!r}")


@cache
def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 natively: a GPU that supports it, or a CPU with
    AVX-512 BF16 or AMX. Elsewhere oneDNN emulates bfloat16, at about half the fp32 speed (a
    ResNet step here: 295 against 605 cutouts/s on a 2-core AVX-512 CPU without BF16)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    try:
        with open("/proc/cpuinfo") as fh:
            flags = fh.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> str:
    """``"auto"`` becomes ``"bf16"`` where :func:`native_bf16`, else ``"fp32"``."""
    check_precision(precision)
    if precision != "auto":
        return precision
    return "bf16" if native_bf16(device) else "fp32"


def autocast(device: torch.device, precision: str):
    """bfloat16 autocast for ``"bf16"`` (about 1.5x the fp32 speed on CPUs with AVX-512 BF16 or
    AMX, and on GPUs), and for ``"auto"`` where :func:`native_bf16`; a no-op otherwise."""
    return torch.autocast(device.type, dtype=torch.bfloat16,
                          enabled=resolve_precision(precision, device) == "bf16")


def _balanced_indices(pos: np.ndarray, neg: np.ndarray, steps: int, batch: int, frac: float,
                      rng: np.random.Generator) -> np.ndarray:
    n_pos = min(batch - 1, max(1, round(batch * frac)))  # a lens and a non-lens at least
    p = rng.choice(pos, size=(steps, n_pos), replace=True)
    q = rng.choice(neg, size=(steps, batch - n_pos), replace=True)
    return np.concatenate([p, q], axis=1)


@dataclass
class _Run:
    """One worker's training state."""

    cfg: TrainConfig
    rank: int
    device: torch.device
    pre: Preprocessing
    aug: Augment
    data: DeviceData
    xv: np.ndarray
    yv: np.ndarray
    pos: np.ndarray
    neg: np.ndarray
    steps: int
    model: torch.nn.Module
    raw: torch.nn.Module
    ema: torch.nn.Module
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    state: dict = field(default_factory=dict)
    best: dict = field(default_factory=dict)


def peak_lr(cfg: TrainConfig, world: int = 1) -> float:
    """The one-cycle peak learning rate: ``lr``, scaled by sqrt(batch / lr_batch) when
    ``lr_batch`` (the batch size ``lr`` was tuned for) is set, where ``batch`` is one step's
    cutouts over the ``world`` workers of DDP (``batch_size`` each): larger GPU batches or more
    workers, same recipe (square-root scaling, as for Adam-type optimisers)."""
    if not cfg.lr_batch:
        return cfg.lr
    return cfg.lr * math.sqrt(cfg.batch_size * world / cfg.lr_batch)


class DataProblemError(Exception):
    """The rows the workers hold cannot train a member (one line for the user)."""


def data_problem(lenses: int, nonlenses: int, val_lenses: int, val_nonlenses: int,
                 world: int, val: str | None = None) -> str | None:
    """Why the rows cannot train a member (None when they can): training rows of both classes
    on every worker, validation rows of both classes (the early stopping and the weights kept
    rest on the validation AUC)."""
    where = " on every worker (give fewer --workers)" if world > 1 else ""
    if not lenses or not nonlenses:
        return (f"the training data needs both lenses and non-lenses{where}: "
                f"{lenses} lenses, {nonlenses} non-lenses"
                f"{' on the worker with the fewest' if world > 1 else ''}")
    if not val_lenses or not val_nonlenses:
        if val:
            return (f"the validation data {val} needs both lenses and non-lenses: {val_lenses} "
                    f"lenses, {val_nonlenses} non-lenses")
        return (f"the validation data needs both lenses and non-lenses: {val_lenses} lenses, "
                f"{val_nonlenses} non-lenses (without --val it is the tenth of the rows whose "
                "object_id hashes to it: give --val, or more labelled rows)")
    return None


def _setup(cfg: TrainConfig, rank: int, world: int) -> _Run:
    """Data in memory (on the GPU when it fits), model, EMA copy, optimizer and schedule."""
    device = ray.train.torch.get_device()
    x, y = collect(ray.train.get_dataset_shard("train"))
    xv, yv = collect(ray.train.get_dataset_shard("val"))
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    # every worker takes the same decisions, from the least counts over the workers: the
    # data's problem, and the steps per epoch (a worker with a step more would wait forever
    # in DDP's gradient exchange for the others)
    least = agree_min([len(pos), len(neg), int((yv == 1).sum()), int((yv == 0).sum()), len(y)],
                      device)
    problem = data_problem(*least[:4], world, cfg.val)
    if problem:
        raise DataProblemError(problem)
    steps = cfg.steps_per_epoch or max(1, math.ceil(least[4] / cfg.batch_size))
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.arch, **cfg.arch_kwargs)
    if cfg.init:
        model.load_state_dict(warmstart.initial_weights(cfg))
    # channels-last: oneDNN's (CPU) and cuDNN's fast convolution layout, ~3x faster here on CPU
    model = model.to(memory_format=torch.channels_last)
    ema = copy.deepcopy(model).to(device)
    model = ray.train.torch.prepare_model(model)
    raw = model.module if hasattr(model, "module") else model
    lr = peak_lr(cfg, world)
    fused = {"fused": True} if device.type == "cuda" else {}  # one kernel per step on a GPU
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=cfg.weight_decay, **fused)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=cfg.epochs * steps,
                                                pct_start=0.15)
    run = _Run(cfg, rank, device, Preprocessing.from_dict(cfg.preprocessing),
               Augment.from_dict(cfg.augment), DeviceData(x, y, device), xv, yv, pos, neg, steps,
               model, raw, ema, opt, sched,
               state={"epoch": 0, "best_auc": -1.0, "best_epoch": -1, "history": [],
                      "steps": steps})
    run.best = {k: v.detach().clone() for k, v in ema.state_dict().items()}
    return run


def _resume(run: _Run) -> None:
    """Continue from the latest checkpoint, when the run has one."""
    resume = ray.train.get_checkpoint()
    if not resume:
        return
    with resume.as_directory() as d:
        if not ckpt_io.has_weights(d):
            return  # an earlier start's data could not train at once, or it diverged: afresh
        m_state, run.best, o_state, run.state, s_state = ckpt_io.load(d)
    run.raw.load_state_dict({k: v for k, v in m_state.items() if not k.startswith("ema.")})
    run.ema.load_state_dict({k[4:]: v for k, v in m_state.items() if k.startswith("ema.")})
    run.opt.load_state_dict(o_state)
    run.sched.load_state_dict(s_state)
    # the schedule's length was fixed by the first start: keep its steps per epoch (a rerun
    # with other --workers splits the rows otherwise)
    run.steps = int(run.state.get("steps", run.steps))
    if run.rank == 0:  # every worker resumes; one says so
        _say(f"resuming {run.cfg.member_name} after epoch {run.state['epoch']}")


def _train_epoch(run: _Run, epoch: int) -> float:
    """One epoch of balanced, augmented steps on the run's device; returns the mean loss.

    Nothing waits for the device within the epoch: batches are gathered, augmented and
    stretched where the model runs, and the losses are read once at the end."""
    cfg = run.cfg
    run.model.train()
    rng = np.random.default_rng([cfg.seed, run.rank, epoch])
    gen = generator(run.device, int(rng.integers(2**62)))
    idx = _balanced_indices(run.pos, run.neg, run.steps, cfg.batch_size, cfg.lens_fraction, rng)
    decay = ema_decay(cfg.epochs * run.steps)
    losses = []
    for step in range(run.steps):
        xb, yb = run.data.batch(idx[step])
        # exactly the CPU-only arithmetic before on CPU (torch's own asinh kernel)
        xb = stretch(augment(xb, run.aug, gen), run.pre, numpy_on_cpu=False)
        xb = xb.contiguous(memory_format=torch.channels_last)  # (B, 3, crop, crop)
        with autocast(run.device, cfg.precision):
            logits = run.model(xb).reshape(-1).float()
        loss = focal_loss(logits, yb, cfg.focal_gamma) if cfg.loss == "focal" \
            else weighted_bce(logits, yb)
        run.opt.zero_grad(set_to_none=True)
        loss.backward()
        run.opt.step()
        run.sched.step()
        with torch.no_grad():
            ema_update(run.ema, run.raw, decay)
        losses.append(loss.detach())
    return float(np.mean([float(v) for v in losses]))


def _validate(run: _Run, epoch: int, loss: float, t0: float) -> dict:
    """Validation metrics of the EMA weights after ``epoch``; keeps the best weights."""
    yv = run.yv
    sv = predict_logits(run.ema, run.xv, run.pre, run.device)
    two = len(np.unique(yv)) == 2 and bool(np.isfinite(sv).all())  # NaN scores: no best epoch
    auc = roc_auc(yv, sv) if two else float("nan")
    metrics = {
        "epoch": epoch + 1,
        "train_loss": loss,
        "val_auc": auc,
        "val_ap": average_precision(yv, sv) if two else float("nan"),
        "val_recall_at_fpr_1e-3": recall_at_fpr(yv, sv, 1e-3) if len(yv) else float("nan"),
        "lr": float(run.sched.get_last_lr()[0]),
        "seconds": time.time() - t0,
        "train_rows": int(len(run.data.y)),
    }
    if auc > run.state["best_auc"]:
        run.state["best_auc"], run.state["best_epoch"] = auc, epoch
        run.best = {k: v.detach().clone() for k, v in run.ema.state_dict().items()}
    run.state["epoch"] = epoch + 1
    run.state["history"].append(metrics)
    return metrics


def _report(run: _Run, metrics: dict) -> None:
    """Rank 0 writes a checkpoint with the metrics; the others report the metrics."""
    if run.rank != 0:
        ray.train.report(metrics)
        return
    cfg = run.cfg
    _say(f"{cfg.member_name} epoch {metrics['epoch']}/{cfg.epochs} "
         f"loss {metrics['train_loss']:.4f} val_auc {metrics['val_auc']:.4f} "
         f"({metrics['seconds']:.0f}s)")
    with tempfile.TemporaryDirectory() as d:
        m_state = dict(run.raw.state_dict())
        m_state.update({f"ema.{k}": v for k, v in run.ema.state_dict().items()})
        ckpt_io.save(d, m_state, run.best, run.opt.state_dict(), run.state,
                     run.sched.state_dict())
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))


def train_loop_per_worker(config: dict) -> None:
    """Ray Train entry point; ``config`` is a :class:`TrainConfig` as a dict."""
    cfg = TrainConfig.from_dict(config)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(cfg.torch_threads or max(1, math.ceil(cfg.cpus_per_worker)))
    try:
        run = _setup(cfg, rank, world)
    except DataProblemError as exc:  # a report, not a failure (Ray would retry it)
        ckpt_io.report_problem(rank, str(exc))
        return
    _resume(run)
    for epoch in range(run.state["epoch"], cfg.epochs):
        # rank 0's decision, on every worker (see from_rank0)
        stop = should_stop(epoch, run.state["best_epoch"], cfg.epochs, cfg.patience)
        if from_rank0([int(stop)], run.device)[0]:
            break
        t0 = time.time()
        loss = _train_epoch(run, epoch)
        finite = math.isfinite(loss) and finite_weights(run.ema)
        if not agree_min([int(finite)], run.device)[0]:  # any worker's: no NaN model saved
            ckpt_io.report_problem(rank, f"the training loss became {loss} in epoch "
                                   f"{epoch + 1}: the weights diverged; lower the learning rate "
                                   f"({cfg.lr:g}) or the weight decay ({cfg.weight_decay:g})",
                                   diverged=True)
            return
        _report(run, _validate(run, epoch, loss, t0))



def should_stop(epoch: int, best_epoch: int, epochs: int, patience: int) -> bool:
    """Early stopping before 0-based ``epoch``: more than ``patience`` epochs without a better
    validation AUC, counted from the schedule's second half at the earliest. Around the one-cycle
    peak the learning rate is high and validation AUC dips, most of all when fine-tuning good
    weights; counting from there stopped a member before its learning rate had come down."""
    if best_epoch < 0:
        return False
    return epoch - max(best_epoch, epochs // 2 - 1) > patience


def _say(msg: str) -> None:
    """One progress line. Not ``print``: Ray Train patches it in its workers to log *and* print
    when stdout is redirected (as Ray's workers' is), which showed every line twice."""
    sys.stdout.write(f"[lensscan] {msg}\n")
    sys.stdout.flush()
