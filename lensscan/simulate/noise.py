"""Noise and sky residuals of every family (see :class:`~lensscan.simulate.population.Rendering`).

:func:`observe` turns a noiseless (3, H, W) image into what a survey delivers: the background
family first changes the sky (a residual plane, or a smoothed copy of the image subtracted as a
local sky estimate does around bright galaxies), then the noise family adds sky and source noise
whose variance follows the true, noiseless image.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.signal import fftconvolve

from lensscan.simulate.population import Rendering
from lensscan.simulate.render import Band


def white(rng: np.random.Generator, image: np.ndarray, bands: list[Band]) -> np.ndarray:
    """Sky (Gaussian) plus source Poisson noise (Gaussian approximation), float32."""
    out = np.empty_like(image, dtype=np.float32)
    for b, band in enumerate(bands):
        var = band.sky_sigma**2 + np.clip(image[b], 0, None) / band.gain
        out[b] = image[b] + rng.standard_normal(image[b].shape) * np.sqrt(var)
    return out


def _unit_kernel(sigma_pix: float) -> np.ndarray:
    """A Gaussian correlation kernel whose squares sum to one (white noise keeps its variance)."""
    t = np.arange(-3, 4)
    k = np.exp(-0.5 * (t[:, None] ** 2 + t[None, :] ** 2) / sigma_pix**2)
    return k / np.sqrt((k**2).sum())


def correlated(rng: np.random.Generator, image: np.ndarray, bands: list[Band],
               rend: Rendering) -> np.ndarray:
    """Noise correlated between neighbouring pixels, as resampling leaves it in coadds: white
    noise convolved with a Gaussian kernel; the pixel variance is ``corr_pixel_sigma`` squared
    times the uncorrelated one (resampling lowers it)."""
    kern = _unit_kernel(rng.uniform(*rend.corr_sigma_pix))
    shrink = rng.uniform(*rend.corr_pixel_sigma)
    out = np.empty_like(image, dtype=np.float32)
    h, w = image.shape[1:]
    for b, band in enumerate(bands):
        var = band.sky_sigma**2 + np.clip(image[b], 0, None) / band.gain
        field = fftconvolve(rng.standard_normal((h + 6, w + 6)), kern, mode="valid")
        out[b] = image[b] + field * np.sqrt(var) * shrink
    return out


def poisson(rng: np.random.Generator, image: np.ndarray, bands: list[Band],
            rend: Rendering) -> np.ndarray:
    """True Poisson counts of a shallow exposure: a sky of ``poisson_sky_counts`` counts per
    pixel (log-uniform) with the band's sky noise, source counts at the same gain; the sky level
    is subtracted afterwards."""
    lo, hi = np.log(rend.poisson_sky_counts[0]), np.log(rend.poisson_sky_counts[1])
    out = np.empty_like(image, dtype=np.float32)
    for b, band in enumerate(bands):
        counts = np.exp(rng.uniform(lo, hi))
        gain = np.sqrt(counts) / band.sky_sigma  # counts per flux unit
        sky = counts / gain
        lam = np.clip(image[b] + sky, 0, None) * gain
        out[b] = rng.poisson(lam) / gain - sky
    return out


def oversubtract(rng: np.random.Generator, image: np.ndarray, rend: Rendering) -> np.ndarray:
    """The image minus ``k`` times a heavily smoothed copy of it (k < 0 adds it): the dark (or
    bright) halo a local sky estimate leaves around bright galaxies."""
    k = rng.uniform(*rend.oversub_frac)
    sigma = rng.uniform(*rend.oversub_scale_pix)
    smooth = np.stack([gaussian_filter(band, sigma, mode="nearest") for band in image])
    return image - k * smooth


def gradient(rng: np.random.Generator, image: np.ndarray, bands: list[Band],
             rend: Rendering) -> np.ndarray:
    """Add a residual sky plane (one direction for all bands, per-band amplitudes) and a
    pedestal, in units of each band's sky noise."""
    h, w = image.shape[1:]
    ang = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[:h, :w]
    ramp = ((xx - (w - 1) / 2) * np.cos(ang) + (yy - (h - 1) / 2) * np.sin(ang)) / max(h, w)
    out = image.astype(np.float32).copy()
    for b, band in enumerate(bands):
        amp = rng.uniform(*rend.gradient_sigma) * band.sky_sigma
        pedestal = rng.uniform(-rend.pedestal_sigma, rend.pedestal_sigma) * band.sky_sigma
        out[b] += (amp * ramp + pedestal).astype(np.float32)
    return out


def observe(rng: np.random.Generator, clean: np.ndarray, bands: list[Band], rend: Rendering,
            noise: str = "white", background: str = "flat") -> np.ndarray:
    """Noisy float32 image of the noiseless ``clean`` with the given noise and background
    families (the noise variance follows ``clean``, the light as it reached the detector)."""
    if background not in ("flat", "gradient", "oversub"):
        raise ValueError(f"unknown background family {background!r}")
    residual = oversubtract(rng, clean, rend) - clean if background == "oversub" else None
    if noise == "white":
        out = white(rng, clean, bands)
    elif noise == "correlated":
        out = correlated(rng, clean, bands, rend)
    elif noise == "poisson":
        out = poisson(rng, clean, bands, rend)
    else:
        raise ValueError(f"unknown noise family {noise!r}")
    if residual is not None:
        out += residual.astype(np.float32)
    if background == "gradient":
        out = gradient(rng, out, bands, rend)
    return out
