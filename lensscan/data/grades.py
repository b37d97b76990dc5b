"""Graders' CSVs (the gallery's export) turned into labels, with their agreement.

A grades CSV has ``object_id,grade`` with grade ``A``, ``B``, ``C`` or ``not a lens`` (also
``3``/``2``/``1``/``0``, and ``n``/``no`` for not a lens), and optionally ``grader``, ``time``
and ``score``. A file without a ``grader`` column is one grader, named by the file's stem. When a
grader graded an object more than once, the latest (by ``time``, else the last row) counts.

Grades are combined per object on the usual scale A = 3, B = 2, C = 1, not a lens = 0: a mean of
1.5 or more is a lens, under 0.5 a non-lens, and in between (C-like) is left out unless the
``grade_c`` policy says ``lens`` or ``nonlens``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

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
    ids = np.asarray([str(v) if v is not None else "" for v in table["object_id"].to_pylist()],
                     dtype=object)
    values = np.empty(n, np.int8)
    for i, g in enumerate(table["grade"].to_pylist()):
        key = str(g or "").strip().lower()
        if key not in VALUES or not ids[i]:
            raise ValueError(f"{url}: row {i + 2}: grade {g!r} of object {ids[i]!r} is not one "
                             "of A, B, C, not a lens")
        values[i] = VALUES[key]
    stem = os.path.basename(url).rsplit(".", 1)[0]

    def text(col: str, default: str) -> np.ndarray:
        if col not in names:
            return np.full(n, default, dtype=object)
        return np.asarray([v or default for v in table[col].to_pylist()], dtype=object)

    try:
        score = (np.asarray(table["score"].cast(pa.float64()).fill_null(np.nan).to_numpy())
                 if "score" in names else np.full(n, np.nan))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise ValueError(f"{url}: column 'score' must hold numbers "
                         f"({str(exc).splitlines()[0]})") from None
    return {"object_id": ids, "value": values, "grader": text("grader", stem),
            "time": text("time", ""), "score": score}


def latest(grades: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """All graders' rows together, one per (object, grader): the latest by time, else the last."""
    rows = {k: np.concatenate([g[k] for g in grades]) for k in grades[0]}
    order = np.lexsort((np.arange(len(rows["time"])), rows["time"].astype(str)))
    keep: dict[tuple[str, str], int] = {}
    for i in order:
        keep[(rows["object_id"][i], rows["grader"][i])] = i
    idx = np.array(sorted(keep.values()), dtype=np.int64)
    return {k: v[idx] for k, v in rows.items()}


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


def graded_labels(urls: list[str], grade_c: str = "drop") -> tuple[dict[str, int], dict]:
    """Labels from one or more graders' CSVs, and a report (agreement, counts per label)."""
    rows = latest([read_grades(u) for u in urls])
    combined = combine(rows, grade_c)
    report = {**agreement(rows), "lens": int((combined.label == 1).sum()),
              "nonlens": int((combined.label == 0).sum()),
              "left_out": int((combined.label < 0).sum()), "grade_c": grade_c}
    return combined.labels(), report


def describe(r: dict) -> str:
    """One line on the graders: how many, their agreement and the labels their grades gave."""
    kappa = "n/a" if r.get("fleiss_kappa") is None else f"{r['fleiss_kappa']:.2f}"
    agree = ("no object graded twice" if r["agreement"] is None else
             f"agreement {r['agreement']:.0%} on {r['graded_by_several']} objects graded by "
             f"several, Fleiss' kappa {kappa}")
    return (f"grades: {r['graders']} graders, {r['objects']} objects, {agree}; {r['lens']} "
            f"lenses, {r['nonlens']} non-lenses, {r['left_out']} left out (C: {r['grade_c']})")
