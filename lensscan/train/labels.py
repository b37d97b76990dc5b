"""Graders' labels in training: read and combine the CSVs once, relabel rows in the stream.

``lensscan train DATA --labels grades.csv`` trains on the rows of DATA whose ``object_id`` was
graded, with the combined grade as label (:mod:`lensscan.data.grades`), whatever ``label`` the
shards carry; ungraded rows are left out, or with ``--keep-labels`` keep their own ``label``
(a training set from ``lensscan inject``: its lenses and negatives as they are, the graded
objects as the graders said).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa

from lensscan.config import TrainConfig
from lensscan.data.grades import graded_labels
from lensscan.errors import LensscanError
from lensscan.io import storage
from lensscan.io.batch import OK
from lensscan.io.rows import read_columns


class Relabel:
    """Ray Data map_batches function: keep the graded rows, with their grade labels.

    Parameters
    ----------
    labels : dict
        ``{object_id as text: 1 (lens) or 0 (non-lens)}``.
    keep_labels : bool
        Rows nobody graded keep their own ``label`` (when it is 0 or 1; else -1, and training
        counts them as left out, by their status) instead of being dropped here.
    """

    def __init__(self, labels: dict[str, int], keep_labels: bool = False) -> None:
        self.labels = labels
        self.keep_labels = keep_labels

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ids = np.asarray(batch["object_id"]).astype(str)
        label = np.fromiter((self.labels.get(i, -1) for i in ids), np.int64, len(ids))
        graded = label >= 0  # the file's own label, whatever it held, gives way to a grade
        keep = graded
        if self.keep_labels and "label" in batch:
            own = np.asarray(batch["label"], np.int64)
            label = np.where(graded, label, np.where(np.isin(own, (0, 1)), own, -1))
            # every row stays: the training stream counts the unlabelled ones and the
            # invalid_label ones (by their status) as it leaves them out
            keep = np.ones(len(ids), bool)
        out = {k: v[keep] for k, v in batch.items()}
        out["label"] = label[keep].astype(np.int8)
        if "status" in out:
            status = np.asarray(out["status"], dtype=object).copy()
            relabelled = graded[keep] & np.char.startswith(status.astype(str), "invalid_label")
            status[relabelled] = OK
            out["status"] = status
        return out


def train_labels(cfg: TrainConfig) -> tuple[dict[str, int] | None, dict | None]:
    """The combined labels of ``cfg.labels`` and the graders' agreement report, or
    ``(None, None)`` when the run has no grades."""
    if not cfg.labels:
        return None, None
    labels, report = graded_labels(cfg.labels, cfg.grade_c)
    if not labels:
        raise ValueError(f"{', '.join(cfg.labels)}: no object has a lens or non-lens grade")
    found = graded_in_data(labels, cfg.data)
    report.update(in_data=found, not_in_data=len(labels) - found)
    if not found:
        raise ValueError(f"{cfg.data}: none of the {len(labels)} graded objects of "
                         f"{', '.join(cfg.labels)} is in the training data (object_id as text)")
    return labels, report


def graded_in_data(labels: dict[str, int], url: str) -> int:
    """How many of the graded ids are ``object_id`` values of the shards at ``url`` (the ids
    alone are read, in threads)."""
    shards = storage.list_shards(url)
    wanted = np.asarray(list(labels), dtype=str)

    def one(shard: str) -> np.ndarray:
        try:
            ids = np.asarray(read_columns(shard, [])["object_id"]).astype(str)
        except (LensscanError, pa.ArrowException, OSError, ValueError):
            return wanted[:0]  # an unreadable shard: training leaves its rows out and says so
        return wanted[np.isin(wanted, ids)]

    with ThreadPoolExecutor(max(1, min(8, len(shards)))) as pool:
        hits = list(pool.map(one, shards))
    return len(np.unique(np.concatenate(hits))) if hits else 0
