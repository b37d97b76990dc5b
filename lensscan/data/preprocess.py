"""The one preprocessing used by training and scoring; its parameters live in the model card.

Linear survey fluxes are turned into model inputs in two steps:

1. :func:`normalize_tensor`: subtract each band's sky (median of the border frame) and divide all
   three bands by one noise estimate (robust sigma of the r-band border), so colours are kept and
   images from surveys of any depth land in units of the sky noise.
2. :func:`stretch`: a centre crop and an asinh stretch, linear below ``softening`` sigma and
   logarithmic above, which keeps faint arcs and bright cores in range.

Training inserts its augmentations (noise and PSF jitter, D4) between the two steps; scoring runs
both at once, :func:`preprocess_tensor`, in the scoring actor on its device (GPU or CPU), batched.

There is one implementation, in torch, for tensors on any device; the numpy entry points
(:func:`preprocess`, :func:`normalize`) wrap it without copying. On CPU tensors two primitives use
numpy's kernels on the same memory, because they are the fastest there (numpy's SIMD ``arcsinh``
is about 10x torch's scalar one on this project's 2-core AVX-512 machine; its introselect median
about 2x torch's); elsewhere they are torch's. Both compute the same values: medians exactly
(numpy's convention, the mean of the two middle values of an even count), the stretch within an
ulp or two (tested against the numpy implementation that served before, CPU and GPU).
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import numpy as np
import torch

from lensscan.config import DEFAULT_CROP


@dataclass(frozen=True)
class Preprocessing:
    """Parameters of :func:`preprocess`, stored in every model card."""

    border: int = 6  # width in pixels of the frame used for sky and noise estimates
    noise_band: int = 1  # band whose border sets the common noise scale (1 = r)
    softening: float = 3.0  # asinh softening in units of the sky noise
    crop: int = DEFAULT_CROP  # side of the centre crop fed to the model, pixels
    min_noise: float = 1e-6  # floor of the noise estimate (flux units)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Preprocessing:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def _cpu_kernels(x: torch.Tensor, numpy_on_cpu: bool) -> bool:
    return numpy_on_cpu and x.device.type == "cpu" and x.dtype == torch.float32 \
        and not x.requires_grad


def median(x: torch.Tensor, numpy_on_cpu: bool = True) -> torch.Tensor:
    """numpy's median over the last axis (for an even count the mean of the two middle values;
    torch's own ``median`` returns the lower one): (..., K) -> (...)."""
    if _cpu_kernels(x, numpy_on_cpu):
        # two middle values near float32's limit overflow in their mean, as torch's kernels do
        # silently: the row's output is then not finite and :func:`finite_rows` finds it
        with np.errstate(over="ignore", invalid="ignore"):
            return torch.from_numpy(np.median(x.numpy(), axis=-1))
    k = x.shape[-1]
    lo = x.median(dim=-1, keepdim=True).values  # the (k+1)//2-th smallest
    if k % 2:
        return lo[..., 0]
    # the k/2+1-th smallest: ``lo`` again when it occurs more than k/2 times, else the least
    # value above it (one masked min instead of a second selection)
    above = torch.where(x > lo, x, torch.inf).amin(dim=-1, keepdim=True)
    up = torch.where((x <= lo).sum(dim=-1, keepdim=True) > k // 2, lo, above)
    return (0.5 * (lo + up))[..., 0]


def asinh_(x: torch.Tensor, numpy_on_cpu: bool = True) -> torch.Tensor:
    """``asinh`` in place (numpy's vectorised kernel on CPU float32 tensors)."""
    if _cpu_kernels(x, numpy_on_cpu):  # any strides: numpy writes through the view
        np.arcsinh(x.numpy(), out=x.numpy())
        return x
    return x.asinh_()


def border_frame(x: torch.Tensor, width: int) -> torch.Tensor:
    """Border-frame pixels of every band: (N, C, H, W) -> (N, C, K)."""
    n, c, h, w = x.shape
    return torch.cat([x[:, :, :width, :].reshape(n, c, -1),
                      x[:, :, h - width:, :].reshape(n, c, -1),
                      x[:, :, width:h - width, :width].reshape(n, c, -1),
                      x[:, :, width:h - width, w - width:].reshape(n, c, -1)], dim=2)


def sky_noise(x: torch.Tensor, p: Preprocessing,
              numpy_on_cpu: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-band sky (N, 3) and common noise (N,) of float32 cutouts, from the border frame."""
    border = border_frame(x, p.border)  # (N, 3, K)
    sky = median(border, numpy_on_cpu)  # (N, 3)
    ref = border[:, p.noise_band, :] - sky[:, p.noise_band, None]  # (N, K)
    sigma = 1.4826 * median(ref.abs(), numpy_on_cpu)  # (N,)
    return sky, sigma.clamp_min(p.min_noise)


def crop(x, size: int):
    """Centre crop of the last two axes (numpy array or torch tensor)."""
    h, w = x.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top:top + size, left:left + size]


def _float32(x: torch.Tensor) -> torch.Tensor:
    """float32 with non-finite pixels set to 0 (quarantined rows still flow through; keep them
    finite). On CPU only when there are any (a sum is cheaper than a rewrite); on an accelerator
    always (one elementwise kernel, and no host sync to find out)."""
    x = x.float()
    if x.device.type != "cpu":
        return torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    if not bool(torch.isfinite(x.sum())):
        return torch.where(torch.isfinite(x), x, 0.0)
    return x


def normalize_tensor(x: torch.Tensor, p: Preprocessing, numpy_on_cpu: bool = True
                     ) -> torch.Tensor:
    """Sky-subtract per band and divide by the common noise: (N, 3, 64, 64) float32 on x's
    device (input float32 or float16 linear fluxes)."""
    x = x.float()
    sky, sigma = sky_noise(x, p, numpy_on_cpu)
    return (x - sky[:, :, None, None]) / sigma[:, None, None, None]


def stretch(x, p: Preprocessing, numpy_on_cpu: bool = True):
    """Centre crop and asinh stretch of normalised images (numpy array or torch tensor)."""
    if isinstance(x, np.ndarray):
        return stretch(torch.from_numpy(np.asarray(x, np.float32)), p).numpy()
    x = crop(x, p.crop).float() / p.softening
    return asinh_(x, numpy_on_cpu)


def preprocess_tensor(x: torch.Tensor, p: Preprocessing, numpy_on_cpu: bool = True
                      ) -> torch.Tensor:
    """Raw (N, 3, 64, 64) fluxes (float32 or float16, any device) -> model input
    (N, 3, crop, crop) float32 on the same device: ``stretch(normalize(x))``, computed on the
    crop only. Non-finite pixels count as 0; a row whose output is not finite (pixels that
    overflow float32 on the way) is found by :func:`finite_rows`."""
    x = _float32(x)
    sky, sigma = sky_noise(x, p, numpy_on_cpu)
    out = crop(x, p.crop) - sky[:, :, None, None]  # (N, 3, crop, crop), a new tensor
    out /= sigma[:, None, None, None]
    out /= p.softening
    return asinh_(out, numpy_on_cpu)


def finite_rows(x: torch.Tensor) -> torch.Tensor:
    """(N,) bool: rows of a batch whose every value is finite."""
    return torch.isfinite(x).flatten(1).all(dim=1)


def as_tensor(images: np.ndarray) -> torch.Tensor:
    """A CPU tensor viewing ``images`` when they are native float32 or float16 (else a float32
    copy: other types, big-endian FITS data). A read-only array (Arrow's buffers, Ray's
    batches) is viewed as it is: nothing here writes to its input (see below)."""
    images = np.asarray(images)
    if images.dtype not in (np.float32, np.float16):  # the native-order types only
        images = images.astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(images))


def _spend_the_read_only_warning() -> None:
    """torch warns once per process, two lines on the user's stderr from every Ray worker, the
    first time it views a read-only array; :func:`as_tensor` views them and never writes to
    them, so that one warning is spent here, on an array of one value, silently."""
    one = np.zeros(1, np.float32)
    one.flags.writeable = False
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The given NumPy array is not writable", UserWarning)
        torch.from_numpy(one)


_spend_the_read_only_warning()


def preprocess(images: np.ndarray, p: Preprocessing) -> np.ndarray:
    """numpy entry point of :func:`preprocess_tensor`: (N, 3, 64, 64) -> (N, 3, crop, crop)
    float32."""
    with torch.inference_mode():
        return preprocess_tensor(as_tensor(images), p).numpy()


def normalize(images: np.ndarray, p: Preprocessing) -> np.ndarray:
    """numpy entry point of :func:`normalize_tensor`: (N, 3, 64, 64) float32."""
    with torch.inference_mode():
        return normalize_tensor(as_tensor(images), p).numpy()
