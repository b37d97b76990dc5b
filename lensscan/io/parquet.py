"""Parquet cutout shards: one row per object, ``image`` as a (3, 64, 64) tensor column.

The canonical image column is Arrow's ``arrow.fixed_shape_tensor`` (float32, shape [3, 64, 64]);
a plain ``FixedSizeList<float32 | float16>[12288]`` is accepted on read. Decoding is vectorised:
no Python loop runs per row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lensscan.config import PIXEL_TYPES
from lensscan.errors import LensscanError, ShardError, StorageError
from lensscan.io import footers, plainpages, storage
from lensscan.io.arrowbatch import (  # noqa: F401  (decode_images, extra_column: re-exported)
    NPIX,
    decode_images,
    extra_column,
    image_storage_type,
    table_to_batch,
)
from lensscan.io.batch import CUTOUT_SHAPE, Batch
from lensscan.io.spanfile import SpanFile

BANDS_KEY = b"lensscan.bands"
PIXEL_SCALE_KEY = b"lensscan.pixel_scale"  # arcsec per pixel
ZEROPOINT_KEY = b"lensscan.zeropoint"  # AB magnitude of one flux unit
DEFAULT_BANDS = ("g", "r", "i")
DEFAULT_PIXEL_SCALE = 0.168  # HSC
DEFAULT_ZEROPOINT = 27.0  # HSC coadds


@dataclass(frozen=True)
class ParquetInfo:
    """What a shard's footer says: rows per row group and the band order."""

    url: str
    row_group_rows: tuple[int, ...]
    bands: tuple[str, ...]
    columns: tuple[str, ...]
    id_kind: str = "int"  # "int" or "string": the type of the object_id column
    pixel_scale: float = DEFAULT_PIXEL_SCALE  # arcsec / pixel (``lensscan.pixel_scale``)
    zeropoint: float = DEFAULT_ZEROPOINT  # AB zero-point of the fluxes (``lensscan.zeropoint``)
    image_dtype: str = "float32"  # how the pixels are stored: float32, float16 or float64

    @property
    def num_rows(self) -> int:
        return sum(self.row_group_rows)


def _open(url: str) -> pq.ParquetFile:
    fs, path = storage.filesystem(url)
    with storage.failures_named(url, "read"):
        try:
            if storage.is_local(url):  # native reads (memory-mapped), no Python file object
                return pq.ParquetFile(path, memory_map=True)
            # no read-ahead cache: Arrow asks for exactly the byte ranges it needs
            return _open_file(url, fs.open(path, "rb", cache_type="none"))
        except FileNotFoundError as exc:
            raise ShardError(url, "file not found") from exc
        except (pa.ArrowInvalid, OSError) as exc:
            raise _failure(url, "not a readable Parquet file", exc) from exc


def _open_file(url: str, fh, version=None) -> pq.ParquetFile:
    """A remote shard's ``ParquetFile``; its footer is read once per process and object
    version (:mod:`lensscan.io.footers`; ``version``: the fsspec file that says it)."""
    try:
        return footers.open_parquet(url, fh, version)
    except (pa.ArrowInvalid, OSError) as exc:
        raise _failure(url, "not a readable Parquet file", exc) from exc


def _failure(url: str, what: str, exc: BaseException) -> LensscanError:
    """A :class:`StorageError` when storage failed under the read (the run stops and resumes
    later), else a :class:`ShardError` (the file itself is bad and is quarantined)."""
    if storage.is_storage_failure(exc):
        return StorageError(url, f"cannot read ({storage.short(exc)})")
    return ShardError(url, f"{what} ({storage.short(exc)})")


def _check_schema(url: str, schema: pa.Schema) -> None:
    names = schema.names
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ShardError(url, f"columns {twice} appear more than once; which is meant cannot be "
                              "told")
    for col in ("object_id", "image"):
        if col not in names:
            raise ShardError(url, f"missing required column {col!r} (columns: {names})")
    image_storage_type(url, schema.field("image").type)
    for col in ("ra", "dec"):
        typ = schema.field(col).type if col in names else None
        if typ is not None and not (pa.types.is_floating(typ) or pa.types.is_integer(typ)
                                    or pa.types.is_decimal(typ) or pa.types.is_null(typ)):
            raise ShardError(url, f"column {col!r} must hold degrees as numbers, not {typ} "
                                  "(convert sexagesimal coordinates first)")
    id_type = schema.field("object_id").type
    if not (pa.types.is_integer(id_type) or pa.types.is_string(id_type)
            or pa.types.is_large_string(id_type)):
        raise ShardError(url, f"column 'object_id' must be int64 or string, not {id_type}")


