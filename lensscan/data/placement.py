"""Where each catalogue object lies: the tiles that hold it, ranked by distance from the edge.

Every (object, tile) pair whose pixel position falls inside the tile's image is a *candidate*;
an object's candidates are ranked by their distance from the nearest image edge, farthest first,
so rank 0 is the tile that gives the cutout. Positions come from the tile's WCS with
:func:`astropy.wcs.utils.skycoord_to_pixel` (``mode="all"``, distortions included), exactly as
:class:`astropy.nddata.Cutout2D` computes them. Only objects within the tile's circle on the sky
are transformed: the catalogue is sorted by declination once and sliced per tile.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy.coordinates import SkyCoord
from astropy.wcs import WCS, NoConvergence
from astropy.wcs.utils import pixel_to_skycoord, skycoord_to_pixel

from lensscan.io.coadd import Tile

STAMP = 64  # cutout side, pixels
GRID_TOLERANCE = 1e-3  # pixels: the bands of a tile must share one pixel grid within this


@dataclass(frozen=True)
class Candidates:
    """Candidate (object, tile) pairs, sorted by object and then rank."""

    row: np.ndarray  # (K,) int64 catalogue row
    tile: np.ndarray  # (K,) int64 index into the tile list
    x: np.ndarray  # (K,) float64 pixel position in the tile (0-based, pixel centres at integers)
    y: np.ndarray  # (K,) float64
    rank: np.ndarray  # (K,) int64: 0 for the object's tile farthest from the edge

    def at_rank(self, rank: int, rows: np.ndarray) -> np.ndarray:
        """Indices of the candidates of ``rows`` at ``rank``."""
        return np.flatnonzero((self.rank == rank) & np.isin(self.row, rows))


def unit_vectors(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """(N, 3) unit vectors of positions in degrees."""
    a, d = np.deg2rad(ra), np.deg2rad(dec)
    return np.stack([np.cos(d) * np.cos(a), np.cos(d) * np.sin(a), np.sin(d)], axis=1)


def footprint(wcs: WCS, shape: tuple[int, int]) -> tuple[np.ndarray, float]:
    """Centre (3,) unit vector and radius (degrees) of a circle that holds the image."""
    ny, nx = shape
    xs = np.array([-0.5, nx - 0.5, -0.5, nx - 0.5, (nx - 1) / 2])
    ys = np.array([-0.5, -0.5, ny - 0.5, ny - 0.5, (ny - 1) / 2])
    sky = pixel_to_skycoord(xs, ys, wcs, origin=0, mode="all").icrs
    v = unit_vectors(sky.ra.deg, sky.dec.deg)
    centre = v.mean(axis=0)
    centre /= np.linalg.norm(centre)
    radius = np.rad2deg(np.arccos(np.clip(v @ centre, -1, 1))).max()
    return centre, float(radius) * 1.05 + 1e-4


def check_grid(tile: Tile) -> None:
    """Raise ``ValueError`` unless every band of ``tile`` has the first band's pixel grid."""
    ref, first = tile.bands[0].wcs(), tile.bands[0]
    ny, nx = first.shape
    xs = np.array([0.0, nx - 1.0, 0.0, nx - 1.0, nx / 2])
    ys = np.array([0.0, 0.0, ny - 1.0, ny - 1.0, ny / 2])
    sky = pixel_to_skycoord(xs, ys, ref, origin=0, mode="all")
    for band in tile.bands[1:]:
        if band.shape != first.shape:
            raise ValueError(f"tile {tile.key}: {band.url} is {band.shape} pixels, "
                             f"{first.url} {first.shape}: the bands must share one pixel grid")
        bx, by = to_pixel(sky, band.wcs(), band.url)
        off = float(np.hypot(bx - xs, by - ys).max())
        if off > GRID_TOLERANCE:
            raise ValueError(f"tile {tile.key}: {band.url} is offset by {off:.3g} pixels from "
                             f"{first.url}: the bands must share one pixel grid (or --resample)")


