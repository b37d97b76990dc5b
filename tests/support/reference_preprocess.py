"""Today's numpy preprocessing, frozen (lensscan/data/preprocess.py at commit 2646acb), as the
reference that the torch implementation (CPU and GPU) must reproduce within float tolerance."""

from __future__ import annotations

import numpy as np


def _border(images: np.ndarray, width: int) -> np.ndarray:
    n, c, h, w = images.shape
    top = images[:, :, :width, :].reshape(n, c, -1)
    bottom = images[:, :, h - width:, :].reshape(n, c, -1)
    left = images[:, :, width:h - width, :width].reshape(n, c, -1)
    right = images[:, :, width:h - width, w - width:].reshape(n, c, -1)
    return np.concatenate([top, bottom, left, right], axis=2)


def _sky_noise(images: np.ndarray, p) -> tuple[np.ndarray, np.ndarray]:
    border = _border(images, p.border)  # (N, 3, K)
    sky = np.median(border, axis=2)  # (N, 3)
    ref = border[:, p.noise_band, :] - sky[:, p.noise_band, None]  # (N, K)
    sigma = 1.4826 * np.median(np.abs(ref), axis=1)  # (N,)
    sigma = np.maximum(sigma, p.min_noise).astype(np.float32)
    return sky.astype(np.float32), sigma


def normalize(images: np.ndarray, p) -> np.ndarray:
    images = np.asarray(images, dtype=np.float32)
    sky, sigma = _sky_noise(images, p)
    out = images - sky[:, :, None, None]
    out /= sigma[:, None, None, None]
    return out


def stretch(x: np.ndarray, p) -> np.ndarray:
    h, w = x.shape[-2:]
    top, left = (h - p.crop) // 2, (w - p.crop) // 2
    x = x[..., top:top + p.crop, left:left + p.crop]
    return np.arcsinh(x / p.softening).astype(np.float32)


def preprocess(images: np.ndarray, p) -> np.ndarray:
    images = np.asarray(images, dtype=np.float32)
    if not np.isfinite(images.sum()):
        images = np.where(np.isfinite(images), images, np.float32(0.0))
    sky, sigma = _sky_noise(images, p)
    h = images.shape[-1]
    t = (h - p.crop) // 2
    out = np.empty((len(images), images.shape[1], p.crop, p.crop), np.float32)
    np.subtract(images[..., t:t + p.crop, t:t + p.crop], sky[:, :, None, None], out=out)
    out /= sigma[:, None, None, None]
    out /= np.float32(p.softening)
    np.arcsinh(out, out=out)
    return out
