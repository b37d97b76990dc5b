"""The per-worker training function run by Ray Train's ``TorchTrainer``.

Each worker pulls its share of the (already normalised) training rows from Ray Data into memory
once, then trains with balanced sampling, augmentation and a one-cycle AdamW schedule; every worker
scores the whole validation set, so all take the same early-stopping decision. Rank 0 writes a
checkpoint every epoch through ``ray.train.report``; a restarted run resumes from the latest one.
"""

from __future__ import annotations

import copy
import math
import sys
import tempfile
import time
from functools import cache

import numpy as np
import ray.train
import ray.train.torch
import torch
import torch.nn.functional as F

from lensscan import modelcard
from lensscan.config import TrainConfig
from lensscan.data.augment import Augment, augment
from lensscan.data.preprocess import Preprocessing, stretch
from lensscan.errors import ModelError
from lensscan.models import create_model
from lensscan.train import checkpoint as ckpt_io
from lensscan.train.metrics import average_precision, recall_at_fpr, roc_auc

EMA_DECAY = 0.995  # per step (a run of fewer than 2,000 steps uses less: ema_decay)


def ema_decay(total_steps: int) -> float:
    """The weights' EMA decay per step: :data:`EMA_DECAY`, or less for a short run, so that the
    EMA's horizon (1 / (1 - decay) steps) spans at most a tenth of the run; otherwise a short
    fine-tune would end with the EMA still close to the weights it started from."""
    return max(0.0, min(EMA_DECAY, 1.0 - 10.0 / max(1, total_steps)))


