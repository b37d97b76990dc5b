"""Graders' CSVs (the gallery's export) turned into labels, with their agreement.

A grades CSV has ``object_id,grade`` with grade ``A``, ``B``, ``C`` or ``not a lens`` (also
``3``/``2``/``1``/``0``, and ``n``/``no`` for not a lens), and optionally ``grader``, ``time``
(ISO 8601; without a zone it is UTC) and ``score``. A row without a grader name (no ``grader``
column, or an empty one: the gallery's name field is optional) is graded by the file, named by
its path, so two graders' ``grades.csv`` in two folders stay two graders. When a grader graded
an object more than once, the latest (by ``time`` as an instant, else the last row) counts.

Grades are combined per object on the usual scale A = 3, B = 2, C = 1, not a lens = 0: a mean of
1.5 or more is a lens, under 0.5 a non-lens, and in between (C-like) is left out unless the
``grade_c`` policy says ``lens`` or ``nonlens``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from lensscan.io import storage

VALUES = {"a": 3, "b": 2, "c": 1, "not a lens": 0, "3": 3, "2": 2, "1": 1, "0": 0,
          "n": 0, "no": 0, "not_a_lens": 0}
LENS_AT, NONLENS_BELOW = 1.5, 0.5
GRADE_C = ("drop", "lens", "nonlens")


@dataclass(frozen=True)
class Combined:
    """Per object: the mean grade, how many graders, and the label (1, 0, or -1 left out)."""

    object_id: np.ndarray  # (K,) str
    mean: np.ndarray  # (K,) float
    graders: np.ndarray  # (K,) int
    label: np.ndarray  # (K,) int8

    def labels(self) -> dict[str, int]:
        """``{object_id: label}`` of the objects kept."""
        keep = self.label >= 0
        return dict(zip(self.object_id[keep].tolist(), self.label[keep].tolist(), strict=True))


def read_grades(url: str) -> dict[str, np.ndarray]:
    """One grades CSV as ``object_id`` (str), ``value`` (0-3), ``grader``, ``time`` (str, ""
    when absent) and ``score`` (float, NaN when absent); unknown grades raise ``ValueError``."""
    strings = {c: pa.string() for c in ("object_id", "grade", "grader", "time")}
    try:
        table = pacsv.read_csv(pa.BufferReader(storage.read_bytes(url)),
                               convert_options=pacsv.ConvertOptions(column_types=strings))
    except pa.ArrowInvalid as exc:  # empty, ragged, binary: the parser's words, and the file
        raise ValueError(f"{url}: not a readable grades CSV ({str(exc).splitlines()[0]})") \
            from None
    names = [c.lower() for c in table.column_names]
    twice = sorted({c for c in names if names.count(c) > 1})
    if twice:
        raise ValueError(f"{url}: column {twice[0]!r} appears more than once")
    table = table.rename_columns(names)
    for col in ("object_id", "grade"):
        if col not in names:
            raise ValueError(f"{url}: a grades CSV needs columns object_id and grade "
                             f"(has {names})")
    n = table.num_rows
    rows = grade_rows(url, table["object_id"].to_pylist(), table["grade"].to_pylist(),
                      *(table[c].to_pylist() if c in names else None for c in ("grader", "time")))
    try:
        score = (np.asarray(table["score"].cast(pa.float64()).fill_null(np.nan).to_numpy())
                 if "score" in names else np.full(n, np.nan))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise ValueError(f"{url}: column 'score' must hold numbers "
                         f"({str(exc).splitlines()[0]})") from None
    return {**rows, "score": score}


def grade_rows(url: str, ids: list, grades: list, graders: list | None = None,
               times: list | None = None, first_row: int = 2,
               need_id: bool = True) -> dict[str, np.ndarray]:
    """A grades table's columns as ``object_id`` (text, trimmed), ``value`` (0-3, see
    :func:`grade_values`), ``grader`` (the file ``url`` where none is named) and ``time``
    (checked: a time that cannot be ordered raises ``ValueError`` naming its row)."""
    def text(values: list | None, default: str) -> np.ndarray:
        return np.asarray([str(v or "").strip() or default for v in values or [None] * len(ids)],
                          dtype=object)

    names = np.asarray([str(v).strip() if v is not None else "" for v in ids], dtype=object)
    values = grade_values(url, names, grades, first_row, need_id)
    when = text(times, "")
    for i, t in enumerate(when):
        instant(url, i, t)
    named = text(graders, "") != ""
    return {"object_id": names, "value": values, "grader": text(graders, url), "time": when,
            "named": named.astype(bool)}


def grade_values(url: str, ids: np.ndarray, grades: list, first_row: int = 2,
                 need_id: bool = True) -> np.ndarray:
    """The grades of a file's rows on the 0-3 scale; an unknown grade, or an empty id when
    ``need_id``, raises ``ValueError`` naming its row (numbered from ``first_row``: 2 is a
    CSV's line, the header being line 1)."""
    values = np.empty(len(grades), np.int8)
    for i, g in enumerate(grades):
        key = str(g or "").strip().lower()
        if need_id and not ids[i]:
            raise ValueError(f"{url}: row {i + first_row}: the object id is empty (grade {g!r})")
        if key not in VALUES:
            raise ValueError(f"{url}: row {i + first_row}: grade {g!r} of object {ids[i]!r} is "
                             "not one of A, B, C, not a lens")
        values[i] = VALUES[key]
    return values


def instant(url: str, i: int, text: str) -> float:
    """A grade's ``time`` as POSIX seconds (``-inf`` when empty): ISO 8601, UTC when it names no
    zone, so ``...07.9Z`` is after ``...07Z`` and ``10:00+09:00`` before ``02:00Z``."""
    if not text:
        return float("-inf")
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{url}: row {i + 2}: time {text!r} is not an ISO 8601 time such as "
                         "2026-11-29T10:00:07Z") from None
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp()


