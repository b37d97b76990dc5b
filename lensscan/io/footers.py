"""Footers of remote Parquet shards, kept per process by the object's version.

Reading a unit of a shard on object storage takes two GETs: the footer, then the unit's rows.
The footer is the same for every unit of a shard, and the planner has already read it: a
process that reads several units of one shard (the local engine always; a Ray read task often)
reads it once. A footer is kept under its shard's URL, size and ETag, and only for files whose
reads are conditional on that ETag (s3fs sends ``If-Match``): an object rewritten since its
footer was kept fails its read (the run stops and can be resumed) instead of being decoded
with a stale footer. Other stores (gcsfs, http) read the footer with every unit, as before.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import pyarrow.parquet as pq

from lensscan.io.storage import Stamp

#: Bytes of footers kept per process (their serialized size), oldest dropped first.
MAX_BYTES = 64 * 2**20

_footers: OrderedDict[tuple[str, Stamp], pq.FileMetaData] = OrderedDict()
_held = 0  # serialized bytes of the kept footers
_lock = threading.Lock()  # the planner reads footers from several threads


def key(url: str, fh) -> tuple[str, Stamp] | None:
    """The cache key of an open fsspec file: its URL and version (size and ETag from its
    ``details``); None when its reads are not conditional on that ETag (nothing is kept)."""
    details = getattr(fh, "details", None)
    pinned = (getattr(fh, "read_kw", None) or {}).get("IfMatch")
    if not isinstance(details, dict) or not pinned or details.get("ETag") != pinned:
        return None
    return url, Stamp.of(details)


def open_parquet(url: str, fh, version=None) -> pq.ParquetFile:
    """A ``ParquetFile`` over ``fh`` that reuses the footer this process read before for the
    same version of ``url`` (``version``: the fsspec file whose ``details`` and reads say it,
    default ``fh``); otherwise it reads the footer, and keeps it when the version is pinned."""
    global _held
    k = key(url, fh if version is None else version)
    with _lock:
        md = _footers.get(k) if k else None
        if md is not None:
            _footers.move_to_end(k)
    pf = pq.ParquetFile(fh, metadata=md)
    if k is not None and md is None:
        with _lock:
            if k not in _footers:
                _footers[k] = pf.metadata
                _held += pf.metadata.serialized_size
            while _held > MAX_BYTES and len(_footers) > 1:
                _held -= _footers.popitem(last=False)[1].serialized_size
    return pf


def clear() -> None:
    """Forget every kept footer."""
    global _held
    with _lock:
        _footers.clear()
        _held = 0
