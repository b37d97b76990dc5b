"""Pick rows out of a survey: its columns without the images, then chosen rows in full.

Choosing a few thousand hosts among a survey's rows needs only their ids and a few columns;
:func:`read_columns` reads those alone from Parquet (no pixel is read). :func:`read_rows` then
reads the chosen rows with every column, touching only the row groups that hold them.
"""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq

from lensscan.errors import ShardError
from lensscan.io import parquet as pq_io
from lensscan.io import storage
from lensscan.io.shards import read_shard, shard_format


def read_columns(url: str, columns: list[str]) -> dict[str, np.ndarray]:
    """``object_id`` and ``columns`` of every row of a shard (a 2-D array for a fixed-size list
    column such as ``psf_fwhm``); a missing column raises ``ShardError``."""
    want = list(dict.fromkeys(["object_id", *columns]))
    if shard_format(url) != "parquet":
        batch = read_shard(url)
        missing = [c for c in want if c not in batch]
        if missing:
            raise ShardError(url, f"no column {missing[0]!r}")
        return {c: batch[c] for c in want}
    info = pq_io.parquet_info(url)
    missing = [c for c in want if c not in info.columns]
    if missing:
        raise ShardError(url, f"no column {missing[0]!r} (columns: {', '.join(info.columns)})")
    fs, path = storage.pyarrow_filesystem(url)
    table = pq.read_table(path, columns=want, filesystem=fs)
    return {c: pq_io.extra_column(table.column(c)) for c in want}


def read_rows(url: str, rows: np.ndarray) -> dict[str, np.ndarray]:
    """Rows ``rows`` of a shard with every column, in that order (see
    :func:`lensscan.io.parquet.read_parquet` for the columns)."""
    rows = np.asarray(rows, dtype=np.int64)
    if shard_format(url) != "parquet":
        batch = read_shard(url)
        return {k: v[rows] for k, v in batch.items()}
    info = pq_io.parquet_info(url)
    bounds = np.cumsum((0,) + info.row_group_rows)
    group = np.searchsorted(bounds, rows, side="right") - 1
    parts, order = [], []
    for g in np.unique(group):
        sel = np.flatnonzero(group == g)
        batch = pq_io.read_parquet(url, [int(g)])
        parts.append({k: v[rows[sel] - bounds[g]] for k, v in batch.items()})
        order.append(sel)
    where = np.argsort(np.concatenate(order))
    return {k: np.concatenate([p[k] for p in parts])[where] for k in parts[0]}


def survey_meta(url: str) -> pq_io.ParquetInfo | None:
    """The footer of a survey's first Parquet shard (bands, pixel scale, zero-point), or None
    for a survey of other formats."""
    first = storage.list_shards(url)[0]
    return pq_io.parquet_info(first) if shard_format(first) == "parquet" else None
