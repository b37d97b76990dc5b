"""Committing scoring output: one Parquet part per unit, then candidates and the manifest.

Layout of ``OUT``::

    scores/part-<unit key>.parquet   one per work unit, written atomically when all its rows are in
    candidates.parquet              ranked candidates, written after every unit is committed
    _quarantine.json                shards that could not be opened at all, with reasons
    _manifest.json                  written last: its presence means the output is complete
"""

from __future__ import annotations

import io
import json
import posixpath

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lensscan import duck
from lensscan.io import storage

SCORES = "scores"
CANDIDATES = "candidates.parquet"
MANIFEST = "_manifest.json"
QUARANTINE = "_quarantine.json"


def part_url(out: str, key: str) -> str:
    return storage.join(out, SCORES, f"part-{key}.parquet")


def committed_units(out: str) -> set[str]:
    """Keys of the units whose part file exists."""
    fs, path = storage.filesystem(storage.join(out, SCORES))
    if not fs.exists(path):
        return set()
    names = [posixpath.basename(p) for p in fs.ls(path, detail=False)]
    return {n[len("part-"):-len(".parquet")] for n in names
            if n.startswith("part-") and n.endswith(".parquet")}


def _column(values: np.ndarray, name: str) -> pa.Array:
    if name in ("score",) or name.startswith("score_"):
        v = np.asarray(values, np.float32)
        return pa.array(v, mask=np.isnan(v))
    if name in ("ra", "dec"):
        v = np.asarray(values, np.float64)
        return pa.array(v, mask=np.isnan(v))
    if values.dtype.kind == "O":
        return pa.array(values.tolist())
    return pa.array(values)


def write_unit(out: str, key: str, rows: dict[str, np.ndarray], order: list[str]) -> int:
    """Write one unit's scored rows (sorted by row) atomically; returns the row count."""
    idx = np.argsort(rows["row"], kind="stable")
    table = pa.table({c: _column(np.asarray(rows[c])[idx], c) for c in order})
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf, compression="zstd")
    storage.write_bytes_atomic(part_url(out, key), buf.getvalue().to_pybytes())
    return table.num_rows


def finalize(out: str, keys: list[str], threshold: float | None, top: int | None) -> dict:
    """Count the committed parts of this run and write ``candidates.parquet``.

    Only the parts named in ``keys`` (the units of the current input) are read, so a stale part
    of another input in the same folder is never counted.
    """
    files = [part_url(out, k) for k in keys]
    con = duck.connect(out)
    if not files:
        return {"rows_read": 0, "rows_scored": 0, "rows_quarantined": 0, "candidates": 0}
    src = f"read_parquet([{', '.join(duck.sql_path(f) for f in files)}], union_by_name=true)"
    n_all, n_ok = con.execute(
        f"SELECT count(*), count(*) FILTER (WHERE status = 'ok') FROM {src}").fetchone()
    reasons = dict(con.execute(
        f"SELECT split_part(status, ':', 1) AS r, count(*) FROM {src} WHERE status <> 'ok' "
        "GROUP BY r ORDER BY r").fetchall())
    where = "status = 'ok' AND score IS NOT NULL"
    if top is None:
        where += f" AND score >= {float(threshold)!r}"
    limit = f"LIMIT {int(top)}" if top is not None else ""
    table = duck.fetch_arrow(
        con,
        f"SELECT row_number() OVER (ORDER BY score DESC, object_id) AS rank, * FROM {src} "
        f"WHERE {where} ORDER BY score DESC, object_id {limit}")
    table = table.set_column(0, "rank", table.column("rank").cast(pa.int64()))
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    storage.write_bytes_atomic(storage.join(out, CANDIDATES), buf.getvalue())
    return {"rows_read": int(n_all), "rows_scored": int(n_ok),
            "rows_quarantined": int(n_all - n_ok), "candidates": table.num_rows,
            "quarantine_reasons": reasons}


def write_json(url: str, obj: dict) -> None:
    storage.write_bytes_atomic(url, json.dumps(obj, indent=2, default=str).encode())
