// The gallery page: paging, stretches, a larger view, keyboard grading and CSV export.
// Every value that comes from the data (ids, names) is set as text (textContent), never HTML.
"use strict";
// grades are kept per scoring run (its fingerprint): two surveys scored into folders of the
// same name, whose ids repeat, never see each other's grades
const STORE = "lensscan-grades:" + CONFIG.run;
const GRADER_KEY = "lensscan-grader", STRETCH_KEY = "lensscan-stretch";
const PER_PAGE = CONFIG.perPage, GRADES = CONFIG.grades, T = CONFIG.threshold;
const STRETCH_KEYS = CONFIG.stretches.map(s => s[0]);
// keyed by ids from the data: no prototype, so an id such as "constructor" or "__proto__" is
// a key like any other, never an inherited property
let grades = Object.create(null);
try {
  Object.assign(grades, JSON.parse(localStorage.getItem(STORE) || "{}"));
} catch (e) { grades = Object.create(null); }
Object.keys(grades).forEach(id => {  // grades saved by an older page: the grade alone
  if (typeof grades[id] === "string") grades[id] = {grade: grades[id], time: "", grader: ""};
});
let stretch = localStorage.getItem(STRETCH_KEY);
if (!STRETCH_KEYS.includes(stretch)) stretch = STRETCH_KEYS[0];
let page = 0, focus = 0, zoomed = null;
const pages = Math.max(1, Math.ceil(ITEMS.length / PER_PAGE));
const $ = id => document.getElementById(id);

function fmt(v, d) { return (v === null || v === undefined) ? "" : Number(v).toFixed(d); }
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;  // data from files is text, never HTML
  return e;
}
function gradeOf(id) { return grades[id] ? grades[id].grade : ""; }
function above(it) { return T === null || it.score >= T; }

