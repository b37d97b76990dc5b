"""Recovery of known lenses: join a truth table to scoring output by id or by position."""

from __future__ import annotations

import gzip
import math
import os
import warnings

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lensscan import duck
from lensscan.catalog.output import check_output
from lensscan.catalog.query import (
    angular_distance_sql,
    check_finite,
    check_numbers,
    scores_columns,
    source_sql,
    unreadable,
)
from lensscan.data import grades
from lensscan.errors import OutputError
from lensscan.io import storage

#: Column names recognised (case-insensitive) for each role, first match wins.
ALIASES = {
    "object_id": ("object_id", "objid", "obj_id", "objectid", "id", "source_id", "name"),
    "ra": ("ra", "raj2000", "ra_j2000", "ra_deg", "radeg", "alpha_j2000", "ra_icrs", "_raj2000"),
    "dec": ("dec", "dej2000", "decj2000", "dec_j2000", "dec_deg", "decdeg", "delta_j2000",
            "de_icrs", "dec_icrs", "_dej2000"),
}


#: An id compared without the white space around it (Arrow's utf8_trim_whitespace: spaces,
#: tabs, line ends), as truth ids are read.
_TRIMMED = r"regexp_replace(CAST({} AS VARCHAR), '^\s+|\s+$', '', 'g')"


def _read_table(url: str, id_column: str | None = None) -> pa.Table:
    """A table file as Arrow, columns as named in the file (FITS big-endian made native); in a
    CSV the id columns (``id_column`` and the known names) are text, so ``00123`` stays so."""
    ext = os.path.splitext(url.lower().removesuffix(".gz"))[1]
    data = storage.read_bytes(url)
    if url.lower().endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise ValueError(f"{url}: not a readable gzip file ({exc})") from None
    if ext == ".csv":
        import pyarrow.csv as pacsv

        data = data.removeprefix(b"\xef\xbb\xbf")  # a spreadsheet's byte-order mark
        head = data.split(b"\n", 1)[0].decode(errors="replace").split(",")
        names = [h.strip().strip('"') for h in head]
        id_names = {*ALIASES["object_id"], *([id_column.lower()] if id_column else [])}
        ids = {n: pa.string() for n in names if n.lower() in id_names}
        return pacsv.read_csv(pa.BufferReader(data),
                              convert_options=pacsv.ConvertOptions(column_types=ids))
    if ext == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(pa.BufferReader(data))
    if ext in (".fits", ".fit", ".xml", ".vot"):
        import io

        from astropy.table import Table

        with warnings.catch_warnings():  # astropy's verify warnings: the error, if any, says it
            warnings.simplefilter("ignore")
            t = Table.read(io.BytesIO(data),
                           format="fits" if ext.startswith(".fit") else "votable")
        # a masked value (a FITS TNULL, an empty VOTable cell) is a null, not the value behind it
        return pa.table({c: pa.array(_native(np.asarray(t[c])), mask=_mask(t[c]))
                         for c in t.colnames})
    raise ValueError(f"{url}: truth table must be .csv, .parquet, .fits or VOTable")


def _mask(column: np.ndarray) -> np.ndarray | None:
    mask = np.ma.getmaskarray(column)
    return mask if mask.ndim == 1 and mask.any() else None


def _native(a: np.ndarray) -> np.ndarray | list:
    """FITS columns are big-endian and strings may be bytes: native values Arrow accepts."""
    if a.dtype.kind == "S":
        return [v.decode().strip() for v in a.tolist()]
    if a.dtype.kind == "U":
        return [v.strip() for v in a.tolist()]
    return a.astype(a.dtype.newbyteorder("=")) if a.dtype.byteorder not in ("=", "|") else a


def _pick(url: str, names: list[str], role: str, given: str | None) -> str | None:
    """The column playing ``role``: the one named in ``given`` or the first known alias."""
    lower = {n.lower(): n for n in names}
    if given:
        if given.lower() not in lower:
            raise ValueError(f"{url}: no column {given!r} for {role} (columns: {names})")
        name = given.lower()
    else:
        name = next((a for a in ALIASES[role] if a in lower), None)
    if name is None:
        return None
    same = [n for n in names if n.lower() == name]
    if len(same) > 1:  # "ra" and "RA": which one is meant cannot be guessed
        raise ValueError(f"{url}: columns {same} differ only by case, and either could be "
                         f"the {role}; rename one or name it with --truth-cols")
    return same[0]


