"""Query scoring output with DuckDB directly over its Parquet files, on any storage URL.

Only the needed columns are read, and score cuts prune row groups by their statistics. A result
that holds ``p_lens`` also says how many real lenses it holds in expectation
(:func:`expected_in`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from lensscan import duck
from lensscan.catalog.output import check_output
from lensscan.catalog.where import referenced_columns, where_sql
from lensscan.errors import OutputError
from lensscan.io import storage
from lensscan.score import commit, expected, fingerprint

#: Columns returned by default (member scores are added when present, and ``p_lens`` when the
#: run calibrated it).
DEFAULT_COLUMNS = ("object_id", "ra", "dec", "score", "shard", "row")


@dataclass(frozen=True)
class Cone:
    """A cone on the sky: centre (degrees) and radius (arcseconds)."""

    ra: float
    dec: float
    radius_arcsec: float


def angular_distance_sql(ra: float | str, dec: float | str, ra_col: str = "ra",
                         dec_col: str = "dec") -> str:
    """SQL expression of the great-circle distance (arcsec) between (ra, dec) and the row's
    (ra_col, dec_col), all in degrees; numbers or SQL expressions. Haversine: exact across
    RA = 0/360 and at the poles."""
    ra, dec = (repr(float(v)) if isinstance(v, (int, float)) else v for v in (ra, dec))
    return (
        "2 * degrees(asin(least(1, sqrt("
        f"pow(sin(radians({dec_col} - {dec}) / 2), 2) + "
        f"cos(radians({dec_col})) * cos(radians({dec})) * "
        f"pow(sin(radians({ra_col} - {ra}) / 2), 2)"
        ")))) * 3600"
    )


def source_sql(out: str, candidates: bool = False) -> str:
    """The FROM clause over the scores dataset (or the candidate file)."""
    if candidates:
        return f"read_parquet({duck.sql_path(storage.join(out, commit.CANDIDATES))})"
    return (f"read_parquet({duck.sql_path(storage.join(out, commit.SCORES), '*.parquet')}, "
            "union_by_name=true)")


def query(
    out: str,
    top: int | None = None,
    min_score: float | None = None,
    cone: Cone | None = None,
    where: str | None = None,
    columns: list[str] | None = None,
    candidates: bool = False,
) -> pa.Table:
    """Select scored objects, best first.

    Parameters
    ----------
    out : str
        Output folder of ``lensscan score``.
    top : int, optional
        Keep the ``top`` highest scores (after the other cuts).
    min_score : float, optional
        Keep ``score >= min_score``.
    cone : Cone, optional
        Keep objects within the cone; adds ``distance_arcsec``.
    where : str, optional
        One boolean expression over the output columns (e.g. ``"ra BETWEEN 150 AND 151"``),
        checked by :func:`lensscan.catalog.where.where_sql`: no statements, subqueries or
        table functions; safe with untrusted text.
    columns : list of str, optional
        Columns to return (default :data:`DEFAULT_COLUMNS` plus member scores, and ``p_lens``
        when the run computed it).
    candidates : bool
        Query ``candidates.parquet`` instead of every scored row.

    Returns
    -------
    pyarrow.Table
        With ``rank`` (1 = highest score among all scored rows) first.
    """
    check_numbers(top, min_score, cone)
    check_output(out)
    con = duck.connect(out)
    duck.confine(con, out)  # this output only: no other file, bucket or URL from here on
    src = source_sql(out, candidates)
    available = scores_columns(con, out, src)
    cols = _columns(out, columns, available, cone is not None)
    preds, select, used = _filters(min_score, cone, where, available)
    inner = sorted((set(cols) | used | {"ra", "dec", "score", "object_id"})
                   & set(available))
    ranked = duck.ranked_sql(src, ", ".join(_quote(c) for c in inner),
                             order=duck.rank_order(available))
    sql = (f"WITH ranked AS ({ranked}) "
           f"SELECT {', '.join(['rank'] + [_quote(c) for c in cols] + select)} FROM ranked "
           f"WHERE {' AND '.join(preds or ['true'])} ORDER BY rank")
    if top is not None:
        sql += f" LIMIT {int(top)}"
    _check_boolean(con, ranked, preds, where)
    return _fetch(con, out, src, sql)


def _fetch(con, out: str, src: str, sql: str) -> pa.Table:
    """Run a listing's SQL, after :func:`check_finite`; DuckDB's errors as one line."""
    try:
        check_finite(con, out, src)
        return duck.fetch_arrow(con, sql)
    except OutputError:
        raise
    except Exception as exc:  # duckdb raises many types; report the SQL problem plainly
        if reading_failed(exc):
            raise unreadable(out, exc) from None
        raise ValueError(f"query failed: {str(exc).splitlines()[0]}") from None


def check_finite(con, out: str, src: str) -> None:
    """Refuse an output holding a scored row whose score is not finite: lensscan never writes
    one (NaN would rank first and shift every rank), so the output was edited or damaged."""
    n, who = con.execute(f"SELECT count(*), any_value(CAST(object_id AS VARCHAR)) FROM {src} "
                         f"WHERE {duck.SCORED} AND NOT isfinite(score)").fetchall()[0]
    if n:
        raise OutputError(f"{out}: {n} scored rows have a non-finite score (object {who!r} "
                          "among them); lensscan score writes none, so the output was edited or "
                          "is damaged: rescore with --overwrite")


def _check_boolean(con, ranked: str, preds: list[str], where: str | None) -> None:
    """Refuse a filter (the last of ``preds``) that is not a condition (``object_id``,
    ``score``: DuckDB would take a number that is not 0 as true); its type is read from the
    plan, no row is."""
    if where is None:
        return
    pred = preds[-1]
    try:
        kind = con.execute(f"DESCRIBE WITH ranked AS ({ranked}) SELECT {pred} AS w "
                           "FROM ranked").fetchall()[0][1]
    except Exception as exc:  # duckdb raises many types; the query reports them as it runs
        if reading_failed(exc):
            return
        raise ValueError(f"query failed: {str(exc).splitlines()[0]}") from None
    if kind not in ("BOOLEAN", '"NULL"', "NULL"):
        raise ValueError(f"--where {where!r}: not a condition (it gives {kind}); compare it, "
                         "e.g. score > 0.5")


def scores_columns(con, out: str, src: str) -> list[str]:
    """The columns of the output's scores (``src``); a part that cannot be read, or whose
    columns break the contract (text scores, which would rank as text), is refused by name."""
    try:
        types = {r[0]: r[1] for r in con.execute(f"DESCRIBE SELECT * FROM {src}").fetchall()}
    except Exception as exc:  # duckdb raises many types; e.g. no part committed yet
        raise unreadable(out, exc) from None
    if any(types.get(c, "FLOAT") not in ("FLOAT", "DOUBLE") for c in commit.PART_TYPES):
        raise unreadable(out, None)
    return list(types)


def reading_failed(exc: Exception) -> bool:
    """True when a DuckDB error is about reading the files (a damaged part), not the query."""
    import duckdb

    if type(exc) is duckdb.Error or isinstance(exc, duckdb.IOException):
        return True  # thrift and file errors come as plain Error or IOException
    # a filter's own input errors (a bad regular expression) are InvalidInputException too
    return isinstance(exc, duckdb.InvalidInputException) and "parquet" in str(exc).lower()


def unreadable(out: str, exc: Exception | None) -> ValueError:
    """The error of an output whose scores cannot be read: the damaged part named when one is
    (every part is read to find it), else DuckDB's words."""
    parts = sorted(commit.part_url(out, k) for k in commit.committed_units(out))
    bad = commit.damaged_part(parts)
    if bad is not None:
        return ValueError(f"{bad[0]}: damaged part of {out} ({bad[1]}); rescore with "
                          "--overwrite")
    why = str(exc).splitlines()[0] if exc is not None else "unexpected column types"
    return ValueError(f"{out}: cannot read the scores ({why})")


