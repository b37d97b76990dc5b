"""Committing scoring output: one Parquet part per unit, then candidates and the manifest.

Layout of ``OUT``::

    scores/part-<unit key>.parquet   one per work unit, written atomically when all its rows are in
    candidates.parquet              ranked candidates, written after every unit is committed
    _run.json, _shards.parquet      the run's fingerprint and input listing (score.fingerprint)
    _lease.json                     held by the run writing the folder (score.lease)
    _quarantine.json                shards that could not be opened at all, with reasons
    _manifest.json                  written last: its presence means the output is complete

Every committed row has a finite ``score`` and status ``ok``, or a null score and a status
that says why it was quarantined; rows whose id is missing or unreadable have a null id.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Callable

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lensscan import duck
from lensscan.errors import OutputError, StorageError
from lensscan.io import storage
from lensscan.io.batch import DUPLICATE_ID, OK, UNREADABLE, id_is_null, quarantine_batch
from lensscan.io.parquet import write_table_atomic
from lensscan.score.duplicates import flag_duplicates, is_scored

SCORES = "scores"
CANDIDATES = "candidates.parquet"
MANIFEST = "_manifest.json"
QUARANTINE = "_quarantine.json"
NON_FINITE_SCORE = "non_finite_score: the model returned NaN or infinity"
#: A part's footer key: the arithmetic its scores were computed in (fp32, fp16, bf16), or
#: NO_SCORES for a rejected shard's rows (see lensscan.score.arithmetic).
ARITHMETIC_KEY = "lensscan.arithmetic"
NO_SCORES = "none"


def part_url(out: str, key: str) -> str:
    return storage.join(out, SCORES, f"part-{key}.parquet")


def committed_units(out: str) -> set[str]:
    """Keys of the units whose part file exists."""
    fs, path = storage.filesystem(storage.join(out, SCORES))
    with storage.failures_named(storage.join(out, SCORES), "list"):
        if not fs.exists(path):
            return set()
        names = [posixpath.basename(p) for p in fs.ls(path, detail=False)]
    return {n[len("part-"):-len(".parquet")] for n in names
            if n.startswith("part-") and n.endswith(".parquet")}


def _column(values: np.ndarray, name: str, null: np.ndarray) -> pa.Array:
    if is_scored(name):
        v = np.asarray(values, np.float32)
        return pa.array(v, mask=null | np.isnan(v))
    if name in ("ra", "dec"):
        v = np.asarray(values, np.float64)
        return pa.array(v, mask=np.isnan(v))
    if name == "object_id":
        if values.dtype.kind in "iu":
            return pa.array(values.astype(np.int64), mask=null)
        arr = pa.array([None if z else v for v, z in zip(values.tolist(), null, strict=True)])
        return arr.cast(pa.string()) if pa.types.is_null(arr.type) else arr
    if values.dtype.kind == "O":
        return pa.array(values.tolist())
    return pa.array(values)


def settle_status(status: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Statuses with every ``ok`` row that has no finite score quarantined as
    ``non_finite_score``: a row is scored with a finite score or quarantined with a reason."""
    status = np.asarray(status, dtype=object).copy()
    bad = (status == OK) & ~np.isfinite(np.asarray(score, np.float32))
    status[bad] = NON_FINITE_SCORE
    return status


def write_unit(out: str, key: str, rows: dict[str, np.ndarray], order: list[str],
               arithmetic: str | None = None) -> tuple[int, int]:
    """Write one unit's scored rows (sorted by row) atomically; returns the rows written and
    how many of them were scored (not quarantined).

    Rows not ``ok`` get null scores; rows whose status says the id is missing get a null id.
    ``arithmetic`` (what the scores were computed in) goes into the footer.
    """
    idx = np.argsort(rows["row"], kind="stable")
    rows = {c: np.asarray(rows[c])[idx] for c in order}
    rows["status"] = settle_status(rows["status"], rows["score"])
    quarantined = rows["status"] != OK
    null_id = id_is_null(rows["status"])
    table = pa.table({c: _column(rows[c], c, null_id if c == "object_id" else quarantined)
                      for c in order})
    if arithmetic:
        table = table.replace_schema_metadata({ARITHMETIC_KEY: arithmetic})
    write_table_atomic(part_url(out, key), table)
    return table.num_rows, int(np.count_nonzero(~quarantined))


def write_rejected(out: str, key: str, shard: str, rows: int, reason: str,
                   order: list[str], ids_as_strings: bool) -> int:
    """Commit the rows of a shard rejected at planning (its footer said how many): every row
    quarantined as ``unreadable`` with the reason, so that the rows are counted."""
    n = int(rows)
    batch = quarantine_batch(np.arange(n), reason, ids_as_strings, image=None)
    batch["shard"] = np.full(n, shard, dtype=object)
    batch.update({c: np.full(n, np.nan, np.float32) for c in order if is_scored(c)})
    return write_unit(out, key, batch, order, NO_SCORES)[0]