def read_truth(url: str, columns: str | None = None) -> pa.Table:
    """Read a truth table (CSV, Parquet, FITS or VOTable) of known lenses.

    Parameters
    ----------
    url : str
        The table file.
    columns : str, optional
        ``"ID,RA,DEC"``: the file's columns for ``object_id``, ``ra`` and ``dec`` (an empty
        part keeps the default). By default common names are recognised (see :data:`ALIASES`:
        ``RA``, ``RAJ2000``, ``ALPHA_J2000``, ``objid``, ...).

    It needs an id or ra/dec columns (degrees, RA in [0, 360), Dec in [-90, 90]). A ``grade``
    column (the gallery's export) keeps the objects whose graders' combined grade is a lens (A or
    B on average), one row each; a ``label`` column keeps only ``label == 1``.
    """
    given = (columns.split(",") + ["", "", ""])[:3] if columns else ["", "", ""]
    if columns and any(c.strip() for c in columns.split(",")[3:]):
        raise ValueError(f"--truth-cols {columns!r}: give at most three names, ID,RA,DEC")
    try:
        table = _read_table(url, given[0].strip() or None)
    except (pa.ArrowException, OSError, ValueError, TypeError) as exc:
        if isinstance(exc, FileNotFoundError) or str(exc).startswith(f"{url}:"):
            raise
        raise ValueError(f"{url}: not a readable table ({str(exc).splitlines()[0][:200]})"
                         ) from None
    if not table.num_rows:
        raise ValueError(f"{url}: the truth table has no rows")
    names = table.column_names
    picked = {role: _pick(url, names, role, g.strip() or None)
              for role, g in zip(("object_id", "ra", "dec"), given, strict=True)}
    # the other columns keep their names, lower-cased; one that would take a picked column's
    # role name (RA in hours beside the RAdeg given) is kept as <name>_orig
    rest = {(n.lower() + "_orig" if n.lower() in picked else n.lower()): table.column(n)
            for n in names if n not in picked.values()}
    table = pa.table({**{r: table.column(c) for r, c in picked.items() if c}, **rest})
    names = table.column_names
    if "object_id" not in names and not {"ra", "dec"} <= set(names):
        raise ValueError(f"{url}: truth table needs an id column or ra and dec columns "
                         f"(has {names}); name them with --truth-cols ID,RA,DEC")
    if {"ra", "dec"} <= set(names):
        table = _check_positions(url, table)
    if "object_id" in names:
        table = table.set_column(names.index("object_id"), "object_id",
                                 _ids_as_text(url, table.column("object_id")))
    if "grade" in names:
        table = _graded_lenses(url, table)
    if "label" in names:
        try:
            lens = pc.equal(table.column("label").cast(pa.int64()), 1)
        except pa.ArrowException:
            raise ValueError(f"{url}: column 'label' must hold 1 (lens) or 0, not "
                             f"{table.column('label').type} values") from None
        table = table.filter(lens)
    return table


def _graded_lenses(url: str, table: pa.Table) -> pa.Table:
    """The rows of a grades table that are known lenses, one per object: graders' grades
    combined as training combines them (each grader's latest, a mean of A = 3 ... not a lens = 0
    of 1.5 or more; :mod:`lensscan.data.grades`). Without ids, each row's own grade is A or B."""
    col = {n: table.column(n).to_pylist() for n in ("object_id", "grader", "time")
           if n in table.column_names}
    rows = grades.grade_rows(url, col.get("object_id", [None] * table.num_rows),
                             table.column("grade").to_pylist(), col.get("grader"),
                             col.get("time"), first_row=2 if ".csv" in url.lower() else 1,
                             need_id=False)
    ids = rows["object_id"]
    own = rows["value"] >= grades.LENS_AT  # a row without an id (matched by position)
    if not any(ids):
        return table.filter(pa.array(own))
    named = ids != ""
    rows = {k: v[named] for k, v in rows.items()}
    combined = grades.combine(grades.latest([rows]))
    lens = set(combined.object_id[combined.label == 1].tolist())
    first = {}
    for i, v in enumerate(ids):
        if (v and v in lens) or (not v and own[i]):
            first.setdefault(v or i, i)
    return table.take(pa.array(sorted(first.values()), pa.int64()))


