"""A DuckDB connection that reads any fsspec URL (local, s3:// via AWS_ENDPOINT_URL, gs://,
memory://) without network extensions: fsspec filesystems are registered with DuckDB; and the
one ranking of scored rows that the candidates, queries and recovery share."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from functools import cache

import duckdb
import pyarrow as pa

from lensscan.config import GLOB_CHARS
from lensscan.io import storage
from lensscan.io.batch import OK


@cache
def spill_folder() -> str:
    """This process's own folder for DuckDB's spills (mode 0700, removed at exit): a fixed name
    under /tmp could be made first, or read, by another user of the machine."""
    path = tempfile.mkdtemp(prefix="lensscan-duckdb-")
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def connect(*urls: str) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection able to read the given URLs' filesystems; large sorts
    and groupings spill to a temporary folder of this machine."""
    con = duckdb.connect()
    con.execute("SET temp_directory = ?", [spill_folder()])
    seen = set()
    for url in urls:
        if storage.is_local(url):
            continue
        fs, _ = storage.filesystem(url)
        proto = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        if proto not in seen:
            con.register_filesystem(fs)
            seen.add(proto)
    return con


def confine(con: duckdb.DuckDBPyConnection, *folders: str) -> None:
    """Let ``con`` touch no file outside ``folders`` (URLs), then lock its configuration: no
    other local file, bucket or URL can be read or written, whatever SQL runs next."""
    allowed = [_dir(f) for f in folders]
    allowed += [escape_glob(a) for a in allowed if escape_glob(a) != a]  # as sql_path names them
    con.execute("SET allowed_directories = ?", [allowed])
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


def _dir(url: str) -> str:
    url = str(url)
    if storage.is_local(url):
        url = os.path.abspath(url.removeprefix("file://"))
    return url.rstrip("/") + "/"


def fetch_arrow(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> pa.Table:
    """Run ``sql`` and return the result as a pyarrow Table (DuckDB 1.x and 2.x)."""
    rel = con.sql(sql, params=params) if params else con.sql(sql)
    if hasattr(rel, "to_arrow_table"):
        return rel.to_arrow_table()
    return rel.arrow()


def fetch_batches(con: duckdb.DuckDBPyConnection, sql: str, rows: int = 65536
                  ) -> pa.RecordBatchReader:
    """Run ``sql`` and stream its result as Arrow record batches of up to ``rows`` rows
    (DuckDB 1.x and 2.x): a result too large for memory is never held whole."""
    rel = con.sql(sql)
    if hasattr(rel, "to_arrow_reader"):
        return rel.to_arrow_reader(rows)
    return rel.record_batch(rows)


def escape_glob(path: str) -> str:
    """``path`` with the characters DuckDB reads as a glob (``*``, ``?``, ``[``) written as
    one-character classes: a pattern that matches this very path."""
    return "".join(f"[{c}]" if c in GLOB_CHARS else c for c in path)


def sql_path(url: str, glob: str | None = None) -> str:
    """A URL as DuckDB sees it, quoted as a SQL string literal. The characters DuckDB reads as
    a glob (``*``, ``?``, ``[``) are escaped as one-character classes, so that the path names
    this very file or folder (``runs/o[1]`` is not ``runs/o1``); ``glob`` (``"*.parquet"``) is
    appended under it as a pattern."""
    if storage.is_local(url):
        url = os.path.abspath(str(url).removeprefix("file://"))
    url = escape_glob(str(url))
    if glob:
        url = url.rstrip("/") + "/" + glob
    return "'" + url.replace("'", "''") + "'"


#: The rows of scoring output that have a score (the others are quarantined, with a reason).
SCORED = f"status = '{OK}' AND score IS NOT NULL"
#: The order of a ranked list: highest score first, then the ensemble logit (float32 scores
#: saturate: every logit above about 17 is a score of 1.0, and near it they step coarsely),
#: ties by object id.
RANK_ORDER = "score DESC, logit DESC, object_id"
#: The same for an output written before the ``logit`` column existed.
RANK_ORDER_NO_LOGIT = "score DESC, object_id"


def columns(con: duckdb.DuckDBPyConnection, src: str) -> list[str]:
    """The column names of ``src`` (a FROM clause)."""
    return [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {src}").fetchall()]


def rank_order(columns) -> str:
    """:data:`RANK_ORDER` for a source with these columns."""
    return RANK_ORDER if "logit" in columns else RANK_ORDER_NO_LOGIT


def ranked_sql(src: str, columns: str = "*", min_score: float | None = None,
               order: str = RANK_ORDER) -> str:
    """A SELECT of the scored rows of ``src`` (a FROM clause) with their ``rank`` first:
    1 = the highest score among every scored row (``order``: :data:`RANK_ORDER`, or
    :func:`rank_order` of the source's columns).

    ``columns`` is the SQL list of the columns to keep (code's own, never text from a shard or
    a user: a user's filter goes through :func:`lensscan.catalog.where.where_sql`). A
    ``min_score`` cut is made before ranking, which keeps the ranks: the rows at or above a
    score are the top of the list.
    """
    where = SCORED if min_score is None else f"{SCORED} AND score >= {float(min_score)!r}"
    return (f"SELECT row_number() OVER (ORDER BY {order}) AS rank, {columns} "
            f"FROM {src} WHERE {where}")
