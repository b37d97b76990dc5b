"""Ray Data streams of cutouts: plan units of every shard, read them in CPU tasks.

Training and scoring share this read stage (:func:`lensscan.data.readstage.read_stage`): a
dataset of *units* (row ranges of shards, see :mod:`lensscan.io.shards`) is mapped by
:class:`ReadUnits` into batches of rows carrying provenance (``unit``: the unit's index in the
run's list, whose driver knows its shard; ``row``), a ``status`` and the image: as decoded
(scoring: the actor preprocesses on its device), normalised (training) or preprocessed
(evaluation).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from lensscan.config import DEFAULT_CROP
from lensscan.errors import ShardError, StorageError
from lensscan.io import storage
from lensscan.io.batch import (
    CUTOUT_SHAPE,
    flag_labels,
    flag_non_finite,
    id_is_null,
    quarantine_batch,
)
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

    @property
    def string_ids(self) -> bool:
        """True when the output's ids are strings: some readable shard's are (the rows of a
        rejected shard then get null string ids, so that every part has one id type)."""
        return any(u.id_kind == "string" for u in self.units)


def plan_survey(url: str, rows_per_unit: int = 2048, threads: int = 8,
                stamps: dict[str, Stamp] | None = None,
                bands: tuple[str, ...] | None = None) -> SurveyPlan:
    """List the shards under ``url`` (unless ``stamps`` is that listing) and split them into
    units (footers/headers read in threads); shards that cannot be used (with ``bands``: whose
    headers name other bands) are returned as errors, storage failures raise.

    Raises
    ------
    StorageError
        When the listing or a footer read fails for reasons of the storage, not the file.
    """
    stamps = storage.shard_stamps(url) if stamps is None else stamps
    units: list[Unit] = []
    errors: list[ShardError] = []

    def one(shard: str) -> list[Unit] | ShardError:
        try:
            with storage.failures_named(shard, "read"):
                return plan_units(shard, rows_per_unit, bands)
        except StorageError:
            raise
        except ShardError as err:
            return err

    if not stamps:
        return SurveyPlan(units, errors, stamps)
    with ThreadPoolExecutor(max(1, min(threads, len(stamps)))) as pool:
        for result in pool.map(one, list(stamps)):
            if isinstance(result, ShardError):
                errors.append(result)
            else:
                units.extend(result)
    return SurveyPlan(units, errors, stamps)


def plan(
    url: str, rows_per_unit: int = 2048, threads: int = 8,
    bands: tuple[str, ...] | None = None,
) -> tuple[list[Unit], list[ShardError]]:
    """Units of every usable shard under ``url``, and the shards that cannot be used (with
    ``bands``: those whose headers name other bands, or the same in another order)."""
    p = plan_survey(url, rows_per_unit, threads, bands=bands)
    return p.units, p.rejected


#: The columns of a shard that every read carries (:class:`ReadUnits` adds its ``keep``).
ROW_COLUMNS = ("object_id", "ra", "dec", "image")

#: Item key of a unit's index in the run's list (see :func:`units_to_items`).
INDEX = "index"


def units_to_items(units: list[Unit]) -> list[dict]:
    """Units as rows for ``ray.data.from_items``, each with its index in ``units``."""
    return [{**u.to_dict(), INDEX: i} for i, u in enumerate(units)]


#: Stages of :class:`ReadUnits`: what its ``image`` column holds.
STAGES = ("raw", "normalized", "model")


class ReadUnits:
    """Ray Data map_batches function: unit items (:func:`units_to_items`) -> rows with their
    images; every row's ``unit`` (int32) is its unit's index.

    Parameters
    ----------
    preprocessing : dict
        The model card's preprocessing (see :class:`lensscan.data.preprocess.Preprocessing`).
    stage : {"raw", "normalized", "model"}
        ``"raw"`` decodes only (scoring: the actor preprocesses on its device; this task needs
        no torch), float32 ``(N, 3, 64, 64)``, or float16 as stored with ``half``;
        ``"normalized"`` stops before the stretch (training augments there) and stores float16
        to halve memory; ``"model"`` gives the model input (cropped, stretched).
    keep : tuple of str
        Extra input columns to carry (e.g. ``label``, ``kind``).
    ids_as_strings : bool
        Carry every object id as a string (surveys mixing integer and string ids).
    half : bool
        ``"raw"`` stage: images stay float16 (a run whose shards all store float16: half the
        bytes to move); otherwise float32.
    block_rows : int, optional
        Yield a unit's rows in blocks of at most this many (the actors' batch size), so that
        the first unit is scored by every actor at once, not by one: it is committed sooner.

    Object ids travel as int64 or as strings (None when null): Ray Data turns an integer
    column with nulls into float64, so a null integer id travels as 0 and its row's status
    (``missing_object_id``, ``unreadable: ...``) says that it is null (see
    :func:`lensscan.io.batch.id_is_null`). A storage failure (not a bad file) raises
    :class:`StorageError` naming the shard: the run stops instead of quarantining good rows.
    """

    def __init__(self, preprocessing: dict, stage: str = "model",
                 keep: tuple[str, ...] = (), ids_as_strings: bool = False, half: bool = False,
                 block_rows: int | None = None) -> None:
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, not {stage!r}")
        self.preprocessing = dict(preprocessing)
        self.stage = stage
        self.keep = keep
        self.ids_as_strings = ids_as_strings
        self.half = half and stage == "raw"
        self.block_rows = block_rows
        #: the columns read: what the rows carry (another column cannot fail a unit)
        self.columns = (*ROW_COLUMNS, *keep)

    def __call__(self, batch: dict[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
        # a unit at a time (in blocks of at most block_rows): a task holds one unit's pixels
        for i in range(len(batch["url"])):
            item = {k: _scalar(batch[k][i]) for k in batch}
            index = item.pop(INDEX)
            yield from self.blocks(Unit(**item), index)

    def blocks(self, unit: Unit, index: int) -> Iterator[dict[str, np.ndarray]]:
        """The rows of ``unit`` (``index``: its place in the run's list), in blocks of at most
        ``block_rows``."""
        out = self._one(unit, index)
        n = len(out["status"])
        step = self.block_rows or n or 1
        for lo in range(0, max(n, 1), step):
            yield {k: v[lo:lo + step] for k, v in out.items()}

    def _image(self, images: np.ndarray, status: np.ndarray) -> np.ndarray:
        """The stage's image column from decoded cutouts."""
        if self.stage == "raw":
            return images
        from lensscan.data.preprocess import Preprocessing, normalize, preprocess  # torch

        p = Preprocessing.from_dict(self.preprocessing)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            if self.stage == "model":
                image = preprocess(images, p)
                _flag_overflow(image, status)
                return image
            raw = np.where(np.isfinite(images), images, 0.0)
            return to_float16(normalize(raw, p))

    def _one(self, unit: Unit, index: int) -> dict[str, np.ndarray]:
        try:
            with storage.failures_named(unit.url, "read"):
                rows = read_unit(unit, half=self.half, columns=self.columns)
        except StorageError:
            raise
        except ShardError as err:
            return self._unreadable(unit, index, err)
        n = len(rows["object_id"])
        if n != unit.rows:  # no version check on local files: the count catches a rewrite
            raise StorageError(unit.url, f"holds {n} rows where the run planned {unit.rows}: "
                                         "the file changed while the run read it")
        if "label" in self.keep and "label" in rows:  # labelled data: a label is a class
            rows = flag_labels(rows)
        status = rows["status"].astype(object)
        image = self._image(rows["image"], status)
        out = {
            "object_id": self._ids(rows["object_id"], id_is_null(status)),
            "ra": rows["ra"],
            "dec": rows["dec"],
            "row": rows["row"],
            "unit": np.full(n, index, np.int32),
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

    def _unreadable(self, unit: Unit, index: int, err: ShardError) -> dict[str, np.ndarray]:
        """A unit whose bytes are corrupt: every row is quarantined with the reason."""
        n = unit.rows
        side = (int(self.preprocessing.get("crop", DEFAULT_CROP)) if self.stage == "model"
                else CUTOUT_SHAPE[-1])
        dtype = np.float16 if self.stage == "normalized" or self.half else np.float32
        strings = self.ids_as_strings or unit.id_kind == "string"
        q = quarantine_batch(np.arange(unit.start, unit.stop), err.reason, strings, (side, dtype))
        out = {
            "object_id": q["object_id"],
            "ra": q["ra"],
            "dec": q["dec"],
            "row": q["row"],
            "unit": np.full(n, index, np.int32),
            "status": q["status"],
            "image": q["image"],
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
    """:func:`flag_non_finite` of preprocessed images, whose flagged rows are zeroed."""
    n = len(image)
    if n == 0:
        return
    with np.errstate(over="ignore", invalid="ignore"):
        finite = np.isfinite(image.reshape(n, -1).sum(axis=1))
    image[flag_non_finite(finite, status)] = 0.0


#: Largest magnitude stored in the float16 training stage (float16's maximum is 65504).
F16_LIMIT = 65000.0


def to_float16(x: np.ndarray) -> np.ndarray:
    """Normalised images as float16, clipped to float16's range: a bright star's core reaches
    1e5-1e6 sky sigma, which would become inf (and NaN through the training blur). After the
    asinh stretch the clip moves such a pixel from about 13 to 10.7."""
    return np.clip(x, -F16_LIMIT, F16_LIMIT).astype(np.float16)


def _scalar(v):
    return v.item() if hasattr(v, "item") else v