def _ids_as_text(url: str, ids: pa.ChunkedArray) -> pa.ChunkedArray:
    """The truth's ids as the text they are compared as: integers as written, integral floats
    and decimals (a FITS or Parquet column of doubles, a database's decimals) as integers, text
    (also dictionary-encoded or binary UTF-8) trimmed; an id column of nulls stays (rows matched
    by position). Other kinds (fractions, booleans, lists) are refused: they would silently
    match nothing."""
    typ = ids.type
    if pa.types.is_dictionary(typ):  # a pandas category column
        return _ids_as_text(url, pc.cast(ids, typ.value_type))
    if pa.types.is_decimal(typ):
        return pc.cast(ids, pa.string()) if typ.scale == 0 else _ids_as_text(
            url, pc.cast(ids, pa.float64()))
    if pa.types.is_binary(typ) or pa.types.is_large_binary(typ):
        try:
            return _ids_as_text(url, pc.cast(ids, pa.string()))
        except pa.ArrowInvalid:
            raise ValueError(f"{url}: the object id column holds bytes that are not UTF-8 "
                             "text") from None
    if pa.types.is_floating(typ):
        values = ids.to_numpy(zero_copy_only=False)
        bad = np.flatnonzero(~np.isnan(values) & ((values != np.round(values))
                                                  | (np.abs(values) >= 2.0**63)))
        if len(bad):
            i = int(bad[0])
            raise ValueError(f"{url}: row {i + 1}: object id {values[i].item()!r} is not an "
                             "integer (ids are integers or text)")
        text = [None if np.isnan(v) else str(int(v)) for v in values.tolist()]  # NaN: no id
        return pa.chunked_array([pa.array(text, pa.string())])
    if pa.types.is_integer(typ) or pa.types.is_null(typ):
        return pc.cast(ids, pa.string())
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        return pc.utf8_trim_whitespace(ids)
    raise ValueError(f"{url}: the object id column holds {typ} values; ids are integers or text")


def _check_placed(truth: pa.Table) -> None:
    """A cross-match needs every known lens's position: a row without one is refused, naming
    it (it would be reported unmatched, as if searched for)."""
    ra = truth.column("ra").to_numpy(zero_copy_only=False).astype(np.float64)
    dec = truth.column("dec").to_numpy(zero_copy_only=False).astype(np.float64)
    bad = np.flatnonzero(~(np.isfinite(ra) & np.isfinite(dec)))
    if len(bad):
        i = int(bad[0])
        ids = truth.column("object_id") if "object_id" in truth.column_names else None
        who = (f"known lens {ids[i].as_py()!r}" if ids is not None and ids[i].is_valid
               else f"known lens {i + 1} (of those kept)")
        raise ValueError(f"truth: {who} has no position (ra {ra[i]}, dec {dec[i]}; {len(bad)} "
                         "such lenses): a cross-match needs one, or match by id")


def _check_positions(url: str, table: pa.Table) -> pa.Table:
    """Refuse positions off the sky, naming the first bad row; the table with ``ra`` and
    ``dec`` as float64 degrees (text columns converted, as the check read them)."""
    from lensscan.io.batch import coordinate_problems

    try:
        ra = np.asarray(table.column("ra").to_numpy(zero_copy_only=False), np.float64)
        dec = np.asarray(table.column("dec").to_numpy(zero_copy_only=False), np.float64)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{url}: ra and dec must be numbers of degrees ({exc})") from None
    bad = np.flatnonzero(coordinate_problems(ra, dec) != "")
    if len(bad):
        i = int(bad[0])
        raise ValueError(f"{url}: row {i + 1}: ra {ra[i]:g}, dec {dec[i]:g} are not degrees on "
                         f"the sky (RA in [0, 360), Dec in [-90, 90]; {len(bad)} such rows)")
    for name, values in (("ra", ra), ("dec", dec)):
        table = table.set_column(table.column_names.index(name), name, pa.array(values))
    return table


def recovery(out: str, truth: pa.Table, top: int | None = None,
             radius_arcsec: float | None = None) -> tuple[pa.Table, dict]:
    """Rank of every known lens in the output, and recall/purity in the top ``top``.

    Matching is by ``object_id`` (compared as text) unless ``radius_arcsec`` is given, in which
    case each known lens takes the nearest scored object within that radius.
    """
    check_numbers(top, None, None)
    if radius_arcsec is not None and not (math.isfinite(radius_arcsec) and radius_arcsec > 0):
        raise ValueError(f"--match-radius {radius_arcsec}: must be a positive number of arcsec")
    check_output(out)
    con = duck.connect(out)
    con.register("truth_in", truth.append_column("_truth_row",
                                                 pa.array(np.arange(truth.num_rows))))
    duck.confine(con, out)
    src = source_sql(out)
    order = duck.rank_order(scores_columns(con, out, src))
    try:
        check_finite(con, out, src)
    except OutputError:
        raise
    except Exception as exc:  # duckdb raises many types: a damaged part
        raise unreadable(out, exc) from None
    ranked = duck.ranked_sql(src, "object_id, ra, dec, score", order=order)
    sql = (_by_id_sql(ranked, truth) if radius_arcsec is None
           else _by_position_sql(ranked, truth, float(radius_arcsec)))
    try:
        table = duck.fetch_arrow(con, sql)
    except Exception as exc:  # duckdb raises many types: a damaged part, no part at all
        raise unreadable(out, exc) from None
    n_scored = None
    if top is not None:  # the top holds at most the rows scored: one count, only when asked
        scored = duck.fetch_arrow(con, f"SELECT count(*) AS n FROM {src} WHERE {duck.SCORED}")
        n_scored = scored["n"][0].as_py()
    return table, _summary(table, top, n_scored)


