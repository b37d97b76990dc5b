"""Commands that read a scoring output: ``query`` and ``gallery``."""

from __future__ import annotations

import json
import sys


def _query(a) -> None:
    from lensscan.catalog import formats
    from lensscan.catalog.output import check_export
    from lensscan.catalog.provenance import provenance
    from lensscan.catalog.query import Cone, expected_in, query, run_prior

    listing = {"--where": a.where, "--min-score": a.min_score, "--cone": a.cone,
               "--candidates": a.candidates, "--columns": a.columns}
    matching = {"--match-radius": a.match_radius, "--truth-cols": a.truth_cols}
    if a.truth and (cuts := [k for k, v in listing.items() if v is not None and v is not False]):
        raise ValueError(f"--truth ranks the known lenses among all scores; {', '.join(cuts)} "
                         "cut a listing: run them without --truth")
    if not a.truth and (given := [k for k, v in matching.items() if v is not None]):
        raise ValueError(f"{', '.join(given)} only go with --truth")
    check_export(a.out, a.output)
    try:
        a.name_prefix.encode()
    except UnicodeEncodeError:  # bytes the terminal's encoding could not decode
        raise ValueError(f"--name-prefix {a.name_prefix!r}: not UTF-8 text") from None
    if a.truth:
        from lensscan.catalog.truth import read_truth, recovery

        table, summary = recovery(a.out, read_truth(a.truth, a.truth_cols), top=a.top,
                                  radius_arcsec=a.match_radius)
    else:
        cone = Cone(*a.cone) if a.cone else None
        columns = [c.strip() for c in a.columns.split(",")] if a.columns is not None else None
        if columns is not None and not all(columns):
            raise ValueError(f"--columns {a.columns!r}: an empty column name; give names "
                             "separated by commas, e.g. object_id,ra,dec,score")
        table = query(a.out, top=a.top, min_score=a.min_score, cone=cone, where=a.where,
                      columns=columns, candidates=a.candidates)
        expected = expected_in(table, run_prior(a.out))
        summary = None if expected is None else {"expected": expected}
    # the table first: an export that is refused prints no summary of it
    formats.write(formats.with_names(table, a.name_prefix), a.format, a.output,
                  provenance(a.out))
    if summary is not None:
        print(json.dumps(summary), file=sys.stderr)


def _gallery(a) -> None:
    from lensscan.catalog.gallery import write_gallery

    print(write_gallery(a.out_dir, a.out, top=a.top, min_score=a.min_score, viewer=a.viewer))


def add_query(sub) -> None:
    """``lensscan query``: DuckDB over a scoring output, in any format."""
    p = sub.add_parser("query", help="query scoring output")
    p.add_argument("out")
    p.add_argument("--top", type=int)
    p.add_argument("--min-score", type=float)
    p.add_argument("--cone", type=float, nargs=3, metavar=("RA", "DEC", "RADIUS_ARCSEC"))
    p.add_argument("--where", help="one boolean SQL expression over the output's columns, e.g. "
                   "\"ra BETWEEN 150 AND 151 AND score_m0 > 0.5\" (no statements or subqueries)")
    p.add_argument("--candidates", action="store_true", help="query candidates.parquet only")
    p.add_argument("--columns", metavar="A,B,...",
                   help="columns to return, e.g. object_id,ra,dec,score,logit,member_spread,"
                        "p_lens (default: the contract's, member scores and p_lens)")
    p.add_argument("--truth", help="known lenses (CSV/Parquet/FITS/VOTable, or the gallery's "
                   "grades CSV): report each one's rank and the recall/purity in --top")
    p.add_argument("--match-radius", type=float, metavar="ARCSEC",
                   help="with --truth: cross-match by position instead of object_id")
    p.add_argument("--truth-cols", metavar="ID,RA,DEC",
                   help="with --truth: the table's id, RA and Dec columns (default: common "
                        "names such as object_id/objid, RA/RAJ2000, DEC/DEJ2000)")
    p.add_argument("--format", default="table",
                   choices=["table", "csv", "json", "parquet", "fits", "votable"])
    p.add_argument("--output", "-o", help="write to this file instead of stdout")
    p.add_argument("--name-prefix", default="", metavar="ACRONYM",
                   help="put this before the IAU-style name column, e.g. LENSSCAN -> "
                        "'LENSSCAN J095959.81+021200.3' (default: the bare J name)")
    p.set_defaults(fn=_query)


def add_gallery(sub) -> None:
    """``lensscan gallery``: the HTML page (or PNG mosaic) of the top candidates."""
    p = sub.add_parser("gallery", help="HTML gallery of the top candidates, with grading")
    p.add_argument("out_dir", metavar="OUT")
    p.add_argument("--out", required=True,
                   help="the HTML page to write (a PNG mosaic if it ends in .png)")
    p.add_argument("--top", type=int, default=100)
    p.add_argument("--min-score", type=float)
    p.add_argument("--viewer", metavar="URL_TEMPLATE",
                   help="link every object to an external image viewer: an http(s) URL with "
                        "{ra} and {dec} (decimal degrees), e.g. "
                        "'https://www.legacysurvey.org/viewer?ra={ra}&dec={dec}&zoom=16'")
    p.set_defaults(fn=_gallery)

