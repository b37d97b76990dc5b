"""Write a query result as a terminal table, CSV, JSON, Parquet, FITS or VOTable.

FITS and VOTable files follow astronomers' conventions: every known column carries its unit
(``deg`` for positions, ``arcsec`` for separations; scores are dimensionless and have none), a
UCD (IVOA UCD1+: ``meta.id;meta.main`` for the id, ``pos.eq.ra;meta.main`` and
``pos.eq.dec;meta.main`` for the position, ``stat.probability`` for scores, ...) and a
description; the scoring run behind the catalogue (:class:`~lensscan.catalog.provenance.Provenance`:
lensscan version, model name and checksum, the run's fingerprint, start and end) goes into FITS
header cards or VOTable ``INFO`` elements. FITS has no standard keyword for UCDs: they are written
as ``TUCDn`` (the ESO Phase 3 convention) beside ``TCOMMn`` descriptions, and the file carries
``CHECKSUM``/``DATASUM``. Parquet gets the same per-field metadata (``unit``, ``ucd``,
``description``) and the provenance as JSON under ``lensscan.provenance``.
"""

from __future__ import annotations

import io
import json
import math
import sys
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from urllib.parse import quote

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from lensscan.catalog.names import iau_names
from lensscan.catalog.provenance import Provenance
from lensscan.errors import printable
from lensscan.io import storage

FORMATS = ("table", "csv", "json", "parquet", "fits", "votable")

#: column -> (unit, UCD, description); ``score_<member>`` columns use ``score_*``.
COLUMNS: dict[str, tuple[str | None, str, str]] = {
    "rank": (None, "meta.record", "rank by descending score among all scored rows (1 = most "
                                  "lens-like)"),
    "object_id": (None, "meta.id;meta.main", "object identifier from the input shards"),
    "known_id": (None, "meta.id;meta.main", "identifier in the truth table"),
    "name": (None, "meta.id", "IAU-style name from the position, JHHMMSS.ss+DDMMSS.s "
                              "(truncated)"),
    "ra": ("deg", "pos.eq.ra;meta.main", "right ascension (ICRS)"),
    "dec": ("deg", "pos.eq.dec;meta.main", "declination (ICRS)"),
    "score": (None, "stat.probability", "ensemble lens probability (dimensionless)"),
    "score_*": (None, "stat.probability", "lens probability of one ensemble member "
                                          "(dimensionless)"),
    "logit": (None, "stat.fit.param", "ensemble logit: log(score / (1 - score)) before the "
                                      "sigmoid (dimensionless)"),
    "member_spread": (None, "stat.stdev", "standard deviation of the members' lens "
                                          "probabilities (dimensionless)"),
    "p_lens": (None, "stat.probability", "probability of a lens at the run's prior "
                                         "prevalence, calibrated on validation data"),
    "distance_arcsec": ("arcsec", "pos.angDistance", "distance from the cone's centre"),
    "separation_arcsec": ("arcsec", "pos.angDistance", "separation of the cross-match"),
    "shard": (None, "meta.ref.url", "input shard holding the cutout"),
    "row": (None, "meta.id.part", "row of the cutout in its shard (0-based)"),
    "status": (None, "meta.code.qual", "ok, or why the row was quarantined"),
}


def column_meta(name: str) -> tuple[str | None, str, str] | None:
    """``(unit, UCD, description)`` of a known column, or None."""
    if name.startswith("score_"):
        unit, ucd, text = COLUMNS["score_*"]
        return unit, ucd, f"{text}: {name[len('score_'):]}"
    return COLUMNS.get(name)


def with_names(table: pa.Table, prefix: str = "") -> pa.Table:
    """``table`` with an IAU-style ``name`` column (:func:`lensscan.catalog.names.iau_names`)
    after its id column (the first column holding ``id``); null where RA or Dec is null.
    Tables without ``ra`` and ``dec`` are returned as they are."""
    cols = table.column_names
    if not {"ra", "dec"} <= set(cols) or "name" in cols:
        return table
    names = pa.array(iau_names(table.column("ra").to_pylist(), table.column("dec").to_pylist(),
                               prefix), pa.string())
    at = next((i + 1 for i, c in enumerate(cols) if c in ("object_id", "known_id")), 0)
    return table.add_column(at, "name", names)


