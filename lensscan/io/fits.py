"""FITS cutouts: N-object shards (``CUTOUTS`` image HDU + ``OBJECTS`` table) and single cubes.

Remote files are opened through fsspec (``use_fsspec=True``) and row ranges are read with
``.section[...]``, so only the bytes of the requested cutouts travel. FITS data is big-endian;
everything returned is native float32.
"""

from __future__ import annotations

import io
import posixpath
import warnings
from dataclasses import dataclass

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyWarning

from lensscan.errors import ShardError, StorageError
from lensscan.io import storage
from lensscan.io.batch import CUTOUT_SHAPE, Batch, make_batch, whole_labels

DEFAULT_BANDS = ("g", "r", "i")


@dataclass(frozen=True)
class FitsInfo:
    """A FITS file's layout: a shard of ``num_rows`` objects or a single cube."""

    url: str
    num_rows: int
    is_shard: bool
    bands: tuple[str, ...]
    id_kind: str = "int"  # "int" or "string": the type of the object ids


#: Header keywords of scaled integer pixels, which astropy cannot memory-map.
SCALED = ("BSCALE", "BZERO", "BLANK")


def _open(url: str, memmap: bool = True) -> fits.HDUList:
    fs, path = storage.filesystem(url)
    with storage.failures_named(url, "read"):
        try:
            if storage.is_local(url):
                return fits.open(path, memmap=memmap and not path.endswith(".gz"),
                                 lazy_load_hdus=True)
            if path.endswith(".gz"):
                return fits.open(io.BytesIO(fs.cat_file(path)))
            return fits.open(storage.unstrip(fs, path), use_fsspec=True, lazy_load_hdus=True,
                             fsspec_kwargs=_fsspec_kwargs(url))
        except FileNotFoundError as exc:
            raise ShardError(url, "file not found") from exc
        except (OSError, ValueError, TypeError) as exc:
            if storage.is_storage_failure(exc):
                raise
            raise ShardError(url, f"not a readable FITS file ({str(exc)[:200]})") from exc


def _fsspec_kwargs(url: str) -> dict:
    fs, _ = storage.filesystem(url)
    return dict(fs.storage_options)


def _bands(header: fits.Header) -> tuple[str, ...]:
    raw = header.get("BANDS", ",".join(DEFAULT_BANDS))
    return tuple(str(raw).split(","))