def check_numbers(top: int | None, min_score: float | None, cone: Cone | None) -> None:
    """Refuse numbers that select nothing meaningful, in one line.

    Raises
    ------
    ValueError
        For a ``top`` that is negative or beyond int64, a ``min_score`` that is not finite, or
        a cone whose centre is off the sky or whose radius is not a positive number of arcsec.
    """
    commit.check_top(top)
    if min_score is not None and not math.isfinite(min_score):
        raise ValueError(f"--min-score {min_score}: must be a finite score")
    if cone is not None:
        ra, dec, r = cone.ra, cone.dec, cone.radius_arcsec
        if not (0 <= ra < 360 and -90 <= dec <= 90 and math.isfinite(r) and r > 0):
            raise ValueError(f"--cone {ra!r} {dec!r} {r!r}: RA must be in [0, 360) and Dec in "
                             "[-90, 90] degrees, the radius a positive number of arcsec")


def _columns(out: str, columns: list[str] | None, available: list[str],
             cone: bool = False) -> list[str]:
    """The columns asked for, or the default ones (see :func:`query`) among ``available``."""
    default = (*DEFAULT_COLUMNS, "p_lens") if run_prior(out) is not None else DEFAULT_COLUMNS
    twice = sorted({c for c in columns or [] if columns.count(c) > 1})
    if twice:
        raise ValueError(f"--columns names {twice} more than once")
    if columns and "distance_arcsec" in columns and not cone:
        raise ValueError("--columns distance_arcsec: it comes with --cone")
    # rank always comes first, and distance_arcsec with --cone: asking for them is no error
    cols = ([c for c in columns if c not in ("rank", "distance_arcsec")] if columns else
            [c for c in available if c in default or c.startswith("score_")])
    missing = [c for c in cols if c not in available]
    if missing:
        raise ValueError(f"unknown columns {missing}; available: {available}")
    return cols