def to_pixel(sky: SkyCoord, wcs: WCS, url: str) -> tuple[np.ndarray, np.ndarray]:
    """Pixel positions of ``sky`` in the image ``url`` (0-based, distortions included, as
    :class:`astropy.nddata.Cutout2D` computes them); a distortion that cannot be inverted there
    is refused in one line naming the image."""
    try:
        return skycoord_to_pixel(sky, wcs, origin=0, mode="all")
    except NoConvergence:
        raise ValueError(f"{url}: the WCS's distortion (SIP/TPV) cannot be inverted on the "
                         "image: check the header's distortion terms") from None


def edge_distance(x: np.ndarray, y: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Distance (pixels) from each position to the nearest image edge; <= 0 outside."""
    ny, nx = shape
    return np.minimum.reduce([x + 0.5, nx - 0.5 - x, y + 0.5, ny - 0.5 - y])


def candidates(ra: np.ndarray, dec: np.ndarray, tiles: list[Tile]) -> Candidates:
    """Every (object, tile) pair with the object inside the tile's image, ranked per object.

    Parameters
    ----------
    ra, dec : ndarray, shape (N,)
        ICRS degrees; NaN positions lie on no tile.
    tiles : list of Tile
    """
    ok = np.flatnonzero(np.isfinite(ra) & np.isfinite(dec))
    order = ok[np.argsort(dec[ok], kind="stable")]
    sorted_dec = dec[order]
    vec = unit_vectors(ra[order], sorted_dec)
    parts: list[tuple[np.ndarray, ...]] = []
    for t, tile in enumerate(tiles):
        wcs = tile.bands[0].wcs()
        centre, radius = footprint(wcs, tile.shape)
        dec_c = np.rad2deg(np.arcsin(centre[2]))
        lo, hi = np.searchsorted(sorted_dec, [dec_c - radius, dec_c + radius], side="left")
        near = np.arange(lo, hi)[vec[lo:hi] @ centre >= np.cos(np.deg2rad(radius))]
        if not len(near):
            continue
        rows = order[near]
        x, y = to_pixel(SkyCoord(ra[rows], dec[rows], unit="deg", frame="icrs"), wcs,
                        tile.bands[0].url)
        dist = edge_distance(x, y, tile.shape)
        inside = dist > 0
        parts.append((rows[inside], np.full(inside.sum(), t), x[inside], y[inside], dist[inside]))
    if not parts:
        empty = np.zeros(0, np.int64)
        return Candidates(empty, empty, np.zeros(0), np.zeros(0), empty)
    row, tile, x, y, dist = (np.concatenate(p) for p in zip(*parts, strict=True))
    srt = np.lexsort((tile, -dist, row))
    row, tile, x, y = row[srt], tile[srt], x[srt], y[srt]
    first = np.r_[0, np.flatnonzero(np.diff(row)) + 1]
    rank = np.arange(len(row)) - np.repeat(first, np.diff(np.r_[first, len(row)]))
    return Candidates(row.astype(np.int64), tile.astype(np.int64), x, y, rank.astype(np.int64))


def stamp_origin(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First pixel (x0, y0) of the 64 x 64 stamp around each position, by
    :func:`astropy.nddata.utils.overlap_slices`' rule for even sizes (``ceil(pos - 32)``)."""
    return (np.ceil(x - STAMP / 2).astype(np.int64), np.ceil(y - STAMP / 2).astype(np.int64))


def stamp_inside(x: np.ndarray, y: np.ndarray, shape: tuple[int, int],
                 half: float | None = None) -> np.ndarray:
    """True where the stamp lies wholly on the image. ``half`` (pixels): the half-side of the
    region a resampled stamp reads instead of the 64-pixel stamp."""
    ny, nx = shape
    if half is None:
        x0, y0 = stamp_origin(x, y)
        return (x0 >= 0) & (y0 >= 0) & (x0 + STAMP <= nx) & (y0 + STAMP <= ny)
    return (np.floor(x - half) >= 0) & (np.floor(y - half) >= 0) & \
        (np.ceil(x + half) + 1 <= nx) & (np.ceil(y + half) + 1 <= ny)
