"""Training batches where the steps run: on a GPU the rows live in device memory.

Each Ray Train worker holds its share of the normalised training rows (float16, (N, 3, 64, 64))
and draws balanced batches from it every step. On CPU a batch is gathered from the host arrays,
as it always was. On a GPU the whole share is copied to the device once when it fits (48,000
cutouts take 1.2 GB), so a step gathers its batch there, with no host work and no copy; a share
too large for the device stays in pinned host memory, and each batch is gathered on the host and
sent without blocking. Augmentation and the stretch then run on the same device
(:func:`lensscan.data.augment.augment`, :func:`lensscan.data.preprocess.stretch`).
"""

from __future__ import annotations

import numpy as np
import torch

#: Share of the GPU's free memory the training rows may take.
DEVICE_SHARE = 0.4


class DeviceData:
    """Normalised training rows and labels, served as float32 batches on ``device``.

    Parameters
    ----------
    x : ndarray, float16, shape (N, 3, 64, 64)
        Normalised cutouts (sky-noise units).
    y : ndarray, int8, shape (N,)
        Labels.
    device : torch.device
        Where the steps run.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, device: torch.device) -> None:
        self.device = device
        self.on_device = device.type == "cuda" and fits_on_device(x.nbytes, device)
        if self.on_device:
            self.x = torch.from_numpy(x).to(device)
            self.y = torch.from_numpy(y.astype(np.float32)).to(device)
        else:
            self.x, self.y = x, y

    def batch(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows ``idx``: images (B, 3, 64, 64) and labels (B,), float32 on the device."""
        if self.on_device:
            i = torch.from_numpy(np.asarray(idx, np.int64)).to(self.device, non_blocking=True)
            return self.x[i].float(), self.y[i]
        xb = torch.from_numpy(self.x[idx].astype(np.float32))
        yb = torch.from_numpy(self.y[idx].astype(np.float32))
        if self.device.type == "cuda":  # pinned: the copy does not block the host
            xb, yb = xb.pin_memory(), yb.pin_memory()
        return (xb.to(self.device, non_blocking=True), yb.to(self.device, non_blocking=True))


def fits_on_device(nbytes: int, device: torch.device) -> bool:
    """True when ``nbytes`` fit in :data:`DEVICE_SHARE` of the GPU's free memory."""
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes <= DEVICE_SHARE * free


def generator(device: torch.device, seed: int) -> torch.Generator:
    """A random generator on ``device`` (augmentation draws on the device it runs on)."""
    return torch.Generator(device=device).manual_seed(seed)


def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """``ema = decay * ema + (1 - decay) * model`` for float tensors (one fused multi-tensor
    kernel per operation, not one per tensor), copies for the rest (BatchNorm counters). The
    same arithmetic, in the same order, as a loop of ``mul_`` and ``add_``."""
    pairs = list(zip(ema.state_dict().values(), model.state_dict().values(), strict=True))
    floats = [(e, w.detach()) for e, w in pairs if e.is_floating_point()]
    if floats:
        es, ws = (list(t) for t in zip(*floats, strict=True))
        torch._foreach_mul_(es, decay)
        torch._foreach_add_(es, ws, alpha=1 - decay)
    for e, w in pairs:
        if not e.is_floating_point():
            e.copy_(w)


def finite_weights(model: torch.nn.Module) -> bool:
    """True when every floating-point parameter and buffer of ``model`` is finite (weights that
    overflowed in an epoch's last step leave its mean loss finite)."""
    return all(bool(torch.isfinite(t).all()) for t in model.state_dict().values()
               if t.is_floating_point())