#: The widest cell of a text table; longer text ends in "..." there (csv and json keep it).
MAX_CELL = 80


def to_text_table(table: pa.Table, max_rows: int = 50, max_cell: int | None = MAX_CELL) -> str:
    """A fixed-width text table (floats to 6 significant digits, text cut at ``max_cell``
    characters on a screen: one long id would pad every row to its width)."""
    cols = table.column_names
    rows = table.slice(0, max_rows).to_pylist()

    def fmt(v) -> str:
        if v is None:
            return ""
        if isinstance(v, float):
            return f"{v:.6g}"
        text = printable(str(v))
        return text if max_cell is None or len(text) <= max_cell else text[:max_cell - 3] + "..."

    cells = [[fmt(r[c]) for c in cols] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(cols, widths, strict=True)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    if table.num_rows > max_rows:
        lines.append(f"... {table.num_rows - max_rows} more rows")
    return "\n".join(lines)


def _text_fits(table: pa.Table, fits_in: Callable[[str], bool], what: str,
               other: str) -> None:
    """Refuse text that a format cannot hold (``fits_in`` false), naming the column and row."""
    for name in table.column_names:
        col = table.column(name)
        if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
            continue
        for i, v in enumerate(col.to_pylist()):
            if v is not None and not fits_in(v):
                raise ValueError(f"column {name!r} row {i + 1} holds {what} "
                                 f"({printable(v[:40])!r}); use --format {other}")


def _fits_text(text: str) -> bool:
    """True when a FITS character field can hold ``text``: printable ASCII only."""
    return text.isascii() and text.isprintable()


def _ascii_only(table: pa.Table) -> None:
    _text_fits(table, _fits_text, "non-ASCII or control characters, which FITS tables cannot "
               "hold", "votable, parquet or csv")


def _xml_text(text: str) -> bool:
    """True when XML 1.0 holds ``text`` as it is: no control character but tab and LF (a CR
    reads back as LF, since XML parsers normalise line ends), and neither U+FFFE nor U+FFFF."""
    return all((c >= " " or c in "\t\n") and c not in "\ufffe\uffff" for c in text)


def _xml_only(table: pa.Table) -> None:
    _text_fits(table, _xml_text, "control characters or U+FFFE/U+FFFF, which XML (VOTable) "
               "cannot hold", "parquet or csv")


def _astropy(table: pa.Table):
    """An astropy Table with each known column's unit, UCD (``meta['ucd']``) and description."""
    from astropy.table import Table

    t = Table()
    for name in table.column_names:
        col = table.column(name)
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            t[name] = np.array([v if v is not None else "" for v in col.to_pylist()], dtype=str)
        elif pa.types.is_integer(col.type) and col.null_count:  # a known lens not found: no
            # rank; masked, so FITS writes TNULL and VOTable a null, not floats with NaN
            t[name] = np.ma.masked_array(col.fill_null(0).to_numpy(zero_copy_only=False),
                                         mask=col.is_null().to_numpy(zero_copy_only=False))
        else:
            t[name] = col.to_numpy(zero_copy_only=False)
        meta = column_meta(name)
        if meta:
            unit, ucd, text = meta
            if unit:
                t[name].unit = unit
            t[name].meta["ucd"] = ucd
            t[name].description = text
    return t


def _fits(table: pa.Table, prov: Provenance | None) -> bytes:
    from astropy.io import fits

    _ascii_only(table)
    hdu = fits.table_to_hdu(_astropy(table))
    hdu.name = "LENSSCAN"
    head = hdu.header
    for k, name in enumerate(table.column_names, start=1):
        meta = column_meta(name)
        if meta:
            head.set(f"TUCD{k}", meta[1], "UCD of column " + str(k), after=f"TFORM{k}")
            head.set(f"TCOMM{k}", meta[2][:68], after=f"TUCD{k}")
    head["DATE"] = (_utc_now(), "file written (UTC)")
    for key, _, value in (prov.items() if prov else []):
        if isinstance(value, str) and any(c not in _FITS_SAFE for c in value):  # Unicode, or
            value = quote(value, safe=_FITS_SAFE)  # a "%": unquoting a value is always right
        room = not isinstance(value, str) or len(value) <= 40  # long values take the card
        head[key] = (value, _COMMENTS.get(key, "") if room else "")
    buf = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(buf, checksum=True)
    return buf.getvalue()


#: Printable ASCII but "%": a header value with another character (or a "%") is percent-encoded
#: (RFC 3986), so that a reader may always unquote
_FITS_SAFE = "".join(chr(c) for c in range(32, 127) if chr(c) != "%")

_COMMENTS = {"CREATOR": "software that wrote this file",
             "LSVERS": "lensscan version of the scoring run", "MODEL": "model name",
             "MODELURL": "model as given to lensscan score",
             "MODELSUM": "model checksum (sha256)", "RUNID": "scoring run fingerprint (sha256)",
             "RUNSTART": "scoring run start (UTC)", "RUNEND": "scoring run end (UTC)",
             "INPUT": "scored input URL", "THRESH": "candidate score threshold",
             "TOPN": "candidates kept: top N", "COMPLETE": "the scoring run finished",
             "SCOREOUT": "scoring output"}


def _votable(table: pa.Table, prov: Provenance | None) -> bytes:
    from astropy.io.votable import from_table
    from astropy.io.votable.tree import Info

    _xml_only(table)
    vot = from_table(_astropy(table))
    resource = vot.resources[0]
    resource.description = "lensscan catalogue of strong-lens candidates"
    resource.infos.append(Info(name="date", value=_utc_now()))
    for _, name, value in (prov.items() if prov else []):
        resource.infos.append(Info(name=name, value=str(value)))
    buf = io.BytesIO()
    vot.to_xml(buf)
    return buf.getvalue()


def _parquet(table: pa.Table, prov: Provenance | None) -> bytes:
    fields = []
    for f in table.schema:
        meta = column_meta(f.name)
        if meta:
            unit, ucd, text = meta
            f = f.with_metadata({"ucd": ucd, "description": text, **({"unit": unit} if unit
                                                                        else {})})
        fields.append(f)
    schema = pa.schema(fields)
    if prov:
        schema = schema.with_metadata({"lensscan.provenance": json.dumps(asdict(prov))})
    buf = io.BytesIO()
    pq.write_table(table.cast(schema), buf)
    return buf.getvalue()


def _utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _json_safe(rows: list[dict]) -> list[dict]:
    """Strict JSON: a NaN or infinite float (no JSON number) becomes null."""
    def safe(v: object) -> object:
        return None if isinstance(v, float) and not math.isfinite(v) else v

    return [{k: safe(v) for k, v in row.items()} for row in rows]


def write(table: pa.Table, fmt: str, path: str | None = None,
          prov: Provenance | None = None) -> None:
    """Write ``table`` to ``path`` (any URL), or to stdout when ``path`` is None; FITS,
    VOTable and Parquet carry ``prov`` (the scoring run behind the table) when given."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, not {fmt!r}")
    if fmt in ("parquet", "fits") and not path:
        raise ValueError(f"--format {fmt} needs --output FILE")
    if fmt == "table":
        data = (to_text_table(table, max_rows=table.num_rows if path else 50,
                              max_cell=None if path else MAX_CELL) + "\n").encode()
    elif fmt == "csv":
        buf = io.BytesIO()
        pacsv.write_csv(table, buf)
        data = buf.getvalue()
    elif fmt == "json":
        data = (json.dumps(_json_safe(table.to_pylist()), default=str, allow_nan=False)
                + "\n").encode()
    elif fmt == "parquet":
        data = _parquet(table, prov)
    elif fmt == "fits":
        data = _fits(table, prov)
    else:
        data = _votable(table, prov)
    if path:
        storage.write_bytes_atomic(path, data)
        return
    text = data.decode()
    if fmt == "csv" and sys.stdout.isatty():  # a terminal runs escape sequences: show them
        text = "\n".join(printable(line) for line in text.split("\n"))
    sys.stdout.write(text)
