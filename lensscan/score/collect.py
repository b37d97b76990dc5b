"""The driver's side of a scoring run: gather the scored rows of each unit as they stream in
(rows name their unit by its index in the run's list; the driver knows its shard) and commit
the unit once all its rows are there; turn a storage failure anywhere in the stream into one
:class:`StorageError` naming the URL, and a model the actors cannot load into its
:class:`ModelError`."""

from __future__ import annotations

import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator

import numpy as np

from lensscan.errors import ModelError, StorageError
from lensscan.io import storage
from lensscan.io.batch import OK
from lensscan.io.shards import Unit
from lensscan.score import commit
from lensscan.score.arithmetic import OneArithmetic
from lensscan.score.progress import Progress


class Collector:
    """Rows of units in flight, committed unit by unit.

    Parameters
    ----------
    out : str
        Output folder URL.
    units : list of Unit
        Every unit the stream will deliver; a row's ``unit`` is its unit's index here.
    keys : list of str
        The units' keys (their part files' names), in the same order.
    order : list of str
        Output columns, in order.
    guard : callable, optional
        Called before each part is written; raises when the output's lease was lost.
    committed : iterable of str
        Keys of this run's units committed by an earlier run: every part written must be of
        their arithmetic (:class:`~lensscan.score.arithmetic.OneArithmetic`).
    """

    def __init__(self, out: str, units: list[Unit], keys: list[str], order: list[str],
                 guard: Callable[[], None] | None = None, committed: Iterable[str] = ()) -> None:
        self.out, self.units, self.keys, self.order = out, units, keys, order
        self.guard = guard  # called before each part is written (the lease still ours)
        self.one_arithmetic = OneArithmetic(out, committed)  # of this output's scores
        self.carried = [c for c in order if c != "shard"]  # on every row; shard: per unit
        self.pending: dict[int, dict[str, list]] = defaultdict(lambda: defaultdict(list))
        self.seen: dict[int, np.ndarray] = {}  # per unit: which of its rows have arrived
        self.done: set[int] = set()  # units committed: rows of theirs that arrive again are not
        self.received = 0  # rows scored (each row once)
        self.committed = 0  # rows committed, quarantined ones included
        self.scored = 0  # of them, rows scored
        self.first_commit: tuple[float, int] | None = None  # (seconds, rows) at the first commit
        self.devices: dict[str, int] = {}  # rows scored per device (the actors' ``device``)
        self.arithmetic: dict[int, set[str]] = defaultdict(set)  # per unit: its rows' arithmetic

    def add(self, batch: dict[str, np.ndarray], t0: float) -> None:
        """Take one batch of scored rows; commit every unit it completes."""
        scored_rows = []  # of every unit in the batch: the devices counted once per batch
        for i in np.unique(batch["unit"]).tolist():
            if i in self.done:  # a retried task delivered a committed unit's rows again
                continue
            unit = self.units[i]
            got = self.seen.setdefault(i, np.zeros(unit.rows, bool))
            idx = np.flatnonzero(batch["unit"] == i)
            # a retried task may deliver rows again: keep the first copy of each row
            local, first = np.unique(batch["row"][idx] - unit.start, return_index=True)
            fresh = idx[first][~got[local]]
            got[local] = True
            self.received += len(fresh)
            for col in self.carried:
                self.pending[i][col].append(batch[col][fresh])
            scored = fresh[batch["status"][fresh] == OK]  # each row once, quarantined ones not
            if "arithmetic" in batch:  # a unit's arithmetic is its scores'
                self.arithmetic[i].update(np.unique(batch["arithmetic"][scored]).tolist())
            scored_rows.append(scored)
            if got.all():
                self._commit(i, t0)
        if "device" in batch and scored_rows:
            names, counts = np.unique(batch["device"][np.concatenate(scored_rows)].astype(str),
                                      return_counts=True)
            for name, count in zip(names.tolist(), counts.tolist(), strict=True):
                self.devices[name] = self.devices.get(name, 0) + count

    def _commit(self, i: int, t0: float) -> None:
        """Write unit ``i``'s part, its rows named by their shard."""
        if self.guard is not None:
            self.guard()
        rows = {c: np.concatenate(v) for c, v in self.pending.pop(i).items()}
        del self.seen[i]
        self.done.add(i)
        rows["shard"] = np.full(len(rows["row"]), self.units[i].url, dtype=object)
        arithmetic = (self.one_arithmetic.check(self.keys[i], self.arithmetic.pop(i, set()))
                      or commit.NO_SCORES)
        written, scored = commit.write_unit(self.out, self.keys[i], rows, self.order, arithmetic)
        self.committed += written
        self.scored += scored
        if self.first_commit is None:
            self.first_commit = (time.time() - t0, self.committed)

    def run(self, batches, t0: float, progress: Progress) -> int:
        """Drain ``batches`` (the Ray Data stream), telling ``progress`` the rows scored;
        returns the rows committed."""
        try:
            with _failures_unlogged():
                for batch in batches:
                    self.add(batch, t0)
                    progress.update(self.received)
        except Exception as exc:
            failure = failure_in(exc)
            if failure is None:
                raise
            raise failure from None
        left = [self.keys[i] for i in range(len(self.units)) if i not in self.done]
        if left:  # rows of a unit missing, or a whole unit that never arrived
            raise StorageError(self.out, f"the stream ended before {len(left)} of "
                               f"{len(self.units)} units were complete "
                               f"({', '.join(sorted(left)[:5])})")
        return self.committed


