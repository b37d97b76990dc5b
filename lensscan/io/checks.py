"""Per-row checks of decoded cutouts.

Readers never drop a row: each row gets a status, ``"ok"`` or the reason it must be quarantined,
so that later stages can count it. Whole-file problems raise :class:`lensscan.errors.ShardError`.
"""

from __future__ import annotations

import numpy as np

#: Shape of one cutout: (band, y, x).
CUTOUT_SHAPE = (3, 64, 64)
OK = "ok"
MISSING_ID = "missing_object_id"
UNREADABLE = "unreadable"
DUPLICATE_ID = "duplicate_object_id"
#: Statuses whose rows have no usable object id: the output holds a null id for them.
NULL_ID_STATUSES = (MISSING_ID, UNREADABLE)
#: Status of a row whose pixels overflow float32 in the preprocessing (e.g. values near 3e38).
NON_FINITE_INPUT = ("non_finite_input: pixel values overflow float32 in the preprocessing "
                    "(sky subtraction and noise scaling)")


def ok_mask(status: np.ndarray) -> np.ndarray:
    """Rows whose status is ``ok``."""
    return np.asarray(status, dtype=object) == OK


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


def coordinate_problems(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """Per row, ``""`` or why (ra, dec) is not a sky position: RA outside [0, 360) or Dec
    outside [-90, 90] degrees (null coordinates, NaN, are allowed)."""
    ra, dec = np.asarray(ra, np.float64), np.asarray(dec, np.float64)
    with np.errstate(invalid="ignore"):
        bad = (ra < 0) | (ra >= 360) | ~(np.isnan(ra) | np.isfinite(ra))
        bad |= (dec < -90) | (dec > 90) | ~(np.isnan(dec) | np.isfinite(dec))
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
) -> np.ndarray:
    """Status of every row of a decoded batch.

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
    if image_null is not None:
        status[image_null] = "null_image"
    if ra is not None and dec is not None:
        coords = coordinate_problems(ra, dec)
        status[coords != ""] = coords[coords != ""]
    if id_null is not None:
        status[id_null] = MISSING_ID
    ids = np.asarray(object_ids)
    valid = np.ones(n, bool) if id_null is None else ~id_null
    if valid.any():
        _, first, counts = np.unique(ids[valid], return_index=True, return_counts=True)
        if (counts > 1).any():
            seen: set = set()
            for i in np.flatnonzero(valid):
                key = ids[i]
                if key in seen:
                    plain = key.item() if isinstance(key, np.generic) else key
                    status[i] = f"{DUPLICATE_ID}: {plain!r} appears earlier in this shard"
                seen.add(key)
    return status
