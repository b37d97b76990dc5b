"""Write a query result as a terminal table, CSV, JSON, Parquet, FITS or VOTable."""

from __future__ import annotations

import io
import json
import sys

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from lensscan.io import storage

FORMATS = ("table", "csv", "json", "parquet", "fits", "votable")


def to_text_table(table: pa.Table, max_rows: int = 50) -> str:
    """A fixed-width text table (floats to 6 significant digits)."""
    cols = table.column_names
    rows = table.slice(0, max_rows).to_pylist()

    def fmt(v) -> str:
        if v is None:
            return ""
        if isinstance(v, float):
            return f"{v:.6g}"
        return str(v)

    cells = [[fmt(r[c]) for c in cols] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(cols, widths, strict=True)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    if table.num_rows > max_rows:
        lines.append(f"... {table.num_rows - max_rows} more rows")
    return "\n".join(lines)


def _astropy(table: pa.Table):
    from astropy.table import Table

    t = Table()
    for name in table.column_names:
        col = table.column(name)
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            t[name] = np.array([v if v is not None else "" for v in col.to_pylist()], dtype=str)
        else:
            t[name] = col.to_numpy(zero_copy_only=False)
    return t


def write(table: pa.Table, fmt: str, path: str | None = None) -> None:
    """Write ``table`` to ``path`` (any URL), or to stdout when ``path`` is None."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, not {fmt!r}")
    if fmt == "table":
        data = (to_text_table(table, max_rows=table.num_rows if path else 50) + "\n").encode()
    elif fmt == "csv":
        buf = io.BytesIO()
        pacsv.write_csv(table, buf)
        data = buf.getvalue()
    elif fmt == "json":
        data = (json.dumps(table.to_pylist(), default=str) + "\n").encode()
    elif fmt == "parquet":
        buf = io.BytesIO()
        pq.write_table(table, buf)
        data = buf.getvalue()
    else:
        buf = io.BytesIO()
        _astropy(table).write(buf, format="fits" if fmt == "fits" else "votable")
        data = buf.getvalue()
    if path:
        storage.write_bytes_atomic(path, data)
    elif fmt in ("parquet", "fits"):
        raise ValueError(f"--format {fmt} needs --output FILE")
    else:
        sys.stdout.write(data.decode())