def fits_info(url: str) -> FitsInfo:
    """Inspect a FITS file's headers (no pixel data is read).

    Raises
    ------
    ShardError
        When the file is truncated or is neither a shard (``CUTOUTS`` + ``OBJECTS``) nor a
        single (3, 64, 64) cube; ``rows`` is set when the headers say how many cutouts it holds.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)
        hdul = _open(url)
        try:
            names = [h.name for h in hdul]
            _check_complete(url, hdul)
            if "CUTOUTS" in names:
                return _shard_info(url, hdul, names)
            hdu = _first_image(url, hdul)
            oid = hdu.header.get("OBJECT_ID")
            kind = "int" if isinstance(oid, int) and not isinstance(oid, bool) else "string"
            return FitsInfo(url, 1, False, _bands(hdu.header), kind)
        except (OSError, ValueError, IndexError, KeyError) as exc:
            if storage.is_storage_failure(exc):
                raise StorageError(url, f"cannot read ({storage.short(exc)})") from exc
            raise ShardError(url, f"corrupt or truncated FITS file ({str(exc)[:200]})") from exc
        finally:
            hdul.close()


def _shape(header: fits.Header) -> tuple[int, ...]:
    """Array shape from NAXISn cards, slowest axis first (numpy order)."""
    return tuple(header.get(f"NAXIS{k}", 0) for k in range(header.get("NAXIS", 0), 0, -1))


def _check_complete(url: str, hdul: fits.HDUList) -> None:
    """Refuse a file shorter than its last header says (a cut-off download or copy)."""
    last = len(hdul) - 1
    info = hdul.fileinfo(last)
    size = getattr(info["file"], "size", None) if info else None
    if not size:
        return
    # the bytes on disk, without the padding to 2880 bytes (a file may lack it): .size, but a
    # tile-compressed image's .size is its decompressed size, so at most the padded span
    need = info["datLoc"] + min(hdul[last].size, info.get("datSpan", hdul[last].size))
    if need > size:
        shape = _shape(hdul["CUTOUTS"].header) if "CUTOUTS" in [h.name for h in hdul] else ()
        rows = shape[0] if len(shape) == 4 else None
        raise ShardError(url, f"truncated FITS file: {size} bytes, but HDU {hdul[last].name!r} "
                              f"ends at byte {need}", rows=rows)


def _shard_info(url: str, hdul: fits.HDUList, names: list[str]) -> FitsInfo:
    hdr = hdul["CUTOUTS"].header
    shape = _shape(hdr)
    rows = shape[0] if len(shape) == 4 else None
    if len(shape) != 4 or shape[1:] != CUTOUT_SHAPE:
        raise ShardError(url, f"CUTOUTS HDU has shape {shape}, expected (N, 3, 64, 64)", rows)
    if "OBJECTS" not in names:
        raise ShardError(url, f"FITS shard has a CUTOUTS HDU but no OBJECTS table (HDUs: "
                              f"{', '.join(names)})", rows)
    nobj = hdul["OBJECTS"].header.get("NAXIS2", -1)
    if nobj != shape[0]:
        raise ShardError(
            url, f"OBJECTS table has {nobj} rows but CUTOUTS holds {shape[0]} cutouts", rows
        )
    formats = {c.name.upper(): str(c.format) for c in hdul["OBJECTS"].columns}
    if "OBJECT_ID" not in formats:
        raise ShardError(url, f"OBJECTS table has no OBJECT_ID column (columns: "
                              f"{', '.join(formats)})", rows)
    kind = "int" if formats["OBJECT_ID"].lstrip("0123456789")[:1] in "BIJK" else "string"
    return FitsInfo(url, shape[0], True, _bands(hdr), kind)


def _first_image(url: str, hdul: fits.HDUList):
    for hdu in hdul:
        if hdu.is_image and hdu.header.get("NAXIS", 0) > 0:
            shape = _shape(hdu.header)
            if len(shape) == 4 and shape[1:] == CUTOUT_SHAPE:
                raise ShardError(url, f"image HDU {hdu.name!r} holds {shape[0]} cutouts "
                                      f"{shape}: a FITS shard needs them in an image HDU named "
                                      "CUTOUTS and their ids in a table named OBJECTS (HDUs "
                                      f"here: {', '.join(h.name for h in hdul)})", shape[0])
            if shape != CUTOUT_SHAPE:
                raise ShardError(url, f"image HDU has shape {shape}, expected {CUTOUT_SHAPE} "
                                      f"(HDU {hdu.name!r}; an N-cutout shard needs HDUs "
                                      "CUTOUTS and OBJECTS)")
            return hdu
    raise ShardError(url, "no image HDU with data")


def read_fits(url: str, start: int = 0, stop: int | None = None) -> Batch:
    """Read rows ``[start, stop)`` of a FITS shard, or the one cutout of a cube file, as a
    checked batch (:mod:`lensscan.io.batch`)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)
        hdul = _open(url)
        if any(k in h.header for h in hdul if h.is_image for k in SCALED):
            hdul.close()  # scaled integers (BSCALE/BZERO, unsigned 16-bit too): not mapped
            hdul = _open(url, memmap=False)
        try:
            if "CUTOUTS" in [h.name for h in hdul]:
                return _read_shard(url, hdul, start, stop)
            return _read_cube(url, hdul)
        except ShardError:
            raise
        except (OSError, ValueError, IndexError, KeyError, TypeError, EOFError) as exc:
            if storage.is_storage_failure(exc):
                raise StorageError(url, f"cannot read ({storage.short(exc)})") from exc
            raise ShardError(url, f"corrupt or truncated FITS file ({str(exc)[:200]})") from exc
        finally:
            hdul.close()


def _read_shard(url: str, hdul: fits.HDUList, start: int, stop: int | None) -> Batch:
    cut = hdul["CUTOUTS"]
    n_all = cut.header["NAXIS4"]
    stop = n_all if stop is None else min(stop, n_all)
    images = np.asarray(cut.section[start:stop], dtype=np.float32)  # (N, 3, 64, 64), native
    table = hdul["OBJECTS"].data[start:stop]
    cols = {c.upper(): c for c in table.columns.names}
    if "OBJECT_ID" not in cols:
        raise ShardError(url, "OBJECTS table has no OBJECT_ID column")
    raw_ids = np.asarray(table[cols["OBJECT_ID"]])
    if raw_ids.dtype == np.uint64 and len(raw_ids) and raw_ids.max() > np.iinfo(np.int64).max:
        raise ShardError(url, "OBJECTS.OBJECT_ID holds unsigned ids above 2**63 - 1, which the "
                              "int64 ids of the output cannot carry; store them as strings")
    if raw_ids.dtype.kind in "iu":
        ids, id_null = raw_ids, None
    else:
        ids = np.array([str(v).strip() for v in raw_ids], dtype=object)
        id_null = ids == ""
    ra, dec, label = (np.asarray(table[cols[name]]) if name in cols else None
                      for name in ("RA", "DEC", "LABEL"))
    return make_batch(ids, images, start, ra=_numbers(url, "RA", ra),
                      dec=_numbers(url, "DEC", dec), label=_labels(url, label, start),
                      id_null=id_null)


