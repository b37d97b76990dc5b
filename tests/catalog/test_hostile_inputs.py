"""What ``query`` and ``gallery`` do with hostile or damaged input: exports that would overwrite
the run, masked ids in truth tables, filters that are not text or not one expression, edited
score parts, and file names that a terminal would act on. Each ends in one line naming the
problem, never in a traceback or a wrong answer."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from astropy.table import MaskedColumn, Table
from support import finish_output, make_batch

from lensscan.catalog.query import query
from lensscan.catalog.truth import read_truth, recovery
from lensscan.cli import main
from lensscan.io.parquet import write_parquet
from lensscan.score import commit

ORDER = ["object_id", "ra", "dec", "score", "shard", "row", "status"]


def _run(tmp_path, n=40, ids=None):
    """An input shard and a scoring output pointing at it (id k scores 1 - k/n)."""
    shard = str(tmp_path / "in" / "p.parquet")
    batch = make_batch(n, seed=5)
    if ids is not None:
        batch["object_id"] = np.array(ids, dtype=object)
    write_parquet(shard, batch)
    out = str(tmp_path / "out")
    score = (1 - np.arange(n) / n).astype(np.float32)
    rows = {"object_id": batch["object_id"], "ra": batch["ra"], "dec": batch["dec"],
            "score": score, "shard": np.full(n, shard, dtype=object), "row": np.arange(n),
            "status": np.full(n, "ok", dtype=object)}
    commit.write_unit(out, "u0", rows, ORDER)
    commit.finalize(out, ["u0"], 0.5, None)
    finish_output(out, [shard])
    return out, shard


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_exports_never_overwrite_the_run_or_its_input(tmp_path, capsys):
    """``gallery --out`` into the output (its candidates, its scores/ folder) or over an input
    shard, and ``query -o`` over an input shard, are refused before anything is written; an
    empty name or a folder is named as such, not as a temporary file."""
    out, shard = _run(tmp_path)
    before = {p: p.read_bytes() for p in pathlib.Path(tmp_path).rglob("*") if p.is_file()}
    for page, why in [(f"{out}/candidates.parquet", "own candidates.parquet"),
                      (f"{out}/scores/zz.html", "own scores"),
                      (shard, "an input shard")]:
        assert main(["gallery", out, "--out", page, "--top", "2"]) == 2
        assert f"--out {page}: it would write" in (line := _one_line(capsys)) and why in line
    assert main(["query", out, "-o", shard, "--format", "csv"]) == 2
    assert "an input shard of the run" in _one_line(capsys)
    after = {p: p.read_bytes() for p in pathlib.Path(tmp_path).rglob("*") if p.is_file()}
    assert after == before
    assert main(["gallery", out, "--out", str(tmp_path), "--top", "2"]) == 2
    assert f"{tmp_path}: is a folder" in _one_line(capsys)
    assert main(["gallery", out, "--out", "", "--top", "2"]) == 2
    assert "an empty path" in _one_line(capsys)


@pytest.mark.parametrize("ext", [".xml", ".fits"])
def test_a_masked_id_in_a_truth_table_is_null_not_its_fill_value(tmp_path, ext):
    """An empty VOTable cell or a FITS TNULL is a missing id: the lens it names is unmatched,
    not the object whose id happens to be the fill value (0, 999999)."""
    out, _ = _run(tmp_path)
    ids = MaskedColumn([3, 0, 999999], name="objid", mask=[False, True, True],
                       fill_value=999999)
    path = str(tmp_path / f"t{ext}")
    Table([ids]).write(path, format="votable" if ext == ".xml" else "fits")
    assert read_truth(path).column("object_id").to_pylist() == ["3", None, None]
    table, summary = recovery(out, read_truth(path))
    assert summary["matched"] == 1 and table.column("rank").to_pylist() == [4, None, None]


@pytest.mark.parametrize(("text", "why"), [
    ("\udcff", "not UTF-8 text"),  # a byte the terminal's encoding could not decode
    ("-- nothing", "the filter is empty"),
    ("/* nothing */", "the filter is empty"),
    ("score > 0.5 /*", "unterminated /* comment"),
    ("row IN ()", "empty parentheses and (a, b) tuples"),
    ("replace(replace(shard, 'a', 'aaaa'), 'a', 'aaaa') = ''", "lengthens text inside another"),
])
def test_filters_that_are_not_one_expression_are_one_line(tmp_path, capsys, text, why):
    out, _ = _run(tmp_path)
    assert main(["query", out, "--where", text]) == 2
    assert why in _one_line(capsys)
    assert query(out, where="replace(shard, '1', 'x') || replace(shard, '2', 'y') "
                            "<> ''").num_rows == 40
    assert query(out, where="replace(replace(shard, '-', ''), '_', '') <> ''").num_rows == 40


def test_an_edited_part_with_a_non_finite_score_is_refused(tmp_path, capsys):
    """lensscan never writes a NaN score for a scored row (it would rank first): a part
    holding one is named as edited or damaged, and JSON exports are strict JSON anyway."""
    out, _ = _run(tmp_path)
    assert main(["query", out, "--top", "2", "--format", "json", "-o",
                 str(tmp_path / "a.json")]) == 0
    json.loads((tmp_path / "a.json").read_text())
    (tmp_path / "t.csv").write_text("object_id\n1\n")
    part = next(pathlib.Path(out, commit.SCORES).glob("*.parquet"))
    t = pq.read_table(part)
    score = t.column("score").to_numpy().copy()
    score[7] = np.nan
    pq.write_table(t.set_column(t.column_names.index("score"), "score",
                                pa.array(score, pa.float32())), part)
    for cut in (["--top", "3"], ["--where", "score < 0.5"], ["--columns", "ra"],
                ["--truth", str(tmp_path / "t.csv")]):
        assert main(["query", out, *cut]) == 2
        assert "1 scored rows have a non-finite score (object '7'" in _one_line(capsys)


def test_edited_shard_and_row_columns_are_named(tmp_path, capsys):
    out, shard = _run(tmp_path)
    part = next(pathlib.Path(out, commit.SCORES).glob("*.parquet"))
    t = pq.read_table(part)
    col = t.column_names.index("row")
    rows = t.column("row").to_pylist()
    for value, why in [(None, "without nulls"), (-1, "row -1 was asked for")]:
        edited = list(rows)
        edited[0] = value
        pq.write_table(t.set_column(col, "row", pa.array(edited, pa.int64())), part)
        assert main(["gallery", out, "--out", str(tmp_path / "g.html"), "--top", "3"]) == 2
        assert why in _one_line(capsys)


def test_names_a_terminal_would_act_on_are_escaped_in_messages(tmp_path, capsys):
    out, _ = _run(tmp_path)
    name = str(tmp_path / "t\nx\x1b[31m.csv")
    assert main(["query", out, "--truth", name]) == 2
    line = _one_line(capsys)
    assert "\x1b" not in line and "t\\nx\\x1b[31m.csv" in line


def test_truth_and_column_options_that_cannot_be_meant_are_refused(tmp_path, capsys):
    """Ids with surrounding spaces match (truth ids are read trimmed); columns that differ only
    by case, more than three --truth-cols, empty --columns and a --name-prefix that is not
    UTF-8 are refused by name; an unreadable FITS file is one line, without astropy's
    warnings."""
    out, _ = _run(tmp_path, ids=["  spaced  "] + [f"o{k}" for k in range(1, 40)])
    (tmp_path / "g.csv").write_text("object_id\n  spaced  \n")
    assert recovery(out, read_truth(str(tmp_path / "g.csv")))[1]["matched"] == 1
    (tmp_path / "d.csv").write_text("object_id,ra,RA\no1,1,2\n")
    (tmp_path / "bad.fits").write_bytes(b"SIMPLE  =" + b" " * 71)
    for args, why in [(["--truth", str(tmp_path / "d.csv")], "differ only by case"),
                      (["--truth", str(tmp_path / "g.csv"), "--truth-cols", "object_id,,,x"],
                       "at most three names"),
                      (["--columns", ""], "an empty column name"),
                      (["--columns", "ra,,dec"], "an empty column name"),
                      (["--name-prefix", "\udcff"], "not UTF-8 text"),
                      (["--truth", str(tmp_path / "bad.fits")], "not a readable table")]:
        assert main(["query", out, *args]) == 2
        assert why in _one_line(capsys)


def test_a_long_id_does_not_widen_the_text_table(tmp_path, capsys):
    out, _ = _run(tmp_path, ids=["x" * 100_000] + [f"o{k}" for k in range(1, 40)])
    assert main(["query", out, "--top", "3", "--columns", "object_id,score"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in lines) < 200 and "xxx..." in lines[2]
    assert main(["query", out, "--top", "1", "--format", "csv"]) == 0
    assert "x" * 100_000 in capsys.readouterr().out  # exports keep the whole id


def test_what_the_review_found_stays_fixed(tmp_path, capsys):
    """Columns differing only by case are refused only when one of them is picked (a gmag and
    a Gmag beside the id are fine); a known lens matching "a" and "a " counts once; a path
    ending in "/" names a folder; a trailing comma in --truth-cols is no fourth name."""
    out, _ = _run(tmp_path, ids=["a", "a "] + [f"o{k}" for k in range(2, 40)])
    (tmp_path / "m.csv").write_text("object_id,gmag,Gmag\na,1,2\n")
    table, summary = recovery(out, read_truth(str(tmp_path / "m.csv")), top=2)
    assert summary["known"] == summary["matched"] == summary["recovered"] == 1
    assert table.column("rank").to_pylist() == [1]
    assert read_truth(str(tmp_path / "m.csv"), "object_id,,,").num_rows == 1
    for path in (str(tmp_path / "new") + "/", str(tmp_path / "e.csv") + "/"):
        assert main(["query", out, "--format", "csv", "-o", path]) == 2
        assert "names a folder" in _one_line(capsys)
    assert not (tmp_path / "new").exists() and not (tmp_path / "e.csv").exists()
