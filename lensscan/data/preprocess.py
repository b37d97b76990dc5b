"""The one preprocessing used by training and scoring; its parameters live in the model card.

Linear survey fluxes are turned into model inputs in two steps:

1. :func:`normalize` (numpy): subtract each band's sky (median of the border frame) and divide all
   three bands by one noise estimate (robust sigma of the r-band border), so colours are kept and
   images from surveys of any depth land in units of the sky noise.
2. :func:`stretch` (numpy or torch): a centre crop and an asinh stretch, linear below
   ``softening`` sigma and logarithmic above, which keeps faint arcs and bright cores in range.

Training inserts its augmentations (noise and PSF jitter, D4) between the two steps.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Preprocessing:
    """Parameters of :func:`preprocess`, stored in every model card."""

    border: int = 6  # width in pixels of the frame used for sky and noise estimates
    noise_band: int = 1  # band whose border sets the common noise scale (1 = r)
    softening: float = 3.0  # asinh softening in units of the sky noise
    crop: int = 48  # side of the centre crop fed to the model, pixels
    min_noise: float = 1e-6  # floor of the noise estimate (flux units)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Preprocessing:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def _border(images: np.ndarray, width: int) -> np.ndarray:
    """Border-frame pixels of every band: (N, 3, K)."""
    n, c, h, w = images.shape
    top = images[:, :, :width, :].reshape(n, c, -1)
    bottom = images[:, :, h - width:, :].reshape(n, c, -1)
    left = images[:, :, width:h - width, :width].reshape(n, c, -1)
    right = images[:, :, width:h - width, w - width:].reshape(n, c, -1)
    return np.concatenate([top, bottom, left, right], axis=2)


def _sky_noise(images: np.ndarray, p: Preprocessing) -> tuple[np.ndarray, np.ndarray]:
    """Per-band sky (N, 3) and common noise (N,) from the border frame, float32."""
    border = _border(images, p.border)  # (N, 3, K)
    sky = np.median(border, axis=2)  # (N, 3)
    ref = border[:, p.noise_band, :] - sky[:, p.noise_band, None]  # (N, K)
    sigma = 1.4826 * np.median(np.abs(ref), axis=1)  # (N,)
    sigma = np.maximum(sigma, p.min_noise).astype(np.float32)
    return sky.astype(np.float32), sigma


def normalize(images: np.ndarray, p: Preprocessing) -> np.ndarray:
    """Sky-subtract per band and divide by the common noise: (N, 3, 64, 64) float32."""
    images = np.asarray(images, dtype=np.float32)
    sky, sigma = _sky_noise(images, p)
    out = images - sky[:, :, None, None]
    out /= sigma[:, None, None, None]
    return out


def crop(x, size: int):
    """Centre crop of the last two axes (numpy array or torch tensor)."""
    h, w = x.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top:top + size, left:left + size]


def stretch(x, p: Preprocessing):
    """Centre crop and asinh stretch of normalised images (numpy array or torch tensor)."""
    x = crop(x, p.crop)
    if isinstance(x, np.ndarray):
        return np.arcsinh(x / p.softening).astype(np.float32)
    return (x / p.softening).asinh()


def preprocess(images: np.ndarray, p: Preprocessing) -> np.ndarray:
    """Raw (N, 3, 64, 64) fluxes -> model input (N, 3, crop, crop) float32.

    The same arithmetic as ``stretch(normalize(images))``, bit for bit, done on the crop only
    and in place: one output array, no full-size temporaries.
    """
    images = np.asarray(images, dtype=np.float32)
    if not np.isfinite(images.sum()):  # quarantined rows still flow through; keep them finite
        images = np.where(np.isfinite(images), images, np.float32(0.0))
    sky, sigma = _sky_noise(images, p)
    out = np.empty((len(images), images.shape[1], p.crop, p.crop), np.float32)
    np.subtract(crop(images, p.crop), sky[:, :, None, None], out=out)
    out /= sigma[:, None, None, None]
    out /= np.float32(p.softening)
    np.arcsinh(out, out=out)
    return out
