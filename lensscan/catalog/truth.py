"""Recovery of known lenses: join a truth table to scoring output by id or by position."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa

from lensscan import duck
from lensscan.catalog.query import angular_distance_sql, source_sql
from lensscan.io import storage

#: Grades (from the gallery's CSV export) that do not count as a known lens.
NOT_A_LENS = {"not a lens", "n", "no", "0"}


def read_truth(url: str) -> pa.Table:
    """Read a truth table (CSV, Parquet, FITS or VOTable) of known lenses.

    It needs ``object_id`` or ``ra``/``dec`` columns. A ``grade`` column (the gallery's export)
    keeps only rows not graded "not a lens"; a ``label`` column keeps only ``label == 1``.
    """
    ext = os.path.splitext(url.lower().removesuffix(".gz"))[1]
    data = storage.read_bytes(url)
    if ext == ".csv":
        import pyarrow.csv as pacsv

        table = pacsv.read_csv(pa.BufferReader(data),
                               convert_options=pacsv.ConvertOptions(
                                   column_types={"object_id": pa.string()}))
    elif ext == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(pa.BufferReader(data))
    elif ext in (".fits", ".fit", ".xml", ".vot"):
        import io

        from astropy.table import Table

        t = Table.read(io.BytesIO(data), format="fits" if ext.startswith(".fit") else "votable")
        table = pa.table({c.lower(): np.asarray(t[c]) for c in t.colnames})
    else:
        raise ValueError(f"{url}: truth table must be .csv, .parquet, .fits or VOTable")
    names = [c.lower() for c in table.column_names]
    table = table.rename_columns(names)
    if "object_id" not in names and not {"ra", "dec"} <= set(names):
        raise ValueError(f"{url}: truth table needs object_id or ra and dec (has {names})")
    if "grade" in names:
        grades = [str(g).strip().lower() for g in table.column("grade").to_pylist()]
        table = table.filter(pa.array([g not in NOT_A_LENS for g in grades]))
    if "label" in names:
        table = table.filter(pa.compute.equal(table.column("label"), 1))
    return table


def recovery(out: str, truth: pa.Table, top: int | None = None,
             radius_arcsec: float | None = None) -> tuple[pa.Table, dict]:
    """Rank of every known lens in the output, and recall/purity in the top ``top``.

    Matching is by ``object_id`` (compared as text) unless ``radius_arcsec`` is given, in which
    case each known lens takes the nearest scored object within that radius.
    """
    con = duck.connect(out)
    con.register("truth_in", truth)
    src = source_sql(out)
    ranked = (f"SELECT object_id, ra, dec, score, row_number() OVER "
              f"(ORDER BY score DESC, object_id) AS rank FROM {src} "
              "WHERE status = 'ok' AND score IS NOT NULL")
    if radius_arcsec is None:
        if "object_id" not in truth.column_names:
            raise ValueError("truth has no object_id: give a cross-match radius")
        sql = (f"WITH r AS ({ranked}) SELECT CAST(t.object_id AS VARCHAR) AS known_id, "
               "r.rank, r.score, r.ra, r.dec FROM truth_in t LEFT JOIN r "
               "ON CAST(r.object_id AS VARCHAR) = CAST(t.object_id AS VARCHAR) "
               "ORDER BY r.rank NULLS LAST, known_id")
    else:
        if not {"ra", "dec"} <= set(truth.column_names):
            raise ValueError("a cross-match needs ra and dec in the truth table")
        rad = float(radius_arcsec)
        dist = angular_distance_sql("t.ra", "t.dec", "r.ra", "r.dec")
        known = ("CAST(t.object_id AS VARCHAR)" if "object_id" in truth.column_names
                 else "printf('%.6f %+.6f', t.ra, t.dec)")
        sql = (f"WITH r AS ({ranked}), m AS (SELECT {known} AS known_id, r.rank, r.score, "
               f"r.ra, r.dec, {dist} AS sep FROM truth_in t "
               f"LEFT JOIN r ON r.dec BETWEEN t.dec - {rad / 3600!r} AND t.dec + "
               f"{rad / 3600!r} AND {dist} <= {rad!r}) "
               "SELECT known_id, arg_min(rank, sep) AS rank, arg_min(score, sep) AS score, "
               "arg_min(ra, sep) AS ra, arg_min(dec, sep) AS dec, min(sep) AS separation_arcsec "
               "FROM m GROUP BY known_id ORDER BY rank NULLS LAST, known_id")
    table = duck.fetch_arrow(con, sql)
    ranks = np.array([r if r is not None else np.inf for r in table.column("rank").to_pylist()],
                     dtype=float)
    n_known = table.num_rows
    summary = {"known": n_known, "matched": int(np.isfinite(ranks).sum())}
    if top is not None:
        found = int((ranks <= top).sum())
        summary.update({"top": top, "recovered": found,
                        "recall": found / n_known if n_known else None,
                        "purity": found / top if top else None})
    return table, summary
