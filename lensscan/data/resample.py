"""Resampled cutouts (``lensscan cutout --resample``): images whose pixel scale is not the
survey's are reprojected onto a 64 x 64 TAN grid centred on each object.

The grid has the requested pixel scale, north up and east left, and the object at its centre
(pixel 31.5, 31.5). :func:`reproject.reproject_adaptive` (DeForest 2004's anti-aliased
resampling) does the work with ``conserve_flux=True``, so a galaxy's summed flux is the same on
either grid. ``reproject`` is an optional dependency (``pip install "lensscan[resample]"``).
"""

from __future__ import annotations

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from lensscan.data.placement import STAMP
from lensscan.errors import LensscanError
from lensscan.io.coadd import BandImage, read_section


def require_reproject():
    """The ``reproject_adaptive`` function, or a clear error when the package is missing."""
    try:
        from reproject import reproject_adaptive
    except ImportError as exc:
        raise LensscanError("--resample needs the optional package 'reproject' "
                            "(pip install 'lensscan[resample]')") from exc
    return reproject_adaptive


def target_wcs(ra: float, dec: float, pixel_scale: float) -> WCS:
    """TAN grid of 64 x 64 pixels of ``pixel_scale`` arcsec centred on (ra, dec) degrees."""
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra, dec]
    w.wcs.crpix = [STAMP / 2 + 0.5, STAMP / 2 + 0.5]  # 1-based: 0-based pixel 31.5
    w.wcs.cdelt = [-pixel_scale / 3600.0, pixel_scale / 3600.0]
    w.wcs.radesys = "ICRS"
    return w


def read_half(pixel_scale: float, band: BandImage) -> float:
    """Half-side (input pixels) of the region that covers a resampled stamp and the resampling
    kernel's reach."""
    return STAMP / 2 * np.sqrt(2) * pixel_scale / min(band.pixel_scale) + 4


def resample_stamp(hdul: fits.HDUList, band: BandImage, wcs: WCS, x: float, y: float, ra: float,
                   dec: float, pixel_scale: float) -> np.ndarray:
    """One band's stamp of the object at pixel (x, y) = (ra, dec), (64, 64) float32 (NaN where
    the input has no data)."""
    reproject_adaptive = require_reproject()
    half = read_half(pixel_scale, band)
    x0, y0 = int(np.floor(x - half)), int(np.floor(y - half))
    x1, y1 = int(np.ceil(x + half)) + 1, int(np.ceil(y + half)) + 1
    data = read_section(hdul, band.hdu, slice(y0, y1), slice(x0, x1))
    out, footprint = reproject_adaptive((data, wcs[y0:y1, x0:x1]), target_wcs(ra, dec, pixel_scale),
                                        shape_out=(STAMP, STAMP), conserve_flux=True,
                                        boundary_mode="strict")
    out = np.asarray(out, dtype=np.float32)
    out[np.asarray(footprint) <= 0] = np.nan
    return out
