"""One entry point for every shard format: plan work units and read them as batches.

A *unit* is a contiguous row range of one shard (a Parquet row-group run, a FITS row range, or a
whole single-cutout file). Units are what the scoring pipeline reads, scores and commits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import numpy as np

from lensscan.errors import ShardError
from lensscan.io import npy as npy_io
from lensscan.io import parquet as pq_io
from lensscan.io import storage
from lensscan.io.batch import Batch


class _Fits:
    """:mod:`lensscan.io.fits`, imported on first use: it loads astropy (a good part of a
    second), which a worker that reads only Parquet never needs."""

    def __getattr__(self, name: str):
        from lensscan.io import fits

        return getattr(fits, name)


fits_io = _Fits()


@dataclass(frozen=True)
class Unit:
    """Rows ``[start, stop)`` of shard ``url``; for Parquet, row groups ``[rg_start, rg_stop)``;
    ``id_kind`` is the type of the shard's object ids (``"int"`` or ``"string"``); ``dtype``
    how its pixels are stored (``"float16"`` Parquet shards can be read without a cast)."""

    url: str
    fmt: str
    start: int
    stop: int
    rg_start: int = 0
    rg_stop: int = 0
    id_kind: str = "int"
    dtype: str = "float32"

    @property
    def rows(self) -> int:
        return self.stop - self.start

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Format:
    """How the shards of one format are planned, read and written (see :data:`FORMATS`)."""

    plan: Callable[[str, int, tuple[str, ...] | None], list[Unit]]  # (url, rows_per_unit,
    # bands the shard must hold, None: any) -> units
    read: Callable[[Unit, bool, tuple[str, ...] | None], Batch]  # (unit, half, columns)
    read_all: Callable[[str], Batch]  # url -> every row
    optics: Callable[[str], tuple[tuple[str, ...], float]]  # url -> (bands, arcsec/pixel)
    num_rows: Callable[[str], int]  # url -> rows in the shard, from its footer or headers
    images: Callable[[str, np.ndarray], np.ndarray]  # (url, rows) -> their images
    write: Callable[[str, Batch, tuple[str, ...], int], None] | None  # None: not written
    splits: bool = True  # a unit can be cut into smaller ones (see split_first)


def shard_format(url: str) -> str:
    """``parquet``, ``fits`` or ``npy`` from the file name."""
    suffix = storage.shard_suffix(url)
    if suffix is None:
        raise ShardError(url, "unknown file type (expected .parquet, .fits, .fits.gz or .npy)")
    return {".parquet": "parquet", ".npy": "npy"}.get(suffix, "fits")


def plan_units(url: str, rows_per_unit: int = 2048,
               bands: tuple[str, ...] | None = None) -> list[Unit]:
    """Split one shard into units of about ``rows_per_unit`` rows (reads headers only).

    Raises
    ------
    ShardError
        When the shard cannot be used; for a shard whose headers name other ``bands`` (or the
        same in another order), with its row count.
    """
    return FORMATS[shard_format(url)].plan(url, rows_per_unit, bands)


def check_bands(url: str, found: tuple[str, ...], bands: tuple[str, ...] | None,
                rows: int, where: str) -> None:
    """Refuse a shard whose bands (``where`` its headers say so) are not ``bands``, in order:
    the model would read one band as another. Names are compared without case or spaces
    (``G,R,I`` is ``g, r, i``)."""
    def names(bs: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(b.strip().lower() for b in bs)

    if bands is not None and names(found) != names(bands):
        raise ShardError(url, f"bands {','.join(found)} ({where}) are not the model's "
                              f"{','.join(bands)}, in that order", rows=rows)


def split_first(units: list[Unit], rows: int) -> list[Unit]:
    """``units`` with the first one cut into units of ``rows`` rows (Parquet and FITS): the run
    commits its first unit after one small batch instead of a full unit's worth of model calls.
    A part of a Parquet row group is read with its row group and sliced."""
    if not units or not FORMATS[units[0].fmt].splits or units[0].rows <= rows:
        return list(units)
    u = units[0]
    return [replace(u, start=s, stop=min(s + rows, u.stop)) for s in range(u.start, u.stop, rows)
            ] + list(units[1:])


def read_unit(unit: Unit, half: bool = False, columns: tuple[str, ...] | None = None) -> Batch:
    """Read one unit as a checked batch (:mod:`lensscan.io.batch`; with ``half`` a float16
    Parquet shard's pixels stay float16; ``columns``: only these of a Parquet shard's columns,
    where it has them, so that a column the caller does not use cannot fail the unit)."""
    return FORMATS[unit.fmt].read(unit, half, columns)


def read_shard(url: str) -> Batch:
    """Read a whole shard of any format as one checked batch."""
    return FORMATS[shard_format(url)].read_all(url)


def shard_optics(url: str) -> tuple[tuple[str, ...], float]:
    """A shard's band names and pixel scale (arcsec/pixel): a Parquet shard's
    ``lensscan.bands`` and ``lensscan.pixel_scale`` metadata, a FITS shard's ``BANDS`` header;
    the defaults (g, r, i at 0.168") where the file does not say."""
    return FORMATS[shard_format(url)].optics(url)


def write_shard(url: str, batch: Batch, bands: tuple[str, ...] = ("g", "r", "i"),
                row_group_size: int = 1024) -> None:
    """Write a batch as a Parquet or FITS shard, chosen by the file name."""
    write = FORMATS[shard_format(url)].write
    if write is None:
        raise ValueError(f"{url}: write .parquet or .fits shards")
    write(url, batch, bands, row_group_size)


def read_rows(url: str, rows: list[int] | np.ndarray) -> np.ndarray:
    """Images of some rows of a shard, (len(rows), 3, 64, 64) float32, reading only what holds
    them (the Parquet row groups, FITS sections or the one ``.npy`` file).

    Raises
    ------
    ShardError
        When a row lies past the shard's end (the shard is not the one that was scored)."""
    rows = np.asarray(rows, dtype=np.int64)
    fmt = FORMATS[shard_format(url)]
    n = fmt.num_rows(url)
    if len(rows) and (rows.min() < 0 or rows.max() >= n):
        bad = int(rows.min()) if rows.min() < 0 else int(rows.max())
        raise ShardError(url, f"has {n} rows, row {bad} was asked for: the shard "
                              "is not the one that was scored")
    return fmt.images(url, rows)


def _plan_parquet(url: str, rows_per_unit: int, bands: tuple[str, ...] | None) -> list[Unit]:
    info = pq_io.parquet_info(url)
    check_bands(url, info.bands, bands, info.num_rows, f"metadata {pq_io.BANDS_KEY.decode()}")
    units: list[Unit] = []
    start = rg0 = acc = 0
    for rg, n in enumerate(info.row_group_rows):
        acc += n
        if acc >= rows_per_unit or rg == len(info.row_group_rows) - 1:
            units.append(Unit(url, "parquet", start, start + acc, rg0, rg + 1, info.id_kind,
                              info.image_dtype))
            start, rg0, acc = start + acc, rg + 1, 0
    return [u for u in units if u.rows > 0]


def _read_parquet_unit(unit: Unit, half: bool, columns: tuple[str, ...] | None) -> Batch:
    batch = pq_io.read_parquet(unit.url, list(range(unit.rg_start, unit.rg_stop)),
                               None if columns is None else list(columns), half=half)
    first = int(batch["row"][0]) if len(batch["row"]) else unit.start
    if first == unit.start and len(batch["row"]) == unit.rows:
        return batch
    # a unit that is part of a row group (see split_first): its rows only
    return {k: v[unit.start - first:unit.stop - first] for k, v in batch.items()}


def _parquet_optics(url: str) -> tuple[tuple[str, ...], float]:
    info = pq_io.parquet_info(url)
    return info.bands, info.pixel_scale


def _parquet_images(url: str, rows: np.ndarray) -> np.ndarray:
    info = pq_io.parquet_info(url)
    bounds = np.cumsum((0,) + info.row_group_rows)
    groups = sorted({int(np.searchsorted(bounds, r, side="right") - 1) for r in rows})
    out = np.empty((len(rows), 3, 64, 64), np.float32)
    for g in groups:
        sel = (rows >= bounds[g]) & (rows < bounds[g + 1])
        batch = pq_io.read_parquet(url, [g], columns=["object_id", "image"])
        out[sel] = batch["image"][rows[sel] - bounds[g]]
    return out


def _plan_fits(url: str, rows_per_unit: int, bands: tuple[str, ...] | None) -> list[Unit]:
    info = fits_io.fits_info(url)
    check_bands(url, info.bands, bands, info.num_rows, "header BANDS")
    return [
        Unit(url, "fits", s, min(s + rows_per_unit, info.num_rows), id_kind=info.id_kind)
        for s in range(0, max(info.num_rows, 1), rows_per_unit)
    ] if info.num_rows else []


def _fits_images(url: str, rows: np.ndarray) -> np.ndarray:
    return np.concatenate([fits_io.read_fits(url, int(r), int(r) + 1)["image"] for r in rows])


#: Shard format (see :func:`shard_format`) -> its readers and writer. FITS functions are
#: looked up on call, so that a worker reading only Parquet never imports astropy.
FORMATS: dict[str, Format] = {
    "parquet": Format(
        plan=_plan_parquet,
        read=_read_parquet_unit,
        read_all=pq_io.read_parquet,
        optics=_parquet_optics,
        num_rows=lambda url: pq_io.parquet_info(url).num_rows,
        images=_parquet_images,
        write=pq_io.write_parquet,
    ),
    "fits": Format(
        plan=_plan_fits,
        read=lambda unit, half, columns: fits_io.read_fits(unit.url, unit.start, unit.stop),
        read_all=lambda url: fits_io.read_fits(url),
        optics=lambda url: (tuple(fits_io.fits_info(url).bands), pq_io.DEFAULT_PIXEL_SCALE),
        num_rows=lambda url: fits_io.fits_info(url).num_rows,
        images=_fits_images,
        write=lambda url, batch, bands, rg_size: fits_io.write_fits(url, batch, bands),
    ),
    "npy": Format(
        plan=lambda url, rows_per_unit, bands: [Unit(url, "npy", 0, 1, id_kind="string")],
        read=lambda unit, half, columns: npy_io.read_npy(unit.url),
        read_all=npy_io.read_npy,
        optics=lambda url: (pq_io.DEFAULT_BANDS, pq_io.DEFAULT_PIXEL_SCALE),
        num_rows=lambda url: 1,
        images=lambda url, rows: npy_io.load_npy(url)[None].repeat(len(rows), axis=0),
        write=None,
        splits=False,
    ),
}


def claim_survey_folder(url: str, overwrite: bool = False) -> int:
    """Make ``url`` ready for a new survey: refuse a folder that already holds shards (a new
    survey written over them would leave the old one's extra shards behind), or with
    ``overwrite`` remove those shards first; returns how many were removed.

    Raises
    ------
    FileExistsError
        When shards are there and ``overwrite`` is not set.
    """
    storage.check_folder(url)
    try:
        old = storage.list_shards(url)
    except FileNotFoundError:
        return 0
    if not overwrite:
        raise FileExistsError(f"{url} already holds {len(old)} shards of another survey; "
                              "rerun with --overwrite to replace them, or pick an empty folder")
    for shard in old:
        storage.remove(shard)
    return len(old)
