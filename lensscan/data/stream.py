"""Ray Data streams of cutouts: plan units of every shard, read and preprocess them in CPU tasks.

Training and scoring share this read stage: a dataset of *units* (row ranges of shards, see
:mod:`lensscan.io.shards`) is mapped by :class:`ReadUnits` into batches of rows carrying
provenance (``shard``, ``row``), a ``status`` and the preprocessed image.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from lensscan.data.preprocess import Preprocessing, normalize, preprocess
from lensscan.errors import ShardError, StorageError
from lensscan.io import storage
from lensscan.io.checks import OK, UNREADABLE, id_is_null
from lensscan.io.shards import Unit, plan_units, read_unit
from lensscan.io.storage import Stamp


@dataclass
class SurveyPlan:
    """What a survey's listing, footers and headers say, before any pixel is read."""

    units: list[Unit]  # readable row ranges, in shard order
    rejected: list[ShardError]  # shards that cannot be used (``rows`` set when known)
    stamps: dict[str, Stamp]  # every listed shard's size and ETag/mtime

    @property
    def ids_as_strings(self) -> bool:
        """True when some shards have integer ids and others string ids: the run then carries
        every id as a string, so that one output column holds them all."""
        return len({u.id_kind for u in self.units}) > 1


def plan_survey(url: str, rows_per_unit: int = 2048, threads: int = 8) -> SurveyPlan:
    """List the shards under ``url`` and split them into units (footers/headers read in
    threads); shards that cannot be used are returned as errors, storage failures raise.

    Raises
    ------
    StorageError
        When the listing or a footer read fails for reasons of the storage, not the file.
    """
    stamps = storage.shard_stamps(url)
    units: list[Unit] = []
    errors: list[ShardError] = []

    def one(shard: str) -> list[Unit] | ShardError:
        try:
            with storage.failures_named(shard, "read"):
                return plan_units(shard, rows_per_unit)
        except StorageError:
            raise
        except ShardError as err:
            return err

    with ThreadPoolExecutor(max(1, min(threads, len(stamps)))) as pool:
        for result in pool.map(one, list(stamps)):
            if isinstance(result, ShardError):
                errors.append(result)
            else:
                units.extend(result)
    return SurveyPlan(units, errors, stamps)


def plan(
    url: str, rows_per_unit: int = 2048, threads: int = 8
) -> tuple[list[Unit], list[ShardError]]:
    """Units of every usable shard under ``url``, and the shards that cannot be used."""
    p = plan_survey(url, rows_per_unit, threads)
    return p.units, p.rejected


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
    ids_as_strings : bool
        Carry every object id as a string (surveys mixing integer and string ids).

    Object ids travel as int64 or as strings (None when null): Ray Data turns an integer
    column with nulls into float64, so a null integer id travels as 0 and its row's status
    (``missing_object_id``, ``unreadable: ...``) says that it is null (see
    :func:`lensscan.io.checks.id_is_null`). A storage failure (not a bad file) raises
    :class:`StorageError` naming the shard: the run stops instead of quarantining good rows.
    """

    def __init__(self, preprocessing: dict, stage: str = "model",
                 keep: tuple[str, ...] = (), ids_as_strings: bool = False) -> None:
        self.p = Preprocessing.from_dict(preprocessing)
        self.stage = stage
        self.keep = keep
        self.ids_as_strings = ids_as_strings

    def __call__(self, batch: dict[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
        # one output block per unit: a task holds one unit's pixels at a time
        for i in range(len(batch["url"])):
            yield self._one(Unit(**{k: _scalar(batch[k][i]) for k in batch}))

    def _one(self, unit: Unit) -> dict[str, np.ndarray]:
        try:
            with storage.failures_named(unit.url, "read"):
                rows = read_unit(unit)
        except StorageError:
            raise
        except ShardError as err:
            return self._unreadable(unit, err)
        n = len(rows["object_id"])
        status = rows["status"].astype(object)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            if self.stage == "model":
                image = preprocess(rows["image"], self.p)
                _flag_overflow(image, status)
            else:
                raw = np.where(np.isfinite(rows["image"]), rows["image"], 0.0)
                image = to_float16(normalize(raw, self.p))
        out = {
            "object_id": self._ids(rows["object_id"], id_is_null(status)),
            "ra": rows["ra"],
            "dec": rows["dec"],
            "shard": np.full(n, unit.url, dtype=object),
            "row": rows["row"],
            "unit": np.full(n, unit_key(unit), dtype=object),
            "status": status,
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

    def _ids(self, ids: np.ndarray, null: np.ndarray) -> np.ndarray:
        """Ids in the run's one type: strings (None where null) or int64 (0 where null)."""
        ids = np.asarray(ids)
        if self.ids_as_strings or not _integer(ids):
            return np.array([None if z or v is None else str(v)
                             for v, z in zip(ids.tolist(), null, strict=True)], dtype=object)
        out = np.zeros(len(ids), np.int64)
        out[~null] = ids[~null].astype(np.int64)
        return out

    def _unreadable(self, unit: Unit, err: ShardError) -> dict[str, np.ndarray]:
        """A unit whose bytes are corrupt: every row is quarantined with the reason."""
        n = unit.rows
        side = self.p.crop if self.stage == "model" else 64
        dtype = np.float32 if self.stage == "model" else np.float16
        strings = self.ids_as_strings or unit.id_kind == "string"
        out = {
            "object_id": np.full(n, None, dtype=object) if strings else np.zeros(n, np.int64),
            "ra": np.full(n, np.nan),
            "dec": np.full(n, np.nan),
            "shard": np.full(n, unit.url, dtype=object),
            "row": np.arange(unit.start, unit.stop, dtype=np.int64),
            "unit": np.full(n, unit_key(unit), dtype=object),
            "status": np.full(n, f"{UNREADABLE}: {err.reason}", dtype=object),
            "image": np.zeros((n, 3, side, side), dtype),
        }
        for col in self.keep:
            if col not in out:
                out[col] = np.full(n, -1 if col == "label" else None)
        return out


def _integer(ids: np.ndarray) -> bool:
    """True for int arrays and object arrays of integers and None (ids with nulls)."""
    if ids.dtype.kind in "iu":
        return True
    return ids.dtype.kind == "O" and all(v is None or isinstance(v, int | np.integer)
                                         for v in ids)


def _flag_overflow(image: np.ndarray, status: np.ndarray) -> None:
    """Quarantine rows whose model input is not finite (pixel values so large that the
    preprocessing overflows float32, e.g. 3e38): the model cannot give them a score."""
    n = len(image)
    if n == 0:
        return
    bad = ~np.isfinite(image.reshape(n, -1).sum(axis=1)) & ok_mask(status)
    for i in np.flatnonzero(bad):
        status[i] = ("non_finite_input: pixel values overflow float32 in the preprocessing "
                     "(sky subtraction and noise scaling)")
        image[i] = 0.0


#: Largest magnitude stored in the float16 training stage (float16's maximum is 65504).
F16_LIMIT = 65000.0


def to_float16(x: np.ndarray) -> np.ndarray:
    """Normalised images as float16, clipped to float16's range: a bright star's core reaches
    1e5-1e6 sky sigma, which would become inf (and NaN through the training blur). After the
    asinh stretch the clip moves such a pixel from about 13 to 10.7."""
    return np.clip(x, -F16_LIMIT, F16_LIMIT).astype(np.float16)


def _scalar(v):
    return v.item() if hasattr(v, "item") else v


def ok_mask(status: np.ndarray) -> np.ndarray:
    """Rows whose status is ``ok``."""
    return np.asarray(status, dtype=object) == OK
