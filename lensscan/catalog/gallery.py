"""A self-contained HTML gallery of the top candidates, with keyboard grading and CSV export.

Pixels are read back from the input shards through each score's provenance (``shard``, ``row``),
only for the rows shown, after checking that each shard is unchanged since it was scored (size
and ETag/mtime recorded in the output). Ids and every other value from the data reach the page
as text (``textContent``), never as HTML. Each cutout is embedded as PNG data URIs in every
stretch of :mod:`lensscan.catalog.stretch` (asinh g, r, i composite, each band in grey, high
contrast), north up and east left, with a scale bar from the shard's pixel scale and N/E arrows,
so the page works offline and can be mailed around; it shows one page of cards at a time, so
500+ candidates stay responsive. The page itself is ``lensscan/assets/gallery/`` (HTML and
script): :func:`build_gallery` fills the page's :class:`string.Template` placeholders
(``${TITLE}``, ``${CONFIG}``, ``${DATA}``, ``${SCRIPT}``) in one substitution.
"""

from __future__ import annotations

import html
import json
import string
from collections import defaultdict
from importlib import resources
from urllib.parse import urlsplit

import numpy as np
import pyarrow as pa

from lensscan.catalog.names import iau_names
from lensscan.catalog.output import check_export, check_shards
from lensscan.catalog.provenance import provenance
from lensscan.catalog.query import query
from lensscan.catalog.stretch import STRETCHES, png_data_uri, render
from lensscan.data.display import composite_grid
from lensscan.errors import OutputError
from lensscan.io import storage
from lensscan.io.shards import read_rows, shard_optics

GRADES = {"a": "A", "b": "B", "c": "C", "n": "not a lens"}
BAR_ARCSEC = (0.5, 1, 2, 5, 10, 20, 50)  # scale-bar lengths to choose from


def check_viewer(template: str) -> str:
    """Refuse an external-viewer URL template that is not http(s) or lacks ``{ra}``/``{dec}``.

    The template is the user's own (any site, any other query parameters); the page only puts
    each object's RA and Dec, as decimal degrees, where ``{ra}`` and ``{dec}`` stand."""
    parts = urlsplit(template)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise ValueError(f"--viewer {template!r}: give an http:// or https:// URL template, e.g. "
                         "'https://www.legacysurvey.org/viewer?ra={ra}&dec={dec}&zoom=16'")
    if any(ch.isspace() or ord(ch) < 32 for ch in template):
        raise ValueError(f"--viewer {template!r}: the URL template holds spaces or control "
                         "characters")
    missing = [k for k in ("{ra}", "{dec}") if k not in template]
    if missing:
        raise ValueError(f"--viewer {template!r}: the URL template has no {' or '.join(missing)}"
                         " placeholder")
    return template


def viewer_url(template: str | None, ra: float | None, dec: float | None) -> str | None:
    """The viewer's URL of a position (degrees, 6 decimals), or None without one."""
    if template is None or ra is None or dec is None or not np.isfinite([ra, dec]).all():
        return None
    ra_text = f"{ra:.6f}"
    if ra_text == "360.000000":  # RA 359.9999996 rounds up: the same point is RA 0
        ra_text = "0.000000"
    return template.replace("{ra}", ra_text).replace("{dec}", f"{dec:.6f}")


def scale_bar(pixel_scale: float, size: int = 64) -> dict:
    """The longest of :data:`BAR_ARCSEC` that spans at most 30% of the cutout, as arcsec and
    percent of the cutout's width."""
    fov = pixel_scale * size
    arcsec = max([b for b in BAR_ARCSEC if b <= 0.3 * fov] or [BAR_ARCSEC[0]])
    return {"arcsec": arcsec, "percent": round(100 * arcsec / fov, 3)}


def _is_text(typ: pa.DataType) -> bool:
    return pa.types.is_string(typ) or pa.types.is_large_string(typ) or pa.types.is_string_view(typ)


def cutouts_for(table: pa.Table, out_dir: str | None = None) -> np.ndarray:
    """Read the images of a result table's rows from their shards: (N, 3, 64, 64).

    With ``out_dir`` (the scoring output the table came from), shards that changed since they
    were scored are refused by name (:func:`lensscan.catalog.output.check_shards`)."""
    shards = table.column("shard").to_pylist()
    row = table.column("row")
    if (row.null_count or not pa.types.is_integer(row.type)
            or None in shards or not _is_text(table.column("shard").type)):
        raise OutputError(f"{out_dir or 'the table'}: the scores' shard and row columns must be "
                          "text and whole numbers "
                          f"without nulls (shard {table.column('shard').type}, row {row.type}, "
                          f"{row.null_count + shards.count(None)} nulls): the output was edited "
                          "or is damaged; rescore with --overwrite")
    rows = row.to_numpy()
    by_shard: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(shards):
        by_shard[s].append(i)
    if out_dir is not None:
        check_shards(out_dir, by_shard)
    out = np.zeros((table.num_rows, 3, 64, 64), np.float32)
    for shard, idx in by_shard.items():
        out[idx] = read_rows(shard, rows[idx])
    return out


