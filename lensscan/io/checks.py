"""Per-row checks of decoded cutouts.

Readers never drop a row: each row gets a status, ``"ok"`` or the reason it must be quarantined,
so that later stages can count it. Whole-file problems raise :class:`lensscan.errors.ShardError`.
"""

from __future__ import annotations

import numpy as np

#: Shape of one cutout: (band, y, x).
CUTOUT_SHAPE = (3, 64, 64)
OK = "ok"


def row_status(
    images: np.ndarray,
    object_ids: np.ndarray,
    image_null: np.ndarray | None = None,
    id_null: np.ndarray | None = None,
) -> np.ndarray:
    """Status of every row of a decoded batch.

    Parameters
    ----------
    images : ndarray, float32, shape (N, 3, 64, 64)
        Decoded cutouts (null rows hold zeros).
    object_ids : ndarray, shape (N,)
        Object ids (int64 or str).
    image_null, id_null : ndarray of bool, shape (N,), optional
        Rows whose image or id was null in the file.

    Returns
    -------
    ndarray of object (str), shape (N,)
        ``"ok"`` or a reason such as ``"non_finite_pixels: 12 NaN/inf values"``.
    """
    n = len(images)
    status = np.full(n, OK, dtype=object)
    if n == 0:
        return status
    flat = images.reshape(n, -1)
    with np.errstate(over="ignore", invalid="ignore"):
        suspect = ~np.isfinite(flat.sum(axis=1))  # NaN/inf propagate (overflow only adds work)
    bad_count = np.zeros(n, np.int64)
    for i in np.flatnonzero(suspect):
        bad_count[i] = int((~np.isfinite(flat[i])).sum())
        if bad_count[i]:
            status[i] = f"non_finite_pixels: {bad_count[i]} NaN/inf values"
    zero = ~flat.any(axis=1)
    status[zero & (bad_count == 0)] = "all_zero: every pixel is 0"
    if image_null is not None:
        status[image_null] = "null_image"
    if id_null is not None:
        status[id_null] = "missing_object_id"
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
                    status[i] = f"duplicate_object_id: {plain!r} appears earlier in this shard"
                seen.add(key)
    return status
