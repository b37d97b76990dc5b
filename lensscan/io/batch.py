"""The checked batch: what every shard reader returns, and the status of each of its rows.

A batch is a ``dict[str, np.ndarray]`` with one row per cutout and the columns of
:data:`DTYPES`, in that order (``label`` only when the file has labels), followed by the file's
other columns as they are (e.g. simulation truth). Readers never drop a row: each row gets a
status, ``"ok"`` or the reason it must be quarantined, so that later stages can count it.
Whole-file problems raise :class:`lensscan.errors.ShardError`; the rows of a file that cannot be
read at all are :func:`quarantine_batch` rows.
"""

from __future__ import annotations

import numpy as np

from lensscan.errors import ShardError

#: Shape of one cutout: (band, y, x).
CUTOUT_SHAPE = (3, 64, 64)
#: A batch: column name -> one value per row.
Batch = dict[str, np.ndarray]
#: Columns of a checked batch and the dtypes each may have, in order. ``object_id``: int64, or
#: object (str; int or None when some ids are null); ``image``: (N, 3, 64, 64) float32, float16
#: when a reader is asked to keep float16 pixels; ``label``: -1 when unknown; ``row``: index of
#: the row in its shard; ``status``: ``"ok"`` or the quarantine reason.
DTYPES: dict[str, tuple[np.dtype, ...]] = {
    "object_id": (np.dtype(np.int64), np.dtype(object)),
    "ra": (np.dtype(np.float64),),  # degrees, NaN when null
    "dec": (np.dtype(np.float64),),  # degrees, NaN when null
    "label": (np.dtype(np.int8),),
    "image": (np.dtype(np.float32), np.dtype(np.float16)),
    "row": (np.dtype(np.int64),),
    "status": (np.dtype(object),),
}
COLUMNS = tuple(DTYPES)
OK = "ok"
MISSING_ID = "missing_object_id"
UNREADABLE = "unreadable"
DUPLICATE_ID = "duplicate_object_id"
#: Status of a row whose pixels overflow float32 in the preprocessing (e.g. values near 3e38).
NON_FINITE_INPUT = ("non_finite_input: pixel values overflow float32 in the preprocessing "
                    "(sky subtraction and noise scaling)")


def ok_mask(status: np.ndarray) -> np.ndarray:
    """Rows whose status is ``ok``."""
    return np.asarray(status, dtype=object) == OK


def left_out(status: np.ndarray) -> dict[str, int]:
    """The rows of ``status`` that are not ``ok``, counted by reason (the part before ``:``),
    most frequent first."""
    status = np.asarray(status, dtype=object)
    reasons, counts = np.unique([str(s).split(":", 1)[0] for s in status[status != OK]],
                                return_counts=True)
    return {str(reasons[i]): int(counts[i]) for i in np.argsort(-counts, kind="stable")}


def skipped_note(status: np.ndarray, what: str) -> str | None:
    """One line saying how many of the rows of ``status`` are not ``ok``, by reason (the part
    before ``:``), for a step that leaves them out (``what``: which); None when all are ok."""
    status = np.asarray(status, dtype=object)
    bad = status[status != OK]
    if not len(bad):
        return None
    detail = ", ".join(f"{n} {reason}" for reason, n in list(left_out(status).items())[:5])
    first = next((str(s) for s in bad if str(s).startswith(UNREADABLE)), str(bad[0]))
    return (f"{what}: {len(bad)} of {len(status)} rows left out, not ok ({detail}; first: "
            f"{first[:200]})")


def flag_non_finite(finite: np.ndarray, status: np.ndarray) -> np.ndarray:
    """Quarantine the ``ok`` rows whose model input is not finite (``finite`` False): the model
    cannot give them a score. Changes ``status`` in place; returns the rows flagged."""
    bad = ~np.asarray(finite, bool) & ok_mask(status)
    status[bad] = NON_FINITE_INPUT
    return bad


def id_is_null(status: np.ndarray) -> np.ndarray:
    """Rows whose status says their object id is missing or could not be read."""
    s = np.asarray(status, dtype=object).astype(str)
    return np.char.startswith(s, MISSING_ID) | np.char.startswith(s, UNREADABLE + ":")


