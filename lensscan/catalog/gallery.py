"""A self-contained HTML gallery of the top candidates, with keyboard grading and CSV export.

Pixels are read back from the input shards through each score's provenance (``shard``, ``row``),
only for the rows shown, after checking that each shard is unchanged since it was scored (size
and ETag/mtime recorded in the output). Ids and every other value from the data reach the page
as text (``textContent``), never as HTML. Thumbnails are asinh RGB composites (i -> red,
r -> green, g -> blue) embedded as PNG data URIs, so the page works offline and can be mailed
around; it shows one page of cards at a time, so 500+ candidates stay responsive.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections import defaultdict

import numpy as np
import pyarrow as pa

from lensscan.catalog.output import check_shards
from lensscan.catalog.query import query
from lensscan.io import storage
from lensscan.io.shards import read_rows
from lensscan.simulate.mosaic import rgb_composite

GRADES = {"a": "A", "b": "B", "c": "C", "n": "not a lens"}


def png_data_uri(rgb: np.ndarray, scale: int = 2) -> str:
    """(H, W, 3) uint8 -> ``data:image/png;base64,...`` (nearest-neighbour upscaled)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image as mpimg

    big = np.repeat(np.repeat(rgb[::-1], scale, axis=0), scale, axis=1)  # north up
    buf = io.BytesIO()
    mpimg.imsave(buf, big, format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def cutouts_for(table: pa.Table, out_dir: str | None = None) -> np.ndarray:
    """Read the images of a result table's rows from their shards: (N, 3, 64, 64).

    With ``out_dir`` (the scoring output the table came from), shards that changed since they
    were scored are refused by name (:func:`lensscan.catalog.output.check_shards`)."""
    shards = table.column("shard").to_pylist()
    rows = table.column("row").to_numpy()
    by_shard: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(shards):
        by_shard[s].append(i)
    if out_dir is not None:
        check_shards(out_dir, by_shard)
    out = np.zeros((table.num_rows, 3, 64, 64), np.float32)
    for shard, idx in by_shard.items():
        out[idx] = read_rows(shard, rows[idx])
    return out


def build_gallery(table: pa.Table, images: np.ndarray, title: str, per_page: int = 100) -> str:
    """The HTML page for a result table (must hold rank, object_id, ra, dec, score)."""
    members = [c for c in table.column_names if c.startswith("score_")]
    items = []
    for i, rec in enumerate(table.to_pylist()):
        items.append({
            "rank": rec["rank"], "id": str(rec["object_id"]),
            "ra": rec.get("ra"), "dec": rec.get("dec"), "score": rec["score"],
            "members": {m[len("score_"):]: rec[m] for m in members},
            "img": png_data_uri(rgb_composite(images[i])),
        })
    data = json.dumps(items).replace("<", "\\u003c")  # no "</script>" or "<!--" in the script
    return _TEMPLATE.replace("__TITLE__", html.escape(title)).replace(
        "__DATA__", data).replace("__PER_PAGE__", str(int(per_page))).replace(
        "__GRADES__", json.dumps(GRADES))


def mosaic_png(table: pa.Table, images: np.ndarray, columns: int = 10) -> bytes:
    """A PNG grid of the candidates' composites, each labelled with rank, id and score."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(1, table.num_rows)
    rows = (n + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 1.3, rows * 1.45), squeeze=False)
    recs = table.to_pylist()
    for k, ax in enumerate(axes.ravel()):
        ax.set_axis_off()
        if k < len(recs):
            ax.imshow(rgb_composite(images[k]), origin="lower")
            ax.set_title(f"#{recs[k]['rank']} {recs[k]['object_id']}\n{recs[k]['score']:.3f}",
                         fontsize=6)
    fig.subplots_adjust(wspace=0.05, hspace=0.35, left=0.01, right=0.99, top=0.97, bottom=0.01)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def write_gallery(out: str, page: str, top: int = 100, min_score: float | None = None,
                  per_page: int = 100) -> str:
    """Write the gallery of the ``top`` candidates of scoring output ``out`` to ``page``:
    an HTML page, or a PNG mosaic when ``page`` ends in ``.png``."""
    table = query(out, top=top, min_score=min_score)
    images = cutouts_for(table, out)
    if page.lower().endswith(".png"):
        storage.write_bytes_atomic(page, mosaic_png(table, images))
        return page
    doc = build_gallery(table, images, f"lensscan candidates: {out}", per_page)
    storage.write_bytes_atomic(page, doc.encode())
    return page


_TEMPLATE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>__TITLE__</title>
<style>
body{font-family:system-ui,sans-serif;background:#111;color:#ddd;margin:0}
header{position:sticky;top:0;background:#222;padding:8px 12px;display:flex;gap:16px;
 align-items:center;z-index:1}
header h1{font-size:15px;margin:0;font-weight:600}
#grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:8px;padding:10px}
.card{background:#1b1b1b;border:2px solid #333;border-radius:6px;padding:4px;font-size:11px}
.card img{width:100%;image-rendering:pixelated;display:block}
.card.focus{border-color:#4af}
.card .grade{float:right;font-weight:700;color:#fc4}
.meta{line-height:1.35;margin-top:3px;word-break:break-all}
.members{color:#888}
button{background:#345;color:#eee;border:0;padding:5px 10px;border-radius:4px;cursor:pointer}
.help{color:#999;font-size:12px}
</style></head><body>
<header><h1>__TITLE__</h1>
<span id="pageinfo"></span>
<button id="prev">&larr; prev</button><button id="next">next &rarr;</button>
<button id="export">export grades (CSV)</button>
<span class="help">arrows/j/k move &middot; a/b/c grade &middot; n not a lens &middot;
 0 clear &middot; [ ] page</span></header>
<div id="grid"></div>
<script>
const ITEMS = __DATA__;
const PER_PAGE = __PER_PAGE__;
const GRADES = __GRADES__;
const STORE = "lensscan-grades:" + document.title;
let grades = {};
try { grades = JSON.parse(localStorage.getItem(STORE) || "{}"); } catch (e) { grades = {}; }
let page = 0, focus = 0;
const pages = Math.max(1, Math.ceil(ITEMS.length / PER_PAGE));
function fmt(v, d) { return (v === null || v === undefined) ? "" : Number(v).toFixed(d); }
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;  // data from files is text, never HTML
  return e;
}
function render() {
  const grid = document.getElementById("grid");
  grid.replaceChildren();
  const start = page * PER_PAGE;
  ITEMS.slice(start, start + PER_PAGE).forEach((it, k) => {
    const c = el("div", "card" + (start + k === focus ? " focus" : ""));
    c.dataset.index = start + k;
    c.dataset.objectId = it.id;
    const img = el("img");
    img.loading = "lazy";
    img.alt = it.id;
    img.src = it.img;
    const meta = el("div", "meta");
    meta.append(el("span", "grade", grades[it.id] || ""), "#" + it.rank + " ",
                el("b", "oid", it.id), el("br"), "score " + fmt(it.score, 4), el("br"),
                fmt(it.ra, 5) + " " + fmt(it.dec, 5), el("br"));
    const mem = el("span", "members");
    Object.entries(it.members).forEach(([n, s], j) => {
      if (j) mem.append(el("br"));
      mem.append(n + " " + fmt(s, 3));
    });
    meta.append(mem);
    c.append(img, meta);
    c.onclick = () => { focus = start + k; render(); };
    grid.appendChild(c);
  });
  document.getElementById("pageinfo").textContent =
    "page " + (page + 1) + "/" + pages + " \u00b7 " + ITEMS.length + " candidates \u00b7 " +
    Object.keys(grades).length + " graded";
  const f = grid.querySelector(".focus");
  if (f && f.scrollIntoView) f.scrollIntoView({block: "nearest"});
}
function move(d) {
  focus = Math.min(ITEMS.length - 1, Math.max(0, focus + d));
  page = Math.floor(focus / PER_PAGE);
  render();
}
function setGrade(g) {
  const id = ITEMS[focus].id;
  if (g === null) delete grades[id]; else grades[id] = g;
  localStorage.setItem(STORE, JSON.stringify(grades));
  move(1);
}
function exportCsv() {
  const q = s => '"' + String(s).replace(/"/g, '""') + '"';
  const lines = ["object_id,grade"];
  ITEMS.forEach(it => { if (grades[it.id]) lines.push(q(it.id) + "," + q(grades[it.id])); });
  return lines.join("\n") + "\n";
}
document.getElementById("export").onclick = () => {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([exportCsv()], {type: "text/csv"}));
  a.download = "grades.csv";
  a.click();
};
document.getElementById("prev").onclick = () => { page = Math.max(0, page - 1);
  focus = page * PER_PAGE; render(); };
document.getElementById("next").onclick = () => { page = Math.min(pages - 1, page + 1);
  focus = page * PER_PAGE; render(); };
document.addEventListener("keydown", e => {
  const k = e.key.toLowerCase();
  if (k === "arrowright" || k === "j") move(1);
  else if (k === "arrowleft" || k === "k") move(-1);
  else if (k === "arrowdown") move(6);
  else if (k === "arrowup") move(-6);
  else if (k === "]") { document.getElementById("next").click(); }
  else if (k === "[") { document.getElementById("prev").click(); }
  else if (k in GRADES) setGrade(GRADES[k]);
  else if (k === "0") setGrade(null);
  else return;
  e.preventDefault();
});
render();
</script></body></html>
"""