def latest(grades: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """All graders' rows together, one per (object, grader): the latest by time, else the last.
    Then one grading event exported twice by a grader without a name (two files, so two
    "graders" named by their files: the same grade of an object at the same time) counts once;
    graders with names are never merged, whatever they graded when."""
    rows = {k: np.concatenate([g[k] for g in grades]) for k in grades[0]}
    when = np.array([instant("", i, str(t)) for i, t in enumerate(rows["time"])])
    keep: dict[tuple[str, str], int] = {}
    for i in np.lexsort((np.arange(len(when)), when)):
        keep[(rows["object_id"][i], rows["grader"][i])] = i
    events: set[tuple[str, int, str]] = set()
    idx = []
    for i in sorted(keep.values()):
        event = (rows["object_id"][i], int(rows["value"][i]), str(rows["time"][i]))
        if not rows["named"][i] and event[2]:
            if event in events:
                continue
            events.add(event)
        idx.append(i)
    return {k: v[np.array(idx, dtype=np.int64)] for k, v in rows.items()}


def combine(rows: dict[str, np.ndarray], grade_c: str = "drop") -> Combined:
    """Mean grade per object and its label (see the module docstring)."""
    if grade_c not in GRADE_C:
        raise ValueError(f"grade_c must be one of {', '.join(GRADE_C)}, not {grade_c!r}")
    ids, inverse = np.unique(rows["object_id"].astype(str), return_inverse=True)
    count = np.bincount(inverse, minlength=len(ids))
    mean = np.bincount(inverse, weights=rows["value"].astype(float), minlength=len(ids)) / count
    label = np.full(len(ids), -1, np.int8)
    label[mean >= LENS_AT] = 1
    label[mean < NONLENS_BELOW] = 0
    middle = (mean >= NONLENS_BELOW) & (mean < LENS_AT)
    if grade_c != "drop":
        label[middle] = 1 if grade_c == "lens" else 0
    return Combined(ids.astype(object), mean, count, label)


def agreement(rows: dict[str, np.ndarray]) -> dict[str, float | int | None]:
    """How far graders agree on the objects that several graded: the share on which all give the
    same class (lens A/B, maybe C, non-lens), and Fleiss' kappa over the four grades (the form
    for a varying number of graders per object; None when no object has two graders)."""
    ids, inverse = np.unique(rows["object_id"].astype(str), return_inverse=True)
    counts = np.zeros((len(ids), 4))
    np.add.at(counts, (inverse, rows["value"].astype(int)), 1)
    n = counts.sum(axis=1)
    multi = n >= 2
    out: dict[str, float | int | None] = {
        "graders": len(set(rows["grader"].tolist())), "objects": len(ids),
        "graded_by_several": int(multi.sum())}
    if not multi.any():
        return {**out, "agreement": None, "fleiss_kappa": None}
    c, m = counts[multi], n[multi]
    classes = np.stack([c[:, 2] + c[:, 3], c[:, 1], c[:, 0]], axis=1)  # lens, maybe, non-lens
    out["agreement"] = float((classes.max(axis=1) == m).mean())
    p_i = ((c**2).sum(axis=1) - m) / (m * (m - 1))
    p_j = c.sum(axis=0) / m.sum()
    p_e = float((p_j**2).sum())
    out["fleiss_kappa"] = None if p_e >= 1 else float((p_i.mean() - p_e) / (1 - p_e))
    return out


def graded(urls: list[str], grade_c: str = "drop") -> tuple[Combined, dict]:
    """One or more graders' CSVs combined per object, and a report (agreement, counts per
    label). A file given twice is refused: it would count its grader twice (local paths are
    compared resolved, object-store URLs as written, less a trailing ``/``)."""
    for i, u in enumerate(urls):
        first = next((v for v in urls[:i] if storage.inside(u, v) and storage.inside(v, u)), None)
        if first is not None:
            raise ValueError(f"{u}: the same grades file as {first}, given twice; give each "
                             "grader's file once")
    files = [read_grades(u) for u in urls]
    rows = latest(files)
    combined = combine(rows, grade_c)
    unnamed = [u for u, g in zip(urls, files, strict=True) if (g["grader"] == u).any()]
    report = {**agreement(rows), "unnamed": unnamed, "lens": int((combined.label == 1).sum()),
              "nonlens": int((combined.label == 0).sum()),
              "left_out": int((combined.label < 0).sum()), "grade_c": grade_c}
    return combined, report


def graded_labels(urls: list[str], grade_c: str = "drop") -> tuple[dict[str, int], dict]:
    """Labels from one or more graders' CSVs (the objects kept), and the report of
    :func:`graded`."""
    combined, report = graded(urls, grade_c)
    return combined.labels(), report


def describe(r: dict) -> str:
    """One line on the graders: how many, their agreement and the labels their grades gave."""
    kappa = "n/a" if r.get("fleiss_kappa") is None else f"{r['fleiss_kappa']:.2f}"
    agree = ("no object graded twice" if r["agreement"] is None else
             f"agreement {r['agreement']:.0%} on {r['graded_by_several']} objects graded by "
             f"several, Fleiss' kappa {kappa}")
    missing = (f"; {len(r['unnamed'])} file(s) without grader names, each counted as one "
               f"grader ({', '.join(r['unnamed'][:3])})" if r.get("unnamed") else "")
    return (f"grades: {r['graders']} graders, {r['objects']} objects, {agree}; {r['lens']} "
            f"lenses, {r['nonlens']} non-lenses, {r['left_out']} left out (C: {r['grade_c']})"
            f"{missing}")