def finalize(out: str, keys: list[str], threshold: float | None, top: int | None,
             guard: Callable[[], None] = lambda: None) -> dict:
    """Flag duplicate ids across the committed parts of this run, count them and write
    ``candidates.parquet``.

    Only the parts named in ``keys`` (the units of the current input) are read, so a stale part
    of another input in the same folder is never counted. ``unreadable_parts`` lists the shards
    with ``unreadable`` rows, their reason and rows. ``guard`` is called before the parts
    are rewritten and before the candidates are written (it raises when the lease is lost).
    """
    files = [part_url(out, k) for k in keys]
    if not files:
        return {"rows_read": 0, "rows_scored": 0, "rows_quarantined": 0, "candidates": 0,
                "rows_unreadable": 0, "duplicate_object_ids": 0, "quarantine_reasons": {},
                "unreadable_parts": []}
    try:
        return _finalize(out, files, threshold, top, guard)
    except duckdb.Error as exc:
        bad = damaged_part(files)  # a part damaged since it was committed: name it
        if bad:
            raise OutputError(f"{bad[0]}: damaged part ({bad[1]}); rerun with --overwrite to "
                              "score anew") from None
        # the parts are sound: every part stays committed. Memory or a full spill disk pass
        # (a rerun resumes); another failure would come back, so it is no storage error
        why = f"the committed parts could not be counted ({str(exc).splitlines()[0][:200]})"
        if isinstance(exc, RESUMABLE):
            raise StorageError(storage.join(out, SCORES), why) from None
        raise OutputError(f"{storage.join(out, SCORES)}: {why}") from None


#: DuckDB failures that pass (I/O, memory: a full spill disk): a rerun resumes
RESUMABLE = tuple(getattr(duckdb, name) for name in ("IOException", "OutOfMemoryException")
                  if hasattr(duckdb, name))


def check_top(top: int | None) -> None:
    """Refuse a ``top`` that DuckDB's LIMIT cannot take (negative, or beyond int64), in one
    line: before a survey is scored, not when its candidates are chosen."""
    if top is not None and top < 0:
        raise ValueError(f"--top {top}: must be 0 or more")
    if top is not None and top >= 2**63:
        raise ValueError(f"--top {top}: too large (at most {2**63 - 1})")


#: a part's columns and the Parquet types they must have (what a reader ranks and filters by)
PART_TYPES = {"score": (pa.float32(), pa.float64()), "ra": (pa.float64(), pa.float32()),
              "dec": (pa.float64(), pa.float32()), "logit": (pa.float32(), pa.float64())}


def damaged_part(urls: list[str]) -> tuple[str, str] | None:
    """The first of the parts ``urls`` that cannot be read whole (a footer, or pages), or whose
    columns break the contract (text scores would rank as text), and why; None when all are
    sound. Reads every part: for error paths, to name the file."""
    for url in urls:
        fs, path = storage.pyarrow_filesystem(url)
        try:
            with storage.failures_named(url):
                schema = pq.read_table(path, filesystem=fs).schema
        except (pa.ArrowException, OSError) as exc:
            if isinstance(exc, StorageError):
                raise
            return url, " ".join(str(exc).split())[:200] or type(exc).__name__
        wrong = [f"column {c!r} holds {schema.field(c).type}" for c, ok in PART_TYPES.items()
                 if c in schema.names and schema.field(c).type not in ok]
        if wrong:
            return url, wrong[0]
    return None


def _finalize(out: str, files: list[str], threshold: float | None, top: int | None,
              guard: Callable[[], None]) -> dict:
    """:func:`finalize`'s work on the committed parts ``files``."""
    con = duck.connect(out)
    storage.list_into_cache(storage.join(out, SCORES))  # no HEAD per file and query
    guard()
    if flag_duplicates(con, files):  # parts rewritten: list them again
        storage.list_into_cache(storage.join(out, SCORES))
    src = f"read_parquet([{', '.join(duck.sql_path(f) for f in files)}], union_by_name=true)"
    n_all, n_ok = con.execute(
        f"SELECT count(*), count(*) FILTER (WHERE status = '{OK}') FROM {src}").fetchone()
    # one pass over the statuses: counts by reason, and per shard for unreadable rows (the
    # shards whose bytes failed under a unit's read)
    reasons: dict[str, int] = {}
    bad = []
    for reason, shard, status, n in con.execute(
            f"SELECT split_part(status, ':', 1) AS r, CASE WHEN starts_with(status, "
            f"'{UNREADABLE}:') THEN shard END AS s, min(status), count(*) FROM {src} "
            f"WHERE status <> '{OK}' GROUP BY ALL ORDER BY r, s").fetchall():
        reasons[reason] = reasons.get(reason, 0) + int(n)
        if shard is not None:
            bad.append((shard, status, n))
    ranked = duck.ranked_sql(src, "*", threshold if top is None else None,
                             order=duck.rank_order(duck.columns(con, src)))
    limit = f"LIMIT {int(top)}" if top is not None else ""
    table = duck.fetch_arrow(con, f"{ranked} ORDER BY rank {limit}")
    table = table.set_column(0, "rank", table.column("rank").cast(pa.int64()))
    guard()
    write_table_atomic(storage.join(out, CANDIDATES), table)
    return {"rows_read": int(n_all), "rows_scored": int(n_ok),
            "rows_quarantined": int(n_all - n_ok), "candidates": table.num_rows,
            "rows_unreadable": int(reasons.get(UNREADABLE, 0)),
            "duplicate_object_ids": int(reasons.get(DUPLICATE_ID, 0)),
            "quarantine_reasons": reasons,
            "unreadable_parts": [{"shard": sh, "reason": st[len(UNREADABLE) + 2:],
                                  "rows": int(n)} for sh, st, n in bad]}


def write_json(url: str, obj: dict) -> None:
    storage.write_bytes_atomic(url, json.dumps(obj, indent=2, default=str).encode())