def run_prior(out: str) -> float | None:
    """The prevalence the run behind ``out`` calibrated ``p_lens`` to (None: no p_lens)."""
    rec = fingerprint.read(out)
    return rec.prior if rec is not None else None


def expected_in(table: pa.Table, prior: float | None = None) -> dict | None:
    """Expected real lenses (sum of ``p_lens``, with its standard deviation) and purity among
    the rows of a query result; None when it holds no ``p_lens`` values."""
    if "p_lens" not in table.column_names:
        return None
    p = table.column("p_lens").to_numpy(zero_copy_only=False).astype(np.float64)
    if not np.isfinite(p).any():
        return None
    return {"rows": table.num_rows, **expected.summary(p), "prior": prior}


def _filters(min_score: float | None, cone: Cone | None, where: str | None,
             available: list[str]) -> tuple[list[str], list[str], set[str]]:
    """SQL predicates of the cuts, extra select expressions, and the columns ``where`` uses."""
    preds: list[str] = []
    select: list[str] = []
    if min_score is not None:
        preds.append(f"score >= {float(min_score)!r}")
    if cone is not None:
        r_deg = cone.radius_arcsec / 3600.0
        preds.append(f"dec BETWEEN {cone.dec - r_deg!r} AND {cone.dec + r_deg!r}")
        dist = angular_distance_sql(cone.ra, cone.dec)
        preds.append(f"{dist} <= {float(cone.radius_arcsec)!r}")
        select.append(f"{dist} AS distance_arcsec")
    used: set[str] = set()
    if where is not None:
        preds.append(where_sql(where, [*available, "rank"]))
        used = referenced_columns(where) - {"rank"}
    return preds, select, used


def _quote(column: str) -> str:
    """A column name as a quoted SQL identifier."""
    return '"' + column.replace('"', '""') + '"'
