"""A DuckDB connection that reads any fsspec URL (local, s3:// via AWS_ENDPOINT_URL, gs://,
memory://) without network extensions: fsspec filesystems are registered with DuckDB."""

from __future__ import annotations

import os
import tempfile

import duckdb
import pyarrow as pa

from lensscan.io import storage


def connect(*urls: str) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection able to read the given URLs' filesystems; large sorts
    and groupings spill to a temporary folder of this machine."""
    con = duckdb.connect()
    con.execute("SET temp_directory = ?", [os.path.join(tempfile.gettempdir(), "lensscan-duckdb")])
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


def sql_path(url: str) -> str:
    """A URL as DuckDB sees it, quoted as a SQL string literal."""
    if storage.is_local(url):
        url = os.path.abspath(str(url).removeprefix("file://"))
    return "'" + str(url).replace("'", "''") + "'"