def parquet_info(url: str, pf: pq.ParquetFile | None = None) -> ParquetInfo:
    """Read a shard's footer and check its schema.

    Raises
    ------
    ShardError
        When the file is missing, truncated/corrupt or lacks the required columns.
    """
    pf = pf or _open(url)
    schema = pf.schema_arrow
    md = pf.metadata
    try:
        _check_schema(url, schema)
        meta = schema.metadata or {}
        try:
            bands = tuple(meta.get(BANDS_KEY, b"g,r,i").decode().split(","))
        except UnicodeDecodeError:
            raise ShardError(url, "metadata lensscan.bands is not UTF-8 text") from None
        if len(bands) != CUTOUT_SHAPE[0]:
            raise ShardError(url, f"metadata lensscan.bands names {len(bands)} bands, expected 3")
    except ShardError as err:  # the footer is readable: its rows are counted as quarantined
        raise ShardError(url, err.reason, rows=md.num_rows) from None
    rows = tuple(md.row_group(i).num_rows for i in range(md.num_row_groups))
    id_kind = "int" if pa.types.is_integer(schema.field("object_id").type) else "string"
    try:
        scale = float(meta.get(PIXEL_SCALE_KEY, DEFAULT_PIXEL_SCALE))
        zp = float(meta.get(ZEROPOINT_KEY, DEFAULT_ZEROPOINT))
    except ValueError as exc:
        raise ShardError(url, f"metadata lensscan.pixel_scale/zeropoint is not a number "
                              f"({exc})", rows=md.num_rows) from exc
    if not (math.isfinite(scale) and scale > 0 and math.isfinite(zp)):
        raise ShardError(url, f"metadata lensscan.pixel_scale {scale:g} / zeropoint {zp:g}: "
                              "the scale must be a positive number of arcsec per pixel and the "
                              "zero-point finite", rows=md.num_rows)
    pixels = image_storage_type(url, schema.field("image").type).value_type
    return ParquetInfo(url, rows, bands, tuple(schema.names), id_kind, scale, zp,
                       pixels.to_pandas_dtype().__name__)


def read_parquet(
    url: str, row_groups: list[int] | None = None, columns: list[str] | None = None,
    half: bool = False,
) -> Batch:
    """Read a Parquet shard (or some of its row groups) as one checked batch
    (:mod:`lensscan.io.batch`): ``image`` float32, or float16 when stored so and ``half``;
    ``label`` when the file has labels; the file's other columns after the batch's own (a
    fixed-size list column, e.g. ``psf_fwhm``, as a 2-D array)."""
    if row_groups and list(row_groups) != list(range(row_groups[0], row_groups[-1] + 1)):
        raise ValueError("row_groups must be consecutive")
    span = None
    with storage.failures_named(url, "read"):
        if storage.is_local(url):
            pf = _open(url)
        else:  # one GET for the rows asked for, and one for the footer unless this process
            # read it before
            fs, path = storage.filesystem(url)
            try:
                span = SpanFile(fs.open(path, "rb", cache_type="none"))
            except FileNotFoundError as exc:
                raise ShardError(url, "file not found") from exc
            pf = _open_file(url, span, span.raw)
        try:
            return _read(url, pf, span, row_groups, columns, half)
        finally:
            if span is not None:
                span.close()


def _read(url: str, pf: pq.ParquetFile, span: SpanFile | None,
          row_groups: list[int] | None, columns: list[str] | None,
          half: bool = False) -> Batch:
    info = parquet_info(url, pf)
    if columns is not None:  # the file's own, in its order: a column it lacks is not asked for
        columns = [c for c in info.columns if c in columns]
    offset = 0
    if row_groups:
        offset = sum(info.row_group_rows[: row_groups[0]])
    groups = list(range(len(info.row_group_rows))) if row_groups is None else list(row_groups)
    if span is not None and groups:
        try:
            span.prefetch(*_byte_span(pf, groups))
        except OSError as exc:
            raise _failure(url, f"cannot read row groups {groups}", exc) from exc
    images = None
    if columns is None or "image" in columns:
        images = _plain_images(url, pf, groups, span)
        if images is not None and images.dtype != np.float32 and not half:
            images = images.astype(np.float32)
        if images is not None:
            columns = [c for c in (columns or info.columns) if c != "image"]
    try:
        if row_groups is None:
            table = pf.read(columns=columns)
        else:
            table = pf.read_row_groups(row_groups, columns=columns)
    except (pa.ArrowInvalid, OSError) as exc:
        raise _failure(url, "corrupt data", exc) from exc
    if images is not None and len(images) != table.num_rows:
        raise ShardError(url, f"image column has {len(images)} rows, the others {table.num_rows}")
    return table_to_batch(url, table, offset, images, half)


def _byte_span(pf: pq.ParquetFile, groups: list[int]) -> tuple[int, int]:
    """[first, last) byte of the column chunks of ``groups`` (consecutive row groups)."""
    lo, hi = None, 0
    for g in groups:
        md = pf.metadata.row_group(g)
        for c in range(md.num_columns):
            cc = md.column(c)
            start = cc.dictionary_page_offset if cc.has_dictionary_page else cc.data_page_offset
            lo = start if lo is None else min(lo, start)
            hi = max(hi, start + cc.total_compressed_size)
    return lo or 0, hi