def collect(shard, batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Pull a Ray Data shard into memory: normalised images (N, 3, 64, 64) float16, labels (N,)."""
    xs, ys = [], []
    for batch in shard.iter_batches(batch_size=batch_size, batch_format="numpy"):
        keep = (batch["status"] == "ok") & (batch["label"] >= 0)
        xs.append(batch["image"][keep].astype(np.float16))
        ys.append(batch["label"][keep].astype(np.int8))
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
        xb = stretch(xb, p).contiguous(memory_format=torch.channels_last)
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
    n_pos = max(1, round(batch * frac))
    p = rng.choice(pos, size=(steps, n_pos), replace=True)
    q = rng.choice(neg, size=(steps, batch - n_pos), replace=True)
    return np.concatenate([p, q], axis=1)


def initial_weights(cfg: TrainConfig) -> dict[str, torch.Tensor]:
    """Weights of the trained member ``cfg.init`` (checked like any model load), which must have
    the same architecture as ``cfg``; the run starts from them with a fresh schedule."""
    member, card = modelcard.load_member(cfg.init)
    if card["arch"] != cfg.arch or card.get("arch_kwargs", {}) != cfg.arch_kwargs:
        raise ModelError(f"{cfg.init}: cannot start {cfg.member_name} from it: it is a "
                         f"{card['arch']!r} {card.get('arch_kwargs', {})}, the run trains "
                         f"{cfg.arch!r} {cfg.arch_kwargs}")
    if card.get("preprocessing") != cfg.preprocessing:
        raise ModelError(f"{cfg.init}: cannot start {cfg.member_name} from it: it was trained "
                         f"with preprocessing {card.get('preprocessing')}, the run uses "
                         f"{cfg.preprocessing}")
    return member.state_dict()


def train_loop_per_worker(config: dict) -> None:
    """Ray Train entry point; ``config`` is a :class:`TrainConfig` as a dict."""
    cfg = TrainConfig.from_dict(config)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    threads = cfg.torch_threads or max(1, math.ceil(cfg.cpus_per_worker))
    torch.set_num_threads(threads)
    device = ray.train.torch.get_device()
    pre = Preprocessing.from_dict(cfg.preprocessing)
    aug = Augment(**cfg.augment)

    x, y = collect(ray.train.get_dataset_shard("train"))
    xv, yv = collect(ray.train.get_dataset_shard("val"))
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError(f"worker {rank}: training data needs both lenses and non-lenses "
                         f"(got {len(pos)} lenses, {len(neg)} non-lenses)")
    steps = cfg.steps_per_epoch or max(1, math.ceil(len(y) * world / (cfg.batch_size * world)))

    torch.manual_seed(cfg.seed)
    model = create_model(cfg.arch, **cfg.arch_kwargs)
    if cfg.init:
        model.load_state_dict(initial_weights(cfg))
    # channels-last: oneDNN's (CPU) and cuDNN's fast convolution layout, ~3x faster here on CPU
    model = model.to(memory_format=torch.channels_last)
    ema = copy.deepcopy(model).to(device)
    model = ray.train.torch.prepare_model(model)
    raw = model.module if hasattr(model, "module") else model
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps,
                                                pct_start=0.15)
    decay = ema_decay(cfg.epochs * steps)
    state = {"epoch": 0, "best_auc": -1.0, "best_epoch": -1, "history": []}
    best = {k: v.detach().clone() for k, v in ema.state_dict().items()}

    resume = ray.train.get_checkpoint()
    if resume:
        with resume.as_directory() as d:
            m_state, best, o_state, state, s_state = ckpt_io.load(d)
        raw.load_state_dict({k: v for k, v in m_state.items() if not k.startswith("ema.")})
        ema.load_state_dict({k[4:]: v for k, v in m_state.items() if k.startswith("ema.")})
        opt.load_state_dict(o_state)
        sched.load_state_dict(s_state)
        if rank == 0:  # every worker resumes; one says so
            _say(f"resuming {cfg.member_name} after epoch {state['epoch']}")

    for epoch in range(state["epoch"], cfg.epochs):
        if should_stop(epoch, state["best_epoch"], cfg.epochs, cfg.patience):
            break
        t0 = time.time()
        model.train()
        rng = np.random.default_rng([cfg.seed, rank, epoch])
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        idx = _balanced_indices(pos, neg, steps, cfg.batch_size, cfg.lens_fraction, rng)
        losses = []
        for step in range(steps):
            xb = torch.from_numpy(x[idx[step]].astype(np.float32))
            yb = torch.from_numpy(y[idx[step]].astype(np.float32)).to(device)
            xb = stretch(augment(xb, aug, gen), pre).to(device)
            xb = xb.contiguous(memory_format=torch.channels_last)  # (B, 3, crop, crop)
            with autocast(device, cfg.precision):
                logits = model(xb).reshape(-1).float()
            loss = focal_loss(logits, yb, cfg.focal_gamma) if cfg.loss == "focal" \
                else weighted_bce(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():
                for e, w in zip(ema.state_dict().values(), raw.state_dict().values(), strict=True):
                    if e.is_floating_point():
                        e.mul_(decay).add_(w.detach(), alpha=1 - decay)
                    else:
                        e.copy_(w)
            losses.append(float(loss.detach()))
        sv = predict_logits(ema, xv, pre, device)
        auc = roc_auc(yv, sv) if len(np.unique(yv)) == 2 else float("nan")
        metrics = {
            "epoch": epoch + 1,
            "train_loss": float(np.mean(losses)),
            "val_auc": auc,
            "val_ap": average_precision(yv, sv) if len(np.unique(yv)) == 2 else float("nan"),
            "val_recall_at_fpr_1e-3": recall_at_fpr(yv, sv, 1e-3) if len(yv) else float("nan"),
            "lr": float(sched.get_last_lr()[0]),
            "seconds": time.time() - t0,
            "train_rows": int(len(y)),
        }
        if auc > state["best_auc"]:
            state["best_auc"], state["best_epoch"] = auc, epoch
            best = {k: v.detach().clone() for k, v in ema.state_dict().items()}
        state["epoch"] = epoch + 1
        state["history"].append(metrics)
        if rank == 0:
            _say(f"{cfg.member_name} epoch {epoch + 1}/{cfg.epochs} "
                 f"loss {metrics['train_loss']:.4f} val_auc {auc:.4f} ({metrics['seconds']:.0f}s)")
            with tempfile.TemporaryDirectory() as d:
                m_state = dict(raw.state_dict())
                m_state.update({f"ema.{k}": v for k, v in ema.state_dict().items()})
                ckpt_io.save(d, m_state, best, opt.state_dict(), state, sched.state_dict())
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))
        else:
            ray.train.report(metrics)


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
