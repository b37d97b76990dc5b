"""A shard's Arrow columns as a checked batch (:mod:`lensscan.io.batch`): the image column
decoded to ``(N, 3, 64, 64)`` in one vectorised copy at most, ids, coordinates, labels and the
carried columns converted, and every column that cannot be converted named in a
:class:`ShardError` (its unit is quarantined with that reason)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lensscan.errors import ShardError
from lensscan.io.batch import COLUMNS, CUTOUT_SHAPE, Batch, make_batch, whole_labels

NPIX = int(np.prod(CUTOUT_SHAPE))


def image_storage_type(url: str, typ: pa.DataType) -> pa.DataType:
    if isinstance(typ, pa.FixedShapeTensorType):
        if tuple(typ.shape) != CUTOUT_SHAPE:
            raise ShardError(
                url, f"column 'image' has tensor shape {tuple(typ.shape)}, expected {CUTOUT_SHAPE}"
            )
        typ = typ.storage_type
    if not pa.types.is_fixed_size_list(typ):
        raise ShardError(
            url, f"column 'image' must be a fixed-shape tensor or fixed-size list, not {typ}"
        )
    if typ.list_size != NPIX:
        raise ShardError(
            url,
            f"column 'image' holds {typ.list_size} values per row, expected {NPIX} "
            f"(3 bands x 64 x 64)",
        )
    if typ.value_type not in (pa.float32(), pa.float16(), pa.float64()):
        raise ShardError(url, f"column 'image' values must be float32/float16, "
                              f"not {typ.value_type}")
    return typ


def decode_images(url: str, column: pa.ChunkedArray | pa.Array, half: bool = False
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Decode an image column to float32 ``(N, 3, 64, 64)`` (float16 pixels stay float16 with
    ``half``) plus a null mask and, when some pixels are null, each row's count of null pixels
    (None when none is; null pixels are decoded as 0 and the row is quarantined for them).

    The conversion is one vectorised copy at most (none for a float32 column, or a float16 one
    with ``half``, without nulls in a single chunk: a view of Arrow's buffer).
    """
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if isinstance(column, pa.ExtensionArray):
        column = column.storage
    image_storage_type(url, column.type)
    n = len(column)
    values = column.values.slice(column.offset * NPIX, n * NPIX)
    null = np.asarray(column.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    pixel_nulls = None
    if values.null_count:
        missing = np.asarray(values.is_null().to_numpy(zero_copy_only=False), dtype=bool)
        pixel_nulls = np.where(null, 0, missing.reshape(n, NPIX).sum(axis=1))
        values = values.fill_null(0)
    flat = values.to_numpy(zero_copy_only=False)
    images = flat.reshape((n, *CUTOUT_SHAPE))
    if images.dtype != np.float32 and not (half and images.dtype == np.float16):
        images = images.astype(np.float32)
    return images, null, pixel_nulls


def table_to_batch(url: str, table: pa.Table, row_offset: int = 0,
                   images: np.ndarray | None = None, half: bool = False) -> Batch:
    """Turn a shard table into a checked batch (see :func:`read_parquet`); ``images`` are the
    already decoded image column when the table lacks it.

    Raises
    ------
    ShardError
        When a column cannot be read as what it must hold (``ra`` as degrees, ``label`` as a
        class): the unit is quarantined with that reason.
    """
    image_null = pixel_nulls = None
    if images is None:
        images, image_null, pixel_nulls = decode_images(url, table.column("image"), half)
    ids_col = table.column("object_id")
    id_null = np.asarray(ids_col.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    if ids_col.type == pa.uint64() and len(ids_col) and \
            (pc.max(ids_col).as_py() or 0) > np.iinfo(np.int64).max:
        raise ShardError(url, "column 'object_id' holds uint64 ids above 2**63 - 1, which the "
                              "int64 ids of the output cannot carry; store them as strings")
    with _column_named(url, "object_id"):  # e.g. text that is not UTF-8
        if pa.types.is_integer(ids_col.type) and not id_null.any():
            ids = ids_col.to_numpy()
        else:  # strings, or integers with nulls: Python objects, None where null (never 0)
            ids = np.asarray(ids_col.to_pylist(), dtype=object)
    names = table.column_names
    with _column_named(url, "ra"):
        ra = table.column("ra").cast(pa.float64()).fill_null(np.nan).to_numpy() \
            if "ra" in names else None
    with _column_named(url, "dec"):
        dec = table.column("dec").cast(pa.float64()).fill_null(np.nan).to_numpy() \
            if "dec" in names else None
    with _column_named(url, "label"):
        label = (_labels(url, table.column("label"), row_offset)
                 if "label" in names else None)
    extra = {}
    for c in names:
        if c not in COLUMNS:
            with _column_named(url, c):
                extra[c] = extra_column(table.column(c))
    return make_batch(ids, images, row_offset, ra=ra, dec=dec, label=label,
                      image_null=image_null, id_null=id_null, extra=extra,
                      pixel_nulls=pixel_nulls)


def _labels(url: str, col: pa.ChunkedArray, row_offset: int) -> np.ndarray:
    """The label column as int8, null and NaN as -1 (unknown); a float that is no whole number
    (0.7) or a value int8 cannot hold is refused naming its row, as FITS labels are."""
    if not pa.types.is_floating(col.type):
        return col.cast(pa.int8()).fill_null(-1).to_numpy()
    values = col.to_numpy(zero_copy_only=False).astype(np.float64)  # nulls: NaN
    return whole_labels(url, np.where(np.isnan(values), -1.0, values), row_offset,
                        "column 'label'")


@contextlib.contextmanager
def _column_named(url: str, name: str) -> Iterator[None]:
    """A column that Arrow cannot convert becomes a :class:`ShardError` naming it."""
    try:
        yield
    except (pa.ArrowException, ValueError, TypeError) as exc:
        raise ShardError(url, f"column {name!r} cannot be read ({str(exc)[:200]})") from None


def extra_column(col: pa.ChunkedArray) -> np.ndarray:
    """A carried column as numpy; a fixed-size list (e.g. ``psf_fwhm``) as a 2-D array, a null
    list as a row of NaN (of None for a non-float list)."""
    if pa.types.is_fixed_size_list(col.type):
        flat = col.combine_chunks()
        size = col.type.list_size
        values = flat.values.slice(flat.offset * size, len(flat) * size)
        out = values.to_numpy(zero_copy_only=False).reshape(len(flat), size)
        if flat.null_count:
            nulls = np.asarray(flat.is_null().to_numpy(zero_copy_only=False), dtype=bool)
            out = out.astype(np.float64 if out.dtype.kind in "fiu" else object)
            out[nulls] = np.nan if out.dtype.kind == "f" else None
        return out
    return col.to_numpy(zero_copy_only=False)