def _plain_images(url: str, pf: pq.ParquetFile, groups: list[int],
                  span: SpanFile | None = None) -> np.ndarray | None:
    """The image column by the PLAIN-page fast path (:mod:`plainpages`), or None."""
    if not plainpages.plan(pf, groups):
        return None
    try:
        if span is not None:
            return plainpages.read_images(span, pf, groups)
        with open(storage.filesystem(url)[1], "rb", buffering=0) as fh:
            return plainpages.read_images(fh, pf, groups)
    except (ValueError, IndexError, TypeError, KeyError, RecursionError, OSError) as exc:
        # page headers are bytes of the file: anything malformed in them is the file's fault
        raise _failure(url, "corrupt image data", exc) from exc


def batch_to_table(batch: dict[str, np.ndarray], bands: tuple[str, ...] = DEFAULT_BANDS,
                   metadata: dict[bytes, bytes] | None = None, pixels: str = "float32"
                   ) -> pa.Table:
    """Build a shard table with the canonical schema from a batch (inverse of the reader).

    A 2-D extra column (e.g. ``psf_fwhm``, (N, 3)) becomes a fixed-size list; ``metadata`` is
    added to the file's key-value metadata (e.g. :data:`PIXEL_SCALE_KEY`). ``pixels``: how the
    image is stored, one of :data:`PIXEL_TYPES`."""
    images = pixel_array(batch["image"], pixels)
    if images.shape[1:] != CUTOUT_SHAPE:
        raise ValueError(f"image batch must be (N, 3, 64, 64), got {images.shape}")
    cols: dict[str, pa.Array] = {}
    ids = np.asarray(batch["object_id"])
    cols["object_id"] = pa.array(ids if ids.dtype.kind != "O" else ids.tolist())
    for col in ("ra", "dec"):
        if col in batch:
            cols[col] = pa.array(np.asarray(batch[col], dtype=np.float64), from_pandas=True)
    cols["image"] = pa.FixedShapeTensorArray.from_numpy_ndarray(images)
    if "label" in batch:
        cols["label"] = pa.array(np.asarray(batch["label"], dtype=np.int8))
    for key, value in batch.items():
        if key not in cols and key not in ("row", "status"):
            cols[key] = _column(np.asarray(value))
    table = pa.table(cols)
    return table.replace_schema_metadata({BANDS_KEY: ",".join(bands).encode(),
                                          **(metadata or {})})


F16_MAX = float(np.finfo(np.float16).max)  # 65504


def pixel_array(images: np.ndarray, pixels: str = "float32") -> np.ndarray:
    """``images`` as stored with ``pixels``: float16 keeps 11 significant bits (a relative step of
    1/2048, far below a pixel's noise) and is clipped to +-65504 (a saturated star's core;
    non-finite values stay as they are, so the reader still quarantines them)."""
    if pixels not in PIXEL_TYPES:
        raise ValueError(f"pixels must be one of {', '.join(PIXEL_TYPES)}, got {pixels!r}")
    if pixels == "float16":
        x = np.asarray(images, dtype=np.float32)
        clipped = np.where(np.isfinite(x), np.clip(x, -F16_MAX, F16_MAX), x)
        return np.ascontiguousarray(clipped.astype(np.float16))
    return np.ascontiguousarray(images, dtype=np.float32)


def flux_metadata(pixel_scale: float, zeropoint: float) -> dict[bytes, bytes]:
    """Key-value metadata saying what the fluxes are: arcsec per pixel and AB zero-point."""
    return {PIXEL_SCALE_KEY: repr(float(pixel_scale)).encode(),
            ZEROPOINT_KEY: repr(float(zeropoint)).encode()}


def _column(value: np.ndarray) -> pa.Array:
    if value.ndim == 2:
        return pa.FixedSizeListArray.from_arrays(pa.array(value.ravel()), value.shape[1])
    return pa.array(value.tolist() if value.dtype.kind == "O" else value)


def write_parquet(
    url: str,
    batch: dict[str, np.ndarray],
    bands: tuple[str, ...] = DEFAULT_BANDS,
    row_group_size: int = 1024,
    metadata: dict[bytes, bytes] | None = None,
    pixels: str = "float32",
) -> None:
    """Write a batch as one Parquet shard, atomically (see :func:`storage.write_bytes_atomic`);
    ``metadata`` goes to the file's key-value metadata beside ``lensscan.bands``; ``pixels``:
    float32 or float16 (:func:`pixel_array`)."""
    table = batch_to_table(batch, bands, metadata, pixels)
    sink = pa.BufferOutputStream()
    # Noisy float pixels do not compress: store them plain so reads run at disk speed.
    compression = {c: ("none" if c == "image" else "zstd") for c in table.column_names}
    pq.write_table(table, sink, row_group_size=row_group_size, compression=compression,
                   use_dictionary=[c for c in table.column_names if c != "image"])
    storage.write_bytes_atomic(url, sink.getvalue().to_pybytes())


def write_table_atomic(url: str, table: pa.Table) -> None:
    """Write an Arrow table (scores, lists: no image column) as one zstd Parquet file,
    atomically (:func:`storage.write_bytes_atomic`)."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    storage.write_bytes_atomic(url, sink.getvalue().to_pybytes())