// The stamp: image in the chosen stretch, scale bar (arcsec) and the N/E compass.
function stamp(it, alt) {
  const s = el("div", "stamp");
  const img = el("img");
  img.alt = alt;
  img.src = it.img[stretch];
  img.dataset.stretch = stretch;
  const bar = el("div", "scalebar");
  bar.style.width = it.bar.percent + "%";
  bar.dataset.arcsec = it.bar.arcsec;
  bar.append(el("span", "", it.bar.arcsec + "\u2033"));
  s.append(img, bar, $("compass-tpl").content.firstElementChild.cloneNode(true));
  return s;
}
function viewerLink(it) {
  const a = el("a", "viewer", "viewer");
  a.href = it.url;  // the user's --viewer template with this object's RA and Dec
  a.target = "_blank";
  a.rel = "noopener noreferrer";
  return a;
}
function thresholdMarker() {
  const m = el("div", "threshold",
               "\u25bc score threshold " + fmt(T, 4) + ": candidates above, the rest below");
  m.dataset.threshold = T;
  return m;
}
function card(it, index) {
  const c = el("div", "card" + (index === focus ? " focus" : "") + (above(it) ? "" : " below"));
  c.dataset.index = index;
  c.dataset.objectId = it.id;
  c.dataset.score = it.score;
  const s = stamp(it, it.id);
  s.onclick = e => { e.stopPropagation(); focus = index; openZoom(); };
  const meta = el("div", "meta");
  meta.append(el("span", "grade", gradeOf(it.id)), "#" + it.rank + " ",
              el("b", "oid", it.id), el("br"), el("span", "name", it.name || ""), el("br"),
              "score " + fmt(it.score, 4), el("br"), fmt(it.ra, 5) + " " + fmt(it.dec, 5));
  if (it.url) meta.append(" ", viewerLink(it));
  meta.append(el("br"));
  const mem = el("span", "members");
  Object.entries(it.members).forEach(([n, v], j) => {
    if (j) mem.append(el("br"));
    mem.append(n + " " + fmt(v, 3));
  });
  meta.append(mem);
  c.append(s, meta);
  c.onclick = () => { focus = index; render(); };
  return c;
}
function render() {
  const grid = $("grid");
  grid.replaceChildren();
  const start = page * PER_PAGE;
  ITEMS.slice(start, start + PER_PAGE).forEach((it, k) => {
    const g = start + k;
    if (T !== null && !above(it) && (g === 0 || above(ITEMS[g - 1]))) grid.append(thresholdMarker());
    grid.appendChild(card(it, g));
  });
  $("pageinfo").textContent =
    "page " + (page + 1) + "/" + pages + " \u00b7 " + ITEMS.length + " candidates \u00b7 " +
    Object.keys(grades).length + " graded";
  const f = grid.querySelector(".focus");
  if (f && f.scrollIntoView) f.scrollIntoView({block: "nearest"});
  if (zoomed !== null) showZoom();
}
function openZoom() { zoomed = focus; render(); }
function closeZoom() { zoomed = null; $("zoom").classList.remove("open"); }
function showZoom() {
  zoomed = focus;
  const it = ITEMS[focus];
  const big = stamp(it, it.id);
  big.id = "zoomstamp";
  big.onclick = closeZoom;
  $("zoomstamp").replaceWith(big);
  const info = $("zoominfo");
  info.replaceChildren(el("b", "oid", it.id), el("br"), el("span", "name", it.name || ""),
                       el("br"), "rank " + it.rank + " \u00b7 score " + fmt(it.score, 4),
                       el("br"), "RA " + fmt(it.ra, 6) + " Dec " + fmt(it.dec, 6), el("br"),
                       "grade: " + (gradeOf(it.id) || "none"), el("br"),
                       "north up, east left; bar " + it.bar.arcsec + "\u2033");
  if (it.url) info.append(el("br"), viewerLink(it));
  $("zoom").classList.add("open");
}
function move(d) {
  focus = Math.min(ITEMS.length - 1, Math.max(0, focus + d));
  page = Math.floor(focus / PER_PAGE);
  render();
}
function setGrade(g) {
  const id = ITEMS[focus].id;
  if (g === null) delete grades[id];
  else grades[id] = {grade: g, time: new Date().toISOString(), grader: $("grader").value.trim()};
  localStorage.setItem(STORE, JSON.stringify(grades));
  move(1);
}
function setStretch(s) {
  stretch = s;
  $("stretch").value = s;
  localStorage.setItem(STRETCH_KEY, s);
  render();
}
// every grade kept for this run, the candidates on the page first (with their scores), then
// those graded on an earlier page of the same run (fewer candidates now: score unknown here)
function exportCsv() {
  const q = s => '"' + String(s).replace(/"/g, '""') + '"';
  const lines = ["object_id,grade,grader,time,score"];
  const shown = new Set();
  const row = (id, score) => {
    const g = grades[id];
    if (g) lines.push([id, g.grade, g.grader || "", g.time || "", score].map(q).join(","));
  };
  ITEMS.forEach(it => { shown.add(it.id); row(it.id, it.score); });
  Object.keys(grades).forEach(id => { if (!shown.has(id)) row(id, ""); });
  return lines.join("\n") + "\n";
}
CONFIG.stretches.forEach(([k, label]) => {
  const o = el("option", "", label);
  o.value = k;
  $("stretch").append(o);
});
$("stretch").value = stretch;
$("stretch").onchange = e => setStretch(e.target.value);
$("grader").value = localStorage.getItem(GRADER_KEY) || "";
$("grader").oninput = e => localStorage.setItem(GRADER_KEY, e.target.value.trim());
$("thresholdinfo").textContent = T === null ? "" :
  "threshold " + fmt(T, 4) + " (" + ITEMS.filter(above).length + " shown above it)";
$("export").onclick = () => {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([exportCsv()], {type: "text/csv"}));
  a.download = "grades.csv";
  a.click();
};
$("prev").onclick = () => { page = Math.max(0, page - 1); focus = page * PER_PAGE; render(); };
$("next").onclick = () => { page = Math.min(pages - 1, page + 1); focus = page * PER_PAGE;
  render(); };
$("zoom").onclick = e => { if (e.target === $("zoom")) closeZoom(); };
document.addEventListener("keydown", e => {
  if (e.target.closest && e.target.closest("input, select, textarea")) return;  // typing a name
  const k = e.key.toLowerCase();
  if (k === "arrowright" || k === "j") move(1);
  else if (k === "arrowleft" || k === "k") move(-1);
  else if (k === "arrowdown") move(6);
  else if (k === "arrowup") move(-6);
  else if (k === "]") $("next").click();
  else if (k === "[") $("prev").click();
  else if (k === "s") setStretch(STRETCH_KEYS[(STRETCH_KEYS.indexOf(stretch) + 1) %
                                              STRETCH_KEYS.length]);
  else if (k === "z" || k === "enter") { if (zoomed === null) openZoom(); else closeZoom(); }
  else if (k === "escape") closeZoom();
  else if (k in GRADES) setGrade(GRADES[k]);
  else if (k === "0") setGrade(null);
  else return;
  e.preventDefault();
});
render();