def failure_in(exc: BaseException) -> StorageError | ModelError | None:
    """The storage failure (:func:`storage_failure_in`) or the unusable model behind an error
    of the stream, as a plain error whose message is meant for the user; None when the error
    is of another kind."""
    return storage_failure_in(exc) or model_failure_in(exc)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the errors behind it (Ray wraps task errors, sometimes twice)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [getattr(e, "cause", None), e.__cause__, e.__context__]


def model_failure_in(exc: BaseException) -> ModelError | None:
    """The :class:`ModelError` an actor raised (:class:`lensscan.score.actor.ScoringActor`),
    as a plain one; None when there is none."""
    for e in _chain(exc):
        if type(e) is ModelError:  # not Ray's wrapper, which derives from it
            # the message is one line; Ray Data appends its retry notes to the error's
            return ModelError(str(e).splitlines()[0] if str(e) else "")
    return None


def storage_failure_in(exc: BaseException) -> StorageError | None:
    """The storage failure behind an error of the stream (Ray wraps task errors, sometimes
    twice), as a plain :class:`StorageError`; None when the error is of another kind."""
    for e in _chain(exc):
        url, reason = getattr(e, "url", None), getattr(e, "reason", None)
        if isinstance(e, StorageError) and isinstance(url, str) and isinstance(reason, str):
            return StorageError(url, reason)
        if storage.is_storage_failure(e) and not isinstance(e, StorageError):
            return StorageError(str(getattr(e, "filename", None) or "storage"),
                                f"storage failed ({storage.short(e)})")
    return None


class _HideRunFailures(logging.Filter):
    """Drops Ray Data's console report of a storage failure or an unusable model (a traceback
    per failed task) and the summary after it: the run reports the failure itself, in one
    line."""

    def __init__(self) -> None:
        super().__init__()
        self.tripped = False

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and failure_in(exc) is not None:
            self.tripped = True
            return False
        return not (self.tripped and record.levelno <= logging.ERROR)


@contextlib.contextmanager
def _failures_unlogged() -> Iterator[None]:
    """Attach :class:`_HideRunFailures` to Ray Data's console handlers (not its log file,
    which keeps everything) while the stream runs."""
    handlers = [h for h in logging.getLogger("ray.data").handlers
                if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]
    flt = _HideRunFailures()
    for h in handlers:
        h.addFilter(flt)
    try:
        yield
    finally:
        for h in handlers:
            h.removeFilter(flt)
