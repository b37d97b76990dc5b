"""Object catalogues (CSV, Parquet, FITS or VOTable) as id and position columns.

A catalogue names the objects to cut out: an id, a right ascension and a declination in degrees,
under any column names (``id_col``, ``ra_col``, ``dec_col``; matched case-insensitively). An
optional per-band PSF FWHM (arcsec) travels with each object: an array column ``psf_fwhm`` or one
column ``psf_fwhm_<band>`` per band. FITS tables are big-endian; every array returned is native.
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from lensscan.io import storage

#: File name endings of each catalogue format (after an optional ``.gz``).
FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".fits": "fits",
           ".fit": "fits", ".fits.gz": "fits", ".xml": "votable", ".vot": "votable",
           ".votable": "votable"}


@dataclass(frozen=True)
class Columns:
    """Which catalogue columns hold the id and the position (case-insensitive)."""

    id: str = "object_id"
    ra: str = "ra"  # degrees
    dec: str = "dec"  # degrees


def catalog_format(url: str) -> str:
    """``csv``, ``parquet``, ``fits`` or ``votable`` from the file name."""
    low = url.lower()
    for suffix in sorted(FORMATS, key=len, reverse=True):
        if low.endswith(suffix):
            return FORMATS[suffix]
    raise ValueError(f"{url}: a catalogue must be .csv, .parquet, .fits or a VOTable (.xml, .vot)")


def read_table(url: str, text: str | None = None) -> dict[str, np.ndarray]:
    """Every column of a catalogue file, keyed by its lower-cased name (native byte order;
    text as ``str`` objects; an array column as a 2-D array). ``text``: a column of a CSV file
    to read as text, as typed (lower-cased name).

    Raises
    ------
    ValueError
        When the file cannot be parsed as its format, or two columns share a name up to case,
        naming the file."""
    fmt = catalog_format(url)
    data = storage.read_bytes(url)
    try:
        table = _parse(url, fmt, data, text)
    except (pa.ArrowException, OSError, ValueError, TypeError, KeyError, IndexError) as exc:
        if isinstance(exc, FileNotFoundError) or str(exc).startswith(f"{url}:"):
            raise
        raise ValueError(f"{url}: not a readable {fmt} catalogue "
                         f"({(str(exc).splitlines() or [type(exc).__name__])[0][:200]})") from None
    return table


def _parse(url: str, fmt: str, data: bytes, text: str | None) -> dict[str, np.ndarray]:
    if fmt == "csv":
        import pyarrow.csv as pacsv

        types = {}
        if text:
            names = pacsv.open_csv(pa.BufferReader(data)).schema.names
            types = {n: pa.binary() for n in names if n.lower() == text}  # text: UTF-8 checked
        return _from_arrow(url, pacsv.read_csv(
            pa.BufferReader(data), convert_options=pacsv.ConvertOptions(column_types=types)))
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return _from_arrow(url, pq.read_table(pa.BufferReader(data)))
    from astropy.table import Table

    table = Table.read(io.BytesIO(data), format="fits" if fmt == "fits" else "votable")
    # a masked column (FITS TNULL, VOTable null) keeps its mask: a null id is no id
    return _ambiguous({name.lower(): _astropy_column(table[name]) for name in table.colnames},
                      table.colnames)


def _astropy_column(col) -> np.ndarray | Unusable:
    """A FITS or VOTable column as :func:`_native` gives it; text that is not UTF-8 makes the
    column :class:`Unusable` (refused only if it is used), not the catalogue."""
    try:
        return _native(col if isinstance(col, np.ma.MaskedArray) else np.asarray(col))
    except UnicodeDecodeError as exc:
        return Unusable(f"text that is not UTF-8 ({exc.reason} at byte {exc.start})")


@dataclass(frozen=True)
class Unusable:
    """A column of a :func:`read_table` result that cannot be used, and why (refused only
    where it is used: a catalogue may carry columns lensscan never reads)."""

    reason: str


def _ambiguous(table: dict, names: list[str]) -> dict:
    """``table`` with each name that two columns share up to case (``Z`` and ``z``) marked
    :class:`Unusable`: which is meant cannot be told."""
    lower = [n.lower() for n in names]
    return {k: (Unusable(f"two columns are named {k!r} up to case; rename one")
                if lower.count(k) > 1 else v) for k, v in table.items()}


def column(url: str, table: dict, name: str) -> np.ndarray:
    """Column ``name`` (any case) of a :func:`read_table` result, refused in one line when
    missing or :class:`Unusable`."""
    key = name.lower()
    if key not in table:
        raise ValueError(f"{url}: no column {name!r} (columns: {sorted(table)})")
    if isinstance(table[key], Unusable):
        raise ValueError(f"{url}: column {name!r}: {table[key].reason}")
    return table[key]


def _from_arrow(url: str, table: pa.Table) -> dict[str, np.ndarray]:
    out = {}
    for name, col in zip(table.column_names, table.columns, strict=True):
        typ = col.type
        if pa.types.is_binary(typ) or pa.types.is_large_binary(typ):  # text, unless not UTF-8
            values = col.to_pylist()
            bad = [i for i, v in enumerate(values) if v is not None and not _is_utf8(v)]
            out[name.lower()] = (Unusable(f"row {bad[0] + 1} is not UTF-8 text") if bad else
                                 np.asarray([v if v is None else v.decode() for v in values],
                                            dtype=object))
        elif pa.types.is_fixed_size_list(typ) or pa.types.is_list(typ):
            out[name.lower()] = np.asarray(col.to_pylist(), dtype=float)
        elif pa.types.is_string(typ) or pa.types.is_large_string(typ):
            out[name.lower()] = np.asarray(col.to_pylist(), dtype=object)
        else:
            out[name.lower()] = _native(col.to_numpy(zero_copy_only=False))
    return _ambiguous(out, table.column_names)


def _is_utf8(value: bytes) -> bool:
    try:
        value.decode()
    except UnicodeDecodeError:
        return False
    return True


def _native(values: np.ndarray) -> np.ndarray:
    """Native byte order; bytes decoded to ``str``; masked entries as NaN (floats) or None."""
    mask = np.ma.getmaskarray(values) if np.ma.isMaskedArray(values) else None
    values = np.asarray(np.ma.getdata(values))
    if values.dtype.kind in "SU":
        text = values.astype(str) if values.dtype.kind == "U" else np.char.decode(values, "utf-8")
        values = np.asarray([s.strip() for s in text.ravel()], dtype=object).reshape(values.shape)
    elif values.dtype.kind in "iuf" and not values.dtype.isnative:
        values = values.astype(values.dtype.newbyteorder("="))
    if mask is None or not mask.any():
        return values
    if values.dtype.kind == "f":
        return np.where(mask, np.nan, values)
    out = values.astype(object)
    out[mask] = None
    return out


def read_catalog(url: str, cols: Columns | None = None,
                 bands: tuple[str, ...] = ("g", "r", "i")) -> dict[str, np.ndarray]:
    """Read a catalogue of objects to cut out.

    Parameters
    ----------
    url : str
        CSV, Parquet, FITS or VOTable file (local or object storage).
    cols : Columns
        The names of the id, RA and Dec columns.
    bands : tuple of str
        Band names, for per-band ``psf_fwhm_<band>`` columns.

    Returns
    -------
    dict
        ``object_id`` (N,) int64 or ``str`` objects, ``ra`` and ``dec`` (N,) float64 degrees (NaN
        where missing), and ``psf_fwhm`` (N, len(bands)) float32 arcsec when the file has it.

    Raises
    ------
    ValueError
        When a column is missing, an id is missing or repeated, or coordinates are not numbers.
    """
    cols = cols or Columns()
    csv = catalog_format(url) == "csv"
    # a CSV's ids are read as typed: 007 is not 7, and ids beyond int64 are not floats
    table = read_table(url, text=cols.id.lower() if csv else None)
    for want in (cols.id, cols.ra, cols.dec):
        if np.ndim(column(url, table, want)) != 1:
            raise ValueError(f"{url}: column {want!r} holds arrays; it must hold one value a row")
    raw = column(url, table, cols.id)
    ids = _ids(url, _as_integers(raw) if csv else raw, cols.id)
    out = {"object_id": ids}
    for key, name in (("ra", cols.ra), ("dec", cols.dec)):
        try:
            out[key] = np.asarray(column(url, table, name), dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{url}: column {name!r} must hold numbers (degrees)") from exc
    psf = _psf_fwhm(url, table, bands)
    if psf is not None:
        out["psf_fwhm"] = psf
    return out


_INT64 = re.compile(r"0|-?[1-9][0-9]{0,18}")


def _as_integers(text: np.ndarray) -> np.ndarray:
    """CSV ids read as text (trimmed), as int64 when every one is an integer written the plain
    way (no leading zeros, no ``+`` or ``-0``, within int64): ids like ``007`` stay text, as
    typed."""
    values = [v.strip() if isinstance(v, str) else v for v in text.tolist()]
    kept = np.asarray(values, dtype=object)
    if not values or not all(isinstance(v, str) and _INT64.fullmatch(v) for v in values):
        return kept
    big = [int(v) for v in values]
    if any(not -2**63 <= v < 2**63 for v in big):
        return kept
    return np.asarray(big, np.int64)


def _ids(url: str, raw: np.ndarray, name: str) -> np.ndarray:
    if raw.dtype.kind == "u" and len(raw) and raw.max() > np.iinfo(np.int64).max:
        row = int(np.argmax(raw > np.iinfo(np.int64).max))
        raise ValueError(f"{url}: column {name!r} row {row + 1} holds the unsigned id "
                         f"{int(raw[row])}, beyond 2**63 - 1: lensscan keeps ids as int64 or "
                         "text (store them as text)")
    if raw.dtype.kind == "f":
        raise ValueError(f"{url}: column {name!r} holds floating-point numbers: object ids are "
                         "integers or text (a float cannot hold every 64-bit id exactly)")
    if raw.dtype.kind in "iu":
        ids = raw.astype(np.int64)
    else:
        if any(v is None or (isinstance(v, float) and np.isnan(v)) or str(v) == ""
               for v in raw):
            raise ValueError(f"{url}: object ids must not be empty")
        ids = np.asarray([str(v) for v in raw], dtype=object)
    uniq, counts = np.unique(ids.astype(str) if ids.dtype.kind == "O" else ids, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"{url}: object id {uniq[counts > 1][0].item()!r} appears "
                         f"{int(counts[counts > 1][0])} times; ids must be unique")
    return ids


def _psf_fwhm(url: str, table: dict[str, np.ndarray], bands: tuple[str, ...]
              ) -> np.ndarray | None:
    if "psf_fwhm" in table and np.ndim(column(url, table, "psf_fwhm")) == 2:
        psf = np.asarray(table["psf_fwhm"], dtype=np.float64)
        if psf.shape[1] != len(bands):
            raise ValueError(f"{url}: column 'psf_fwhm' holds {psf.shape[1]} values a row; "
                             f"give one per band ({', '.join(bands)})")
        return _float32_psf(url, psf, "psf_fwhm")
    names = [f"psf_fwhm_{b.lower()}" for b in bands]
    if all(n in table for n in names):
        cols = [column(url, table, n) for n in names]
        try:
            psf = np.stack([np.asarray(c, dtype=np.float64) for c in cols], axis=1)
        except (TypeError, ValueError):
            raise ValueError(f"{url}: columns {names} must hold numbers (FWHM in arcsec)"
                             ) from None
        return _float32_psf(url, psf, "psf_fwhm_<band>")
    return None


def _float32_psf(url: str, psf: np.ndarray, name: str) -> np.ndarray:
    """The FWHMs as float32; a value beyond float32's range (1e300: no seeing) is kept as
    unknown (NaN), with a warning naming its row, rather than as infinity."""
    with np.errstate(over="ignore"):
        out = psf.astype(np.float32)
    huge = np.isfinite(psf) & ~np.isfinite(out)
    if huge.any():
        row, band = np.argwhere(huge)[0]
        warnings.warn(f"{url}: {int(huge.any(axis=1).sum())} rows' {name} values are beyond "
                      f"float32 (first: row {row + 1}, {psf[row, band]:g}); kept as unknown",
                      stacklevel=3)
        out[huge] = np.nan
    return out
