"""Object ids are unique within a survey: later occurrences across shards are quarantined.

Runs once every unit is committed, out of core: DuckDB groups the ids of all parts (spilling to
disk when they do not fit in memory) and returns only the rows of repeated ids; the parts that
hold a later occurrence are rewritten with status ``duplicate_object_id`` and null scores. Among
the scored rows of an id, the first (by shard URL, then row) keeps its score; a copy quarantined
for another reason keeps that reason, and does not take the score from a good copy after it.
Repeats within one shard are flagged here too (reading flags none: a copy whose model input
overflows is only known after the model).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lensscan import duck
from lensscan.io import storage
from lensscan.io.batch import DUPLICATE_ID
from lensscan.io.parquet import write_table_atomic

#: Float32 columns of a scored row (besides ``score_<member>``): null where it is quarantined.
SCORED = ("score", "logit", "member_spread", "p_lens")


def is_scored(column: str) -> bool:
    """True for a column that holds a model output (null on quarantined rows)."""
    return column in SCORED or column.startswith("score_")


def _later_occurrences(con: duckdb.DuckDBPyConnection, files: list[str]
                       ) -> pa.RecordBatchReader:
    """(filename, row, object_id, first_shard, first_row) of each later occurrence of an id
    that is not flagged yet, by file then row, streamed."""
    src = (f"read_parquet([{', '.join(duck.sql_path(f) for f in files)}], "
           "union_by_name=true, filename=true)")
    return duck.fetch_batches(con, f"""
        WITH scored AS (SELECT filename, shard, "row", object_id, status FROM {src}
                        WHERE object_id IS NOT NULL AND {duck.SCORED}),
        ids AS (SELECT object_id FROM scored GROUP BY object_id HAVING count(*) > 1),
        occ AS (SELECT filename, "row", object_id,
                       first_value(shard) OVER w AS first_shard,
                       first_value("row") OVER w AS first_row,
                       row_number() OVER w AS k
                FROM scored WHERE object_id IN (SELECT object_id FROM ids)
                WINDOW w AS (PARTITION BY object_id ORDER BY shard, "row"))
        SELECT filename, "row", object_id, first_shard, first_row FROM occ WHERE k > 1
        ORDER BY filename, "row"
        """)


def _by_file(batches: pa.RecordBatchReader) -> Iterator[tuple[str, pa.Table]]:
    """The rows of ``batches`` (sorted by filename) as one table per filename, one file's
    rows in memory at a time."""
    current, held = None, []
    for batch in batches:
        if not batch.num_rows:
            continue
        names = batch.column("filename").to_numpy(zero_copy_only=False)
        starts = np.flatnonzero(np.r_[True, names[1:] != names[:-1]]).tolist()
        for a, b in zip(starts, [*starts[1:], len(names)], strict=True):
            if current is not None and names[a] != current:
                yield current, pa.Table.from_batches(held)
                held = []
            current = names[a]
            held.append(batch.slice(a, b - a))
    if current is not None:
        yield current, pa.Table.from_batches(held)


def flag_duplicates(con: duckdb.DuckDBPyConnection, files: list[str]) -> int:
    """Quarantine later occurrences of repeated ids in the part files ``files`` (rewritten
    atomically, one at a time); returns the number of rows newly flagged."""
    by_url = {_as_filename(f): f for f in files}
    flagged = 0
    for name, dups in _by_file(_later_occurrences(con, files)):
        url = by_url.get(name, name)
        table = pq.read_table(pa.BufferReader(storage.read_bytes(url)))
        rows = table.column("row").to_numpy()  # a part's rows: unique, sorted (write_unit)
        at = np.searchsorted(rows, dups.column("row").to_numpy())
        status = np.asarray(table.column("status").to_pylist(), dtype=object)
        first = zip(*(dups.column(c).to_pylist() for c in ("object_id", "first_shard",
                                                          "first_row")), strict=True)
        status[at] = [f"{DUPLICATE_ID}: {oid!r} first seen in {shard} row {row}"
                      for oid, shard, row in first]
        hit = np.zeros(len(rows), bool)
        hit[at] = True
        table = table.set_column(table.column_names.index("status"), "status",
                                 pa.array(status.tolist(), pa.string()))
        for j, col in enumerate(table.column_names):
            if is_scored(col):
                arr = table.column(col).to_numpy(zero_copy_only=False).astype(np.float32)
                table = table.set_column(j, col, pa.array(arr, mask=hit | np.isnan(arr)))
        write_table_atomic(url, table)
        flagged += dups.num_rows
    return flagged


def _as_filename(url: str) -> str:
    """A part URL as DuckDB's ``filename`` column reports it."""
    return os.path.abspath(url.removeprefix("file://")) if storage.is_local(url) else url
