"""Display stretches of a (3, 64, 64) g, r, i cutout for the gallery, and PNG encoding.

Every stretch subtracts each band's sky (the median of a 4-pixel border,
:func:`lensscan.data.display.sky_and_noise`) first:

- ``asinh``: the Lupton asinh RGB composite (i, r, g as red, green, blue; one stretch for
  all bands, so colours are kept) of :func:`lensscan.data.display.rgb_composite`.
- ``g``, ``r``, ``i``: one band in grey, in units of its own sky noise (1.4826 x the border's
  median absolute deviation), asinh-stretched from -1 sigma to its brightest pixel.
- ``contrast``: a high-contrast composite for faint arcs: every band in units of the r-band
  noise, asinh softened at 1 sigma and saturating at 12 sigma, so that features a few sigma
  above the sky show and galaxy cores burn out.

Images are (H, W) or (H, W, 3) uint8 with row 0 at the bottom (south), as cutouts are stored;
:func:`png_data_uri` turns them north up.
"""

from __future__ import annotations

import base64
import io

import numpy as np

from lensscan.data.display import rgb_composite, sky_and_noise

#: key -> label, in the order the page offers them
STRETCHES = {"asinh": "asinh g, r, i composite", "g": "g band", "r": "r band", "i": "i band",
             "contrast": "high contrast"}


def band_grey(image: np.ndarray, band: int) -> np.ndarray:
    """One band of a (3, H, W) cutout as (H, W) uint8 grey (see the module docstring)."""
    img, noise = sky_and_noise(image)
    x = img[band] / noise[band]  # in sigma
    top = max(float(x.max()), 5.0)
    v = (np.arcsinh(x / 2.0) - np.arcsinh(-0.5)) / (np.arcsinh(top / 2.0) - np.arcsinh(-0.5))
    return (np.clip(v, 0.0, 1.0) * 255).astype(np.uint8)


def high_contrast(image: np.ndarray, soft: float = 1.0, sat: float = 12.0) -> np.ndarray:
    """(3, H, W) g, r, i -> (H, W, 3) uint8 high-contrast composite (module docstring)."""
    img, noise = sky_and_noise(image)
    x = img / noise[1]  # one scale for all bands: colours are kept
    i, r, g = x[2], x[1], x[0]
    mean = np.maximum((i + r + g) / 3.0, 1e-9)
    scale = np.arcsinh(mean / soft) / np.arcsinh(sat / soft) / mean
    rgb = np.clip(np.stack([i, r, g], axis=-1) * scale[..., None], 0.0, None)
    peak = np.maximum(rgb.max(axis=-1, keepdims=True), 1.0)
    return (np.clip(rgb / peak, 0.0, 1.0) * 255).astype(np.uint8)


def render(image: np.ndarray, stretch: str) -> np.ndarray:
    """The cutout in one of :data:`STRETCHES`."""
    if stretch == "asinh":
        return rgb_composite(image)
    if stretch == "contrast":
        return high_contrast(image)
    if stretch in ("g", "r", "i"):
        return band_grey(image, "gri".index(stretch))
    raise ValueError(f"stretch must be one of {', '.join(STRETCHES)}, not {stretch!r}")


def png_data_uri(pixels: np.ndarray, scale: int = 1) -> str:
    """(H, W) or (H, W, 3) uint8, row 0 south -> ``data:image/png;base64,...``, north up
    (nearest-neighbour upscaled by ``scale``; the page scales further with pixelated
    rendering)."""
    from PIL import Image

    big = np.repeat(np.repeat(pixels[::-1], scale, axis=0), scale, axis=1)  # north up
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(big)).save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