def _numbers(url: str, name: str, values: np.ndarray | None) -> np.ndarray | None:
    """Degrees as float64, or one line naming the column (as Parquet shards are told)."""
    if values is None:
        return None
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ShardError(url, f"column {name!r} must hold degrees as numbers, not "
                              f"{values.dtype} (convert sexagesimal coordinates first)") from None


def _labels(url: str, values, start: int = 0) -> np.ndarray | None:
    """Labels as int8, refusing (as Parquet's cast does) a value that int8 cannot hold exactly:
    a label of 300 or 0.7 is no class, and casting would make it one."""
    if values is None:
        return None
    try:
        raw = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ShardError(url, f"LABEL holds {np.asarray(values).dtype} values, not classes "
                              "(1 lens, 0 not a lens, -1 unknown)") from None
    return whole_labels(url, raw, start, "LABEL")


def _read_cube(url: str, hdul: fits.HDUList) -> Batch:
    hdu = _first_image(url, hdul)
    image = np.asarray(hdu.data, dtype=np.float32)[None]  # (1, 3, 64, 64)
    hdr = hdu.header
    stem = posixpath.basename(url.rstrip("/")).split(".")[0]
    oid = hdr.get("OBJECT_ID", stem)
    ids = np.array([oid], dtype=np.int64 if isinstance(oid, int) else object)
    label = _labels(url, [hdr["LABEL"]]) if "LABEL" in hdr else None
    return make_batch(ids, image, ra=_numbers(url, "RA", [hdr.get("RA", np.nan)]),
                      dec=_numbers(url, "DEC", [hdr.get("DEC", np.nan)]), label=label)


def write_fits(url: str, batch: dict[str, np.ndarray],
               bands: tuple[str, ...] = DEFAULT_BANDS) -> None:
    """Write a batch as a FITS shard (``CUTOUTS`` + ``OBJECTS``), atomically."""
    images = np.ascontiguousarray(batch["image"], dtype=np.float32)
    if images.shape[1:] != CUTOUT_SHAPE:
        raise ValueError(f"image batch must be (N, 3, 64, 64), got {images.shape}")
    n = len(images)
    cut = fits.ImageHDU(images, name="CUTOUTS")
    cut.header["BANDS"] = ",".join(bands)
    ids = np.asarray(batch["object_id"])
    cols = [
        fits.Column("OBJECT_ID", format="K" if ids.dtype.kind in "iu" else
                    f"{max(1, max(len(str(v)) for v in ids))}A",
                    array=ids if ids.dtype.kind in "iu" else np.array([str(v) for v in ids])),
        fits.Column("RA", format="D", unit="deg",
                    array=np.asarray(batch.get("ra", np.full(n, np.nan)))),
        fits.Column("DEC", format="D", unit="deg",
                    array=np.asarray(batch.get("dec", np.full(n, np.nan)))),
    ]
    if "label" in batch:
        # 16-bit signed: -1 (unknown) stays -1 (an unsigned byte wrote 255, refused on reading)
        cols.append(fits.Column("LABEL", format="I", array=np.asarray(batch["label"], np.int16)))
    table = fits.BinTableHDU.from_columns(cols, name="OBJECTS")
    buf = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), cut, table]).writeto(buf)
    storage.write_bytes_atomic(url, buf.getvalue())


def write_fits_cube(url: str, image: np.ndarray, object_id: int | str, ra: float | None = None,
                    dec: float | None = None, bands: tuple[str, ...] = DEFAULT_BANDS) -> None:
    """Write one (3, 64, 64) cutout as a single-object FITS file, the way cutout services do."""
    hdu = fits.PrimaryHDU(np.asarray(image, dtype=np.float32))
    with warnings.catch_warnings():  # OBJECT_ID is longer than 8 characters: a HIERARCH card
        warnings.simplefilter("ignore", AstropyWarning)
        hdu.header["OBJECT_ID"] = object_id
    hdu.header["BANDS"] = ",".join(bands)
    if ra is not None and dec is not None:
        hdu.header["RA"], hdu.header["DEC"] = float(ra), float(dec)
    buf = io.BytesIO()
    hdu.writeto(buf)
    storage.write_bytes_atomic(url, buf.getvalue())