def build_gallery(table: pa.Table, images: np.ndarray, title: str, per_page: int = 100,
                  threshold: float | None = None, viewer: str | None = None,
                  run: str = "") -> str:
    """The HTML page for a result table (must hold rank, object_id, ra, dec, score, shard).

    ``threshold`` (the run's candidate cut) draws a marker where the scores cross it;
    ``viewer`` (checked by :func:`check_viewer`) links every object to an external viewer;
    ``run`` names the scoring run, whose grades the browser keeps apart from other runs'."""
    if viewer is not None:
        check_viewer(viewer)
    members = [c for c in table.column_names if c.startswith("score_")]
    optics = {s: shard_optics(s) for s in set(table.column("shard").to_pylist())}
    recs = table.to_pylist()
    names = iau_names([r.get("ra") for r in recs], [r.get("dec") for r in recs])
    items = []
    for i, rec in enumerate(recs):
        bands, pixel_scale = optics[rec["shard"]]
        items.append({
            "rank": rec["rank"], "id": str(rec["object_id"]), "name": names[i],
            "ra": rec.get("ra"), "dec": rec.get("dec"), "score": rec["score"],
            "members": {m[len("score_"):]: rec[m] for m in members},
            "img": {k: png_data_uri(render(images[i], k)) for k in STRETCHES},
            "bar": scale_bar(pixel_scale), "url": viewer_url(viewer, rec.get("ra"), rec.get("dec")),
        })
    bands = optics[recs[0]["shard"]][0] if recs else ("g", "r", "i")
    labels = {**STRETCHES, **{k: f"{b} band" for k, b in zip("gri", bands, strict=True)}}
    config = {"perPage": int(per_page), "grades": GRADES, "threshold": threshold, "run": run,
              "stretches": [[k, labels[k]] for k in STRETCHES]}
    page = resources.files("lensscan") / "assets" / "gallery"
    # one substitution: a title such as "${DATA}" (a folder's name) is never filled in itself
    return string.Template((page / "gallery.html").read_text()).substitute(
        TITLE=html.escape(title), SCRIPT=(page / "gallery.js").read_text(),
        CONFIG=_script_json(config), DATA=_script_json(items))


def _script_json(obj) -> str:
    """JSON safe inside a <script> element: no "</script>" or "<!--" can appear."""
    return json.dumps(obj).replace("<", "\\u003c")


def mosaic_png(table: pa.Table, images: np.ndarray, columns: int = 10) -> bytes:
    """A PNG grid of the candidates' composites, each labelled with rank, id and score."""
    titles = [f"#{r['rank']} {r['object_id']}\n{r['score']:.3f}" for r in table.to_pylist()]
    return composite_grid(images, columns, titles=titles, dpi=90)


def write_gallery(out: str, page: str, top: int = 100, min_score: float | None = None,
                  per_page: int = 100, viewer: str | None = None) -> str:
    """Write the gallery of the ``top`` candidates of scoring output ``out`` to ``page``:
    an HTML page (with the run's threshold marked and, with ``viewer``, a link per object to
    an external image viewer), or a PNG mosaic when ``page`` ends in ``.png``."""
    check_export(out, page, "--out")  # before any pixel is read
    if viewer is not None:
        check_viewer(viewer)
    table = query(out, top=top, min_score=min_score)
    if not table.num_rows:  # an empty page to grade is a cut that selects nothing
        raise ValueError(f"{out}: no scored object to show (--top {top}"
                         f"{'' if min_score is None else f', --min-score {min_score:g}'})")
    images = cutouts_for(table, out)
    if page.lower().endswith(".png"):
        storage.write_bytes_atomic(page, mosaic_png(table, images))
        return page
    prov = provenance(out)
    doc = build_gallery(table, images, f"lensscan candidates: {out}", per_page,
                        threshold=prov.threshold, viewer=viewer,
                        run=prov.run_fingerprint or storage.absolute(out))
    storage.write_bytes_atomic(page, doc.encode())
    return page
