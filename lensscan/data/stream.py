"""Ray Data streams of cutouts: plan units of every shard, read and preprocess them in CPU tasks.

Training and scoring share this read stage: a dataset of *units* (row ranges of shards, see
:mod:`lensscan.io.shards`) is mapped by :class:`ReadUnits` into batches of rows carrying
provenance (``shard``, ``row``), a ``status`` and the preprocessed image.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from lensscan.data.preprocess import Preprocessing, normalize, preprocess
from lensscan.errors import ShardError
from lensscan.io import storage
from lensscan.io.checks import OK
from lensscan.io.shards import Unit, plan_units, read_unit


def plan(
    url: str, rows_per_unit: int = 2048, threads: int = 8
) -> tuple[list[Unit], list[ShardError]]:
    """List the shards under ``url`` and split them into units (footers/headers read in threads).

    Returns the units and the shards that could not be planned (unreadable files).
    """
    shards = storage.list_shards(url)
    units: list[Unit] = []
    errors: list[ShardError] = []

    def one(shard: str) -> list[Unit] | ShardError:
        try:
            return plan_units(shard, rows_per_unit)
        except ShardError as err:
            return err

    with ThreadPoolExecutor(max(1, min(threads, len(shards)))) as pool:
        for result in pool.map(one, shards):
            if isinstance(result, ShardError):
                errors.append(result)
            else:
                units.extend(result)
    return units, errors


def unit_key(unit: Unit) -> str:
    """Stable name of a unit: a hash of its shard URL and its first row."""
    digest = hashlib.sha1(unit.url.encode()).hexdigest()[:16]
    return f"{digest}-{unit.start:010d}"


def units_to_items(units: list[Unit]) -> list[dict]:
    """Units as rows for ``ray.data.from_items``."""
    return [u.to_dict() for u in units]


class ReadUnits:
    """Ray Data map_batches function: unit descriptors -> rows with preprocessed images.

    Parameters
    ----------
    preprocessing : dict
        The model card's preprocessing (see :class:`Preprocessing`).
    stage : {"model", "normalized"}
        ``"model"`` gives the model input (cropped, stretched); ``"normalized"`` stops before
        the stretch (training augments there) and stores float16 to halve memory.
    keep : tuple of str
        Extra input columns to carry (e.g. ``label``, ``kind``).
    """

    def __init__(self, preprocessing: dict, stage: str = "model",
                 keep: tuple[str, ...] = ()) -> None:
        self.p = Preprocessing.from_dict(preprocessing)
        self.stage = stage
        self.keep = keep

    def __call__(self, batch: dict[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
        # one output block per unit: a task holds one unit's pixels at a time
        for i in range(len(batch["url"])):
            yield self._one(Unit(**{k: _scalar(batch[k][i]) for k in batch}))

    def _one(self, unit: Unit) -> dict[str, np.ndarray]:
        try:
            rows = read_unit(unit)
        except ShardError as err:
            return self._unreadable(unit, err)
        n = len(rows["object_id"])
        if self.stage == "model":
            image = preprocess(rows["image"], self.p)
        else:
            raw = np.where(np.isfinite(rows["image"]), rows["image"], 0.0)
            image = normalize(raw, self.p).astype(np.float16)
        out = {
            "object_id": rows["object_id"],
            "ra": rows["ra"],
            "dec": rows["dec"],
            "shard": np.full(n, unit.url, dtype=object),
            "row": rows["row"],
            "unit": np.full(n, unit_key(unit), dtype=object),
            "status": rows["status"].astype(object),
            "image": image,
        }
        for col in self.keep:
            if col in out:
                continue
            if col in rows:
                out[col] = rows[col]
            else:
                out[col] = np.full(n, -1 if col == "label" else None)
        return out

    def _unreadable(self, unit: Unit, err: ShardError) -> dict[str, np.ndarray]:
        """A unit whose bytes are corrupt: every row is quarantined with the reason."""
        n = unit.rows
        side = self.p.crop if self.stage == "model" else 64
        dtype = np.float32 if self.stage == "model" else np.float16
        out = {
            "object_id": np.full(n, None, dtype=object),
            "ra": np.full(n, np.nan),
            "dec": np.full(n, np.nan),
            "shard": np.full(n, unit.url, dtype=object),
            "row": np.arange(unit.start, unit.stop, dtype=np.int64),
            "unit": np.full(n, unit_key(unit), dtype=object),
            "status": np.full(n, f"unreadable: {err.reason}", dtype=object),
            "image": np.zeros((n, 3, side, side), dtype),
        }
        for col in self.keep:
            if col not in out:
                out[col] = np.full(n, -1 if col == "label" else None)
        return out


def _scalar(v):
    return v.item() if hasattr(v, "item") else v


def ok_mask(status: np.ndarray) -> np.ndarray:
    """Rows whose status is ``ok``."""
    return np.asarray(status, dtype=object) == OK
