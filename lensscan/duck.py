"""A DuckDB connection that reads any fsspec URL (local, s3:// via AWS_ENDPOINT_URL, gs://,
memory://) without network extensions: fsspec filesystems are registered with DuckDB."""

from __future__ import annotations

import duckdb
import pyarrow as pa

from lensscan.io import storage


def connect(*urls: str) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection able to read the given URLs' filesystems."""
    con = duckdb.connect()
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


def fetch_arrow(con: duckdb.DuckDBPyConnection, sql: str) -> pa.Table:
    """Run ``sql`` and return the result as a pyarrow Table (DuckDB 1.x and 2.x)."""
    rel = con.sql(sql)
    if hasattr(rel, "to_arrow_table"):
        return rel.to_arrow_table()
    return rel.arrow()


def sql_path(url: str) -> str:
    """A URL as DuckDB sees it, quoted as a SQL string literal."""
    if storage.is_local(url):
        url = url.removeprefix("file://")
    return "'" + str(url).replace("'", "''") + "'"
