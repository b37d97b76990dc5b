"""Footers of remote Parquet shards, kept per process by the object's version.

Reading a unit of a shard on object storage takes two GETs: the footer, then the unit's rows.
The footer is the same for every unit of a shard, and the planner has already read it: a
process that reads several units of one shard (the local engine always; a Ray read task often)
reads it once. A footer is kept under its shard's URL, size and ETag (or modification time), so
an object that was rewritten has another key and is never decoded with a stale footer.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import pyarrow.parquet as pq

from lensscan.io.storage import Stamp

#: Footers kept per process (a few kB to a few hundred kB each).
MAX_FOOTERS = 256

_footers: OrderedDict[tuple[str, Stamp], pq.FileMetaData] = OrderedDict()
_lock = threading.Lock()  # the planner lists footers from several threads


def key(url: str, fh) -> tuple[str, Stamp] | None:
    """The cache key of an open fsspec file (its ``details``: size and ETag or mtime), or None
    when the file does not say its version (then nothing is cached)."""
    details = getattr(fh, "details", None)
    if not isinstance(details, dict) or not details.get("size"):
        return None
    stamp = Stamp.of(details)
    if stamp.version in ("mtime 0.000000", "etag "):
        return None
    return url, stamp


def open_parquet(url: str, fh, version=None) -> pq.ParquetFile:
    """A ``ParquetFile`` over ``fh`` that reuses the footer this process read before for the
    same version of ``url`` (``version``: the object whose ``details`` say it, default
    ``fh``); otherwise it reads the footer and keeps it."""
    k = key(url, fh if version is None else version)
    with _lock:
        md = _footers.get(k) if k else None
        if md is not None:
            _footers.move_to_end(k)
    pf = pq.ParquetFile(fh, metadata=md)
    if k is not None and md is None:
        with _lock:
            _footers[k] = pf.metadata
            while len(_footers) > MAX_FOOTERS:
                _footers.popitem(last=False)
    return pf


def clear() -> None:
    """Forget every kept footer."""
    with _lock:
        _footers.clear()
