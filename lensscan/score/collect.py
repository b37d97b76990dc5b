"""The driver's side of a scoring run: gather the scored rows of each unit as they stream in
and commit the unit once all its rows are there; turn a storage failure anywhere in the stream
into one :class:`StorageError` naming the URL."""

from __future__ import annotations

import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterator

import numpy as np

from lensscan.errors import StorageError
from lensscan.io import storage
from lensscan.io.shards import Unit
from lensscan.score import commit


class Collector:
    """Rows of units in flight, committed unit by unit.

    Parameters
    ----------
    out : str
        Output folder URL.
    units : dict
        Unit key -> :class:`Unit` of every unit the stream will deliver.
    order : list of str
        Output columns, in order.
    """

    def __init__(self, out: str, units: dict[str, Unit], order: list[str]) -> None:
        self.out, self.units, self.order = out, units, order
        self.pending: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
        self.seen: dict[str, np.ndarray] = {}  # per unit: which of its rows have arrived
        self.scored = 0
        self.first_commit: tuple[float, int] | None = None  # (seconds, rows) at the first commit
        self.devices: dict[str, int] = {}  # rows scored per device (the actors' ``device``)

    def add(self, batch: dict[str, np.ndarray], t0: float) -> None:
        """Take one batch of scored rows; commit every unit it completes."""
        if "device" in batch:
            names, counts = np.unique(batch["device"].astype(str), return_counts=True)
            for name, count in zip(names.tolist(), counts.tolist(), strict=True):
                self.devices[name] = self.devices.get(name, 0) + count
        for key in np.unique(batch["unit"]):
            unit = self.units[key]
            got = self.seen.setdefault(key, np.zeros(unit.rows, bool))
            idx = np.flatnonzero(batch["unit"] == key)
            # a retried task may deliver rows again: keep the first copy of each row
            local, first = np.unique(batch["row"][idx] - unit.start, return_index=True)
            fresh = idx[first][~got[local]]
            got[local] = True
            for col in self.order:
                self.pending[key][col].append(batch[col][fresh])
            if got.all():
                rows = {c: np.concatenate(v) for c, v in self.pending.pop(key).items()}
                del self.seen[key]
                self.scored += commit.write_unit(self.out, key, rows, self.order)
                if self.first_commit is None:
                    self.first_commit = (time.time() - t0, self.scored)

    def run(self, batches, t0: float, total: int, say: Callable[[str], None]) -> int:
        """Drain ``batches`` (the Ray Data stream); returns the rows committed."""
        last = time.time()
        try:
            with _storage_failures_unlogged():
                for batch in batches:
                    self.add(batch, t0)
                    if time.time() - last > 5:
                        rate = self.scored / max(time.time() - t0, 1e-9)
                        say(f"committed {self.scored}/{total} rows ({rate:.0f} rows/s)")
                        last = time.time()
        except Exception as exc:
            failure = storage_failure_in(exc)
            if failure is None:
                raise
            raise failure from None
        if self.pending:
            missing = ", ".join(sorted(self.pending)[:5])
            raise RuntimeError(f"the stream ended with incomplete units ({missing}); rerun to "
                               "finish them")
        return self.scored


def storage_failure_in(exc: BaseException) -> StorageError | None:
    """The storage failure behind an error of the stream (Ray wraps task errors, sometimes
    twice), as a plain :class:`StorageError`; None when the error is of another kind."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        url, reason = getattr(e, "url", None), getattr(e, "reason", None)
        if isinstance(e, StorageError) and isinstance(url, str) and isinstance(reason, str):
            return StorageError(url, reason)
        if storage.is_storage_failure(e) and not isinstance(e, StorageError):
            return StorageError(str(getattr(e, "filename", None) or "storage"),
                                f"storage failed ({storage.short(e)})")
        todo += [getattr(e, "cause", None), e.__cause__, e.__context__]
    return None


class _HideStorageFailures(logging.Filter):
    """Drops Ray Data's console report of a storage failure (a traceback per failed task) and
    the summary after it: the run reports the failure itself, in one line."""

    def __init__(self) -> None:
        super().__init__()
        self.tripped = False

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and storage_failure_in(exc) is not None:
            self.tripped = True
            return False
        return not (self.tripped and record.levelno <= logging.ERROR)


@contextlib.contextmanager
def _storage_failures_unlogged() -> Iterator[None]:
    """Attach :class:`_HideStorageFailures` to Ray Data's console handlers (not its log file,
    which keeps everything) while the stream runs."""
    handlers = [h for h in logging.getLogger("ray.data").handlers
                if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]
    flt = _HideStorageFailures()
    for h in handlers:
        h.addFilter(flt)
    try:
        yield
    finally:
        for h in handlers:
            h.removeFilter(flt)
