"""Coadd images on any storage: tiles from a ``{band}`` URL glob, their WCS, and pixel sections.

A *tile* is the set of images, one per band, whose file names match the glob with the same
wildcard values: ``s3://survey/coadd/*/calexp-HSC-{band}-*.fits`` with bands ``G,R,I`` pairs
``.../9813/calexp-HSC-G-9813-5,4.fits`` with ``.../9813/calexp-HSC-R-9813-5,4.fits`` and
``.../9813/calexp-HSC-I-9813-5,4.fits`` (key ``9813|5,4``). Remote images are opened through fsspec
(``use_fsspec=True``) and read with ``.section[...]``: only the bytes of the needed rows travel.
"""

from __future__ import annotations

import io
import math
import re
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyWarning
from astropy.wcs import WCS, FITSFixedWarning
from astropy.wcs.utils import proj_plane_pixel_scales

from lensscan.config import ZEROPOINT_RANGE
from lensscan.errors import StorageError
from lensscan.io import storage

BAND = "{band}"


@dataclass(frozen=True)
class BandImage:
    """One band's image of a tile: where it is and what its header says."""

    url: str
    hdu: int  # index of the image HDU in the file
    shape: tuple[int, int]  # (ny, nx) pixels
    header: str  # the image HDU's header as text (its WCS), rebuilt by :meth:`wcs`
    pixel_scale: tuple[float, float]  # arcsec per pixel along x and y at the reference pixel
    zeropoint: float | None  # AB zero-point of the pixel values, when the header gives one

    def wcs(self) -> WCS:
        """The image's celestial WCS."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            return WCS(fits.Header.fromstring(self.header)).celestial


@dataclass(frozen=True)
class Tile:
    """The images of one sky tile, one per band in band order."""

    key: str  # the glob's wildcard values, joined by "|"
    bands: tuple[BandImage, ...]

    @property
    def shape(self) -> tuple[int, int]:
        return self.bands[0].shape


def glob_regex(pattern: str) -> re.Pattern:
    """A regular expression with one group per wildcard of a glob (``*``, ``**``, ``?``,
    ``[...]``)."""
    out, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if pattern.startswith("**", i):
            out.append("(.*)")
            i += 2
            continue
        if ch == "*":
            out.append("([^/]*)")
        elif ch == "?":
            out.append("([^/])")
        elif ch == "[" and "]" in pattern[i + 1:]:
            end = pattern.index("]", i + 2 if pattern[i + 1] in "!^" else i + 1)
            body = pattern[i + 1:end]
            body = "^" + body[1:] if body.startswith("!") else body
            out.append(f"([{body}])")
            i = end + 1
            continue
        else:
            out.append(re.escape(ch))
        i += 1
    return re.compile("".join(out) + r"\Z")


def band_files(pattern: str, band_names: tuple[str, ...]) -> dict[tuple[str, ...], list[str]]:
    """Match the glob once per band: ``{wildcard values: [url per band]}`` for every key seen in
    any band (``None`` where a band has no file with those values)."""
    if BAND not in pattern:
        raise ValueError(f"{pattern}: the image URL needs a {BAND} placeholder")
    found: dict[tuple[str, ...], list] = {}
    for b, name in enumerate(band_names):
        fs, path = storage.filesystem(pattern.replace(BAND, name))
        regex = glob_regex(path)
        for p in sorted(fs.glob(path)):
            m = regex.match(p)
            if m is not None:
                found.setdefault(m.groups(), [None] * len(band_names))[b] = storage.unstrip(fs, p)
    return found


@contextmanager
def open_image(url: str) -> Iterator[fits.HDUList]:
    """Open a FITS image lazily: memory-mapped when local, over fsspec when remote (``.gz``
    files are read whole: gzip cannot seek)."""
    fs, path = storage.filesystem(url)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)
        if storage.is_local(url):
            hdul = fits.open(path, memmap=not path.endswith(".gz"), lazy_load_hdus=True)
        elif path.endswith(".gz"):
            hdul = fits.open(io.BytesIO(fs.cat_file(path)))
        else:
            hdul = fits.open(url, use_fsspec=True, lazy_load_hdus=True,
                             fsspec_kwargs=dict(fs.storage_options))
        try:
            yield hdul
        finally:
            hdul.close()


def image_hdu(hdul: fits.HDUList, url: str) -> int:
    """Index of the first two-dimensional image HDU (HSC calexps: 1; plain images: 0)."""
    for i, hdu in enumerate(hdul):
        if hdu.is_image and hdu.header.get("NAXIS") == 2:
            return i
    raise ValueError(f"{url}: no two-dimensional image HDU")


def header_zeropoint(header: fits.Header, primary: fits.Header, url: str = "") -> float | None:
    """AB zero-point from ``MAGZERO``/``MAGZP``, ``FLUXMAG0`` (HSC: the flux of magnitude 0) or
    ``BUNIT = nJy`` (31.4), looked up in the image header and then the primary header.

    Raises
    ------
    ValueError
        For a value that is not a number, a ``FLUXMAG0`` that is not positive, or a zero-point
        outside :data:`ZEROPOINT_RANGE`, naming ``url`` and the key.
    """
    for hdr in (header, primary):
        for key in ("MAGZERO", "MAGZP", "FLUXMAG0"):
            # an empty FLUXMAG0, or 0, says "not known" (as before this check): the next source
            if key in hdr and not (key == "FLUXMAG0" and hdr[key] in (None, 0, "")):
                return _zeropoint(url, key, hdr[key])
        if str(hdr.get("BUNIT", "")).strip().lower() == "njy":
            return 31.4
    return None


def _zeropoint(url: str, key: str, value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{url}: header {key} = {value!r} is not a number") from None
    if key == "FLUXMAG0":
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"{url}: header FLUXMAG0 = {value!r}: the flux of magnitude 0 "
                             "must be a positive number (0 or empty: not known)")
        v = float(2.5 * np.log10(v))
    lo, hi = ZEROPOINT_RANGE
    if not lo <= v <= hi:
        raise ValueError(f"{url}: header {key} = {value!r} gives an AB zero-point of {v:g}, "
                         f"outside {lo:g}-{hi:g}: fix the header")
    return v


def read_band_image(url: str) -> BandImage:
    """Read one image's headers (no pixels); a file that is not a readable FITS image is
    refused in one line naming it."""
    try:
        with open_image(url) as hdul:
            k = image_hdu(hdul, url)
            hdr = hdul[k].header
            shape = (int(hdr["NAXIS2"]), int(hdr["NAXIS1"]))
            zp = header_zeropoint(hdr, hdul[0].header, url)
            text = hdr.tostring()
    except FileNotFoundError:
        raise
    except (OSError, ValueError, TypeError, KeyError, IndexError) as exc:
        if storage.is_storage_failure(exc):  # storage, not the file: the run stops, reruns
            raise StorageError(url, f"cannot read ({storage.short(exc)})") from exc
        if str(exc).startswith(f"{url}:"):
            raise
        raise ValueError(f"{url}: not a readable FITS image ({str(exc).splitlines()[0][:200]})"
                         ) from None
    img = BandImage(url, k, shape, text, (0.0, 0.0), zp)
    try:
        wcs = img.wcs()
        if not wcs.has_celestial or wcs.naxis != 2:
            raise ValueError(f"{url}: the image header has no celestial WCS")
        scale = proj_plane_pixel_scales(wcs) * 3600.0  # degrees -> arcsec
    except (ValueError, TypeError, KeyError, MemoryError) as exc:
        if str(exc).startswith(f"{url}:"):
            raise
        raise ValueError(f"{url}: invalid WCS in the image header ({wcs_reason(exc)})") from None
    return BandImage(url, k, shape, text, (float(scale[0]), float(scale[1])), zp)


def wcs_reason(exc: BaseException) -> str:
    """wcslib's reason for refusing a header, in one line: its messages name the C function
    and source line ("ERROR 4 in wcs_types() at line ...:") before the reason."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    reasons = [ln for ln in lines if not re.match(r"ERROR \d+ in ", ln)]
    return (reasons or lines or [type(exc).__name__])[0][:200]


def discover_tiles(pattern: str, band_names: tuple[str, ...],
                   threads: int = 16) -> tuple[list[Tile], list[str]]:
    """The complete tiles of ``pattern`` (headers read in threads), sorted by key, and the files
    of incomplete ones (a band missing) that are left out."""
    found = band_files(pattern, band_names)
    complete = sorted(k for k, urls in found.items() if all(urls))
    partial = sorted(u for k, urls in found.items() if not all(urls) for u in urls if u)
    urls = [u for k in complete for u in found[k]]
    with ThreadPoolExecutor(max(1, min(threads, len(urls)))) as pool:
        images = list(pool.map(read_band_image, urls))
    n = len(band_names)
    tiles = [Tile("|".join(k), tuple(images[i * n:(i + 1) * n])) for i, k in enumerate(complete)]
    return tiles, partial


def read_section(hdul: fits.HDUList, hdu: int, ys: slice, xs: slice) -> np.ndarray:
    """Pixels ``[ys, xs]`` of an image HDU as native float32 (only those bytes are read)."""
    return np.asarray(hdul[hdu].section[ys, xs], dtype=np.float32)