def _by_id_sql(ranked: str, truth: pa.Table) -> str:
    """The SQL matching known lenses to the ``ranked`` rows by id: one row per known lens."""
    if ("object_id" not in truth.column_names
            or truth.column("object_id").null_count == truth.num_rows):
        raise ValueError("truth has no object_id: give a cross-match radius")
    # truth ids are read trimmed (a spreadsheet's spaces), so the scored ones are compared
    # trimmed too; one row per known lens, its best-ranked match ("a" and "a " scored)
    return (f"WITH r AS ({ranked}), m AS (SELECT t._truth_row AS k, "
            "CAST(t.object_id AS VARCHAR) AS known_id, r.rank, r.score, r.ra, r.dec "
            f"FROM truth_in t LEFT JOIN r ON {_TRIMMED.format('r.object_id')} = "
            f"{_TRIMMED.format('t.object_id')}) "
            "SELECT any_value(known_id) AS known_id, min(rank) AS rank, "
            "arg_min(score, rank) AS score, arg_min(ra, rank) AS ra, "
            "arg_min(dec, rank) AS dec FROM m GROUP BY k "
            "ORDER BY rank NULLS LAST, known_id")


def _by_position_sql(ranked: str, truth: pa.Table, rad: float) -> str:
    """The SQL matching each known lens to the nearest ``ranked`` row within ``rad`` arcsec."""
    if not {"ra", "dec"} <= set(truth.column_names):
        raise ValueError("a cross-match needs ra and dec in the truth table")
    _check_placed(truth)
    dist = angular_distance_sql("t.ra", "t.dec", "r.ra", "r.dec")
    where = "printf('%.6f %+.6f', t.ra, t.dec)"
    known = (f"coalesce(CAST(t.object_id AS VARCHAR), {where})"
             if "object_id" in truth.column_names else where)
    # one row per known lens (per row of the truth table: ids may be null or repeated)
    return (f"WITH r AS ({ranked}), m AS (SELECT t._truth_row AS k, {known} AS known_id, "
            # an unmatched lens (no r row) has no separation: least(1, NULL) is 1 in DuckDB
            f"r.rank, r.score, r.ra, r.dec, CASE WHEN r.rank IS NULL THEN NULL "
            f"ELSE {dist} END AS sep FROM truth_in t "
            f"LEFT JOIN r ON r.dec BETWEEN t.dec - {rad / 3600!r} AND t.dec + "
            f"{rad / 3600!r} AND {dist} <= {rad!r}) "
            # one nearest row for every column: ties in separation (one object under two ids
            # in overlapping tracts) go to the better rank, not to a row per column
            "SELECT any_value(known_id) AS known_id, arg_min(rank, row(sep, rank)) AS rank, "
            "arg_min(score, row(sep, rank)) AS score, arg_min(ra, row(sep, rank)) AS ra, "
            "arg_min(dec, row(sep, rank)) AS dec, min(sep) AS separation_arcsec FROM m "
            "GROUP BY k "
            "ORDER BY rank NULLS LAST, known_id")


def _summary(table: pa.Table, top: int | None, n_scored: int | None) -> dict:
    """Known, matched and, with ``top``, recovered, recall and purity (over at most the
    ``n_scored`` rows the top can hold)."""
    ranks = np.array([r if r is not None else np.inf for r in table.column("rank").to_pylist()],
                     dtype=float)
    n_known = table.num_rows
    summary = {"known": n_known, "matched": int(np.isfinite(ranks).sum())}
    if top is not None:
        found = int((ranks <= top).sum())
        # purity counts candidates, not known lenses: two entries of one lens (merged
        # catalogues) matching one candidate are one true positive in the top
        hits = len(set(ranks[ranks <= top].tolist()))
        shown = min(top, n_scored if n_scored is not None else top)
        summary.update({"top": top, "recovered": found,
                        "recall": found / n_known if n_known else None,
                        "purity": hits / shown if shown else None})
    return summary