def off_sky(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """Per row, True when (ra, dec) is not a sky position: RA outside [0, 360) or Dec outside
    [-90, 90] degrees, or infinite (null coordinates, NaN, are allowed)."""
    ra, dec = np.asarray(ra, np.float64), np.asarray(dec, np.float64)
    with np.errstate(invalid="ignore"):
        bad = (ra < 0) | (ra >= 360) | ~(np.isnan(ra) | np.isfinite(ra))
        return bad | (dec < -90) | (dec > 90) | ~(np.isnan(dec) | np.isfinite(dec))


def coordinate_problems(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """Per row, ``""`` or why (ra, dec) is not a sky position (:func:`off_sky`)."""
    ra, dec = np.asarray(ra, np.float64), np.asarray(dec, np.float64)
    bad = off_sky(ra, dec)
    out = np.full(len(ra), "", dtype=object)
    for i in np.flatnonzero(bad):
        out[i] = (f"invalid_coordinates: ra {ra[i]:g}, dec {dec[i]:g} outside "
                  "[0, 360) x [-90, 90] degrees")
    return out


def _pixel_problems(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of (N, K) pixels: how many are NaN/inf, and whether all are 0. float16 rows are
    checked on their bits (exponent all ones: not finite; all bits but the sign 0: zero), which
    numpy does at integer speed where its float16 arithmetic is emulated."""
    n = len(flat)
    if flat.dtype == np.float16:
        bits = flat.view(np.uint16)
        bad_count = ((bits & 0x7C00) == 0x7C00).sum(axis=1)
        return bad_count, ~((bits & 0x7FFF) != 0).any(axis=1)
    with np.errstate(over="ignore", invalid="ignore"):
        suspect = ~np.isfinite(flat.sum(axis=1))  # NaN/inf propagate (overflow only adds work)
    bad_count = np.zeros(n, np.int64)
    for i in np.flatnonzero(suspect):
        bad_count[i] = int((~np.isfinite(flat[i])).sum())
    return bad_count, ~flat.any(axis=1)


def row_status(
    images: np.ndarray,
    object_ids: np.ndarray,
    image_null: np.ndarray | None = None,
    id_null: np.ndarray | None = None,
    ra: np.ndarray | None = None,
    dec: np.ndarray | None = None,
    pixel_nulls: np.ndarray | None = None,
) -> np.ndarray:
    """Status of every row of a decoded batch, from its own values (repeated ids are a
    scoring run's to flag, among the rows it scored).

    Parameters
    ----------
    images : ndarray, float32 or float16, shape (N, 3, 64, 64)
        Decoded cutouts (null rows hold zeros).
    object_ids : ndarray, shape (N,)
        Object ids (int64 or str).
    image_null, id_null : ndarray of bool, shape (N,), optional
        Rows whose image or id was null in the file.
    ra, dec : ndarray of float, shape (N,), optional
        Coordinates in degrees (NaN when null); positions off the sky are quarantined.
    pixel_nulls : ndarray of int, shape (N,), optional
        Per row, how many pixels were null in the file (decoded as 0).

    Returns
    -------
    ndarray of object (str), shape (N,)
        ``"ok"`` or a reason such as ``"non_finite_pixels: 12 NaN/inf values"``.
    """
    n = len(images)
    status = np.full(n, OK, dtype=object)
    if n == 0:
        return status
    bad_count, zero = _pixel_problems(images.reshape(n, -1))
    for i in np.flatnonzero(bad_count):
        status[i] = f"non_finite_pixels: {bad_count[i]} NaN/inf values"
    status[zero & (bad_count == 0)] = "all_zero: every pixel is 0"
    if pixel_nulls is not None:
        for i in np.flatnonzero(pixel_nulls):
            status[i] = f"null_pixels: {pixel_nulls[i]} null values"
    if image_null is not None:
        status[image_null] = "null_image"
    if ra is not None and dec is not None:
        coords = coordinate_problems(ra, dec)
        status[coords != ""] = coords[coords != ""]
    if id_null is not None:
        status[id_null] = MISSING_ID
    # an id repeated is not flagged here: a scoring run flags the later copies among the rows
    # it scored (lensscan.score.duplicates), so a copy quarantined later for its pixels (its
    # model input overflowing) never costs a good copy its score
    return status


def make_batch(
    object_id: np.ndarray,
    image: np.ndarray,
    row_start: int = 0,
    *,
    ra: np.ndarray | None = None,
    dec: np.ndarray | None = None,
    label: np.ndarray | None = None,
    image_null: np.ndarray | None = None,
    id_null: np.ndarray | None = None,
    extra: Batch | None = None,
    pixel_nulls: np.ndarray | None = None,
) -> Batch:
    """A checked batch of decoded rows, their status computed by :func:`row_status`.

    Parameters
    ----------
    object_id : ndarray, shape (N,)
        Ids: integers (stored int64) or anything else (stored as object: str, or int/None
        when some ids are null).
    image : ndarray, shape (N, 3, 64, 64)
        Decoded cutouts (float16 stays float16, anything else becomes float32).
    row_start : int
        Index in the shard of the first row.
    ra, dec : ndarray of float, shape (N,), optional
        Degrees, NaN when null (all NaN when not given).
    label : ndarray of int, shape (N,), optional
        1 lens, 0 not a lens, -1 unknown; the column is left out when not given.
    image_null, id_null : ndarray of bool, shape (N,), optional
        Rows whose image or id was null in the file.
    extra : dict, optional
        The file's other columns (none of :data:`COLUMNS`), carried as they are after the
        batch's own columns.
    pixel_nulls : ndarray of int, shape (N,), optional
        Per row, the pixels that were null in the file.
    """
    ids = np.asarray(object_id)
    ids = ids.astype(np.int64 if ids.dtype.kind in "iu" else object)
    image = np.asarray(image)
    if image.dtype != np.float16:
        image = image.astype(np.float32, copy=False)
    n = len(ids)
    batch: Batch = {"object_id": ids, "ra": _degrees(ra, n), "dec": _degrees(dec, n)}
    if label is not None:
        label = np.asarray(label)
        if label.size and (label.min() < -128 or label.max() > 127):  # int8 would wrap it
            raise ValueError(f"label {label.max() if label.max() > 127 else label.min()} is "
                             "not a class (1 lens, 0 not a lens, -1 unknown)")
        batch["label"] = label.astype(np.int8, copy=False)
    batch["image"] = image
    batch["row"] = np.arange(row_start, row_start + n, dtype=np.int64)
    batch["status"] = row_status(image, ids, image_null, id_null, batch["ra"], batch["dec"],
                                 pixel_nulls)
    batch.update(extra or {})
    return batch


def whole_labels(url: str, raw: np.ndarray, start: int, column: str) -> np.ndarray:
    """Labels read as float64 (``raw``) as int8, refusing a value that int8 cannot hold
    exactly, naming its row: a label of 300 or 0.7 is no class, and casting would make it
    one. ``column`` names the column in the message (``LABEL``, ``column 'label'``)."""
    bad = np.flatnonzero(~np.isfinite(raw) | (raw != np.round(raw)) | (raw < -128) | (raw > 127))
    if len(bad):
        i = int(bad[0])
        raise ShardError(url, f"{column} of row {start + i} (0-based) is {raw[i]:g}, not a "
                              "class (1 lens, 0 not a lens, -1 unknown)")
    return raw.astype(np.int8)


def flag_labels(batch: Batch) -> Batch:
    """``batch`` with the rows whose label is no class (1 lens, 0 not a lens, -1 unknown)
    quarantined as ``invalid_label``: a 2 was counted as a lens by evaluation and left
    unsampled by training. For the readers of labelled data only: scoring keeps such rows."""
    bad = np.flatnonzero(~np.isin(batch["label"], (-1, 0, 1)) & ok_mask(batch["status"]))
    if not len(bad):
        return batch
    status = np.asarray(batch["status"], dtype=object).copy()
    for i in bad:
        status[i] = (f"invalid_label: {int(batch['label'][i])} is not a class (1 lens, 0 not a "
                     "lens, -1 unknown)")
    return {**batch, "status": status}


def _degrees(values: np.ndarray | None, n: int) -> np.ndarray:
    return np.full(n, np.nan) if values is None else np.asarray(values, dtype=np.float64)


def quarantine_batch(rows: np.ndarray, reason: str, strings: bool,
                     image: tuple[int, np.dtype] | None = (CUTOUT_SHAPE[-1], np.float32)) -> Batch:
    """The rows ``rows`` (indices in their shard) of a file that could not be read, every one
    quarantined as ``unreadable: <reason>``: null ids (None with ``strings``, else 0 in int64:
    the status says it is null, see :func:`id_is_null`), no position, and blank
    ``(N, 3, side, side)`` images of ``image = (side, dtype)`` (no image column when None:
    rows that are counted, never scored)."""
    rows = np.asarray(rows, dtype=np.int64)
    n = len(rows)
    ids = np.full(n, None, dtype=object) if strings else np.zeros(n, np.int64)
    batch: Batch = {"object_id": ids, "ra": np.full(n, np.nan), "dec": np.full(n, np.nan)}
    if image is not None:
        side, dtype = image
        batch["image"] = np.zeros((n, CUTOUT_SHAPE[0], side, side), dtype)
    batch["row"] = rows
    batch["status"] = np.full(n, f"{UNREADABLE}: {reason}", dtype=object)
    return batch
