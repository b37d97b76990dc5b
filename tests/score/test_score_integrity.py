"""Outputs a survey team can trust, on real local Ray and real files: one run per output folder
(fingerprint, --overwrite), every row scored with a finite score or quarantined with a reason,
null and duplicate ids, rejected shards counted, mixed id types, no readable shard at all."""

from __future__ import annotations

import contextlib
import io
import json
import os
import pathlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from support import make_batch

from lensscan import modelcard
from lensscan.catalog.query import query
from lensscan.cli import main
from lensscan.data.preprocess import Preprocessing, preprocess
from lensscan.io.parquet import batch_to_table, write_parquet
from lensscan.score import fingerprint


def _scores(out: str):
    return pq.read_table(os.path.join(out, "scores")).to_pandas()


def _manifest(out: str) -> dict:
    with open(os.path.join(out, "_manifest.json")) as fh:
        return json.load(fh)


def _cli(*argv: str) -> tuple[int, str]:
    """Run the CLI in this process; returns (exit status, stderr)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(list(argv))
    return code, err.getvalue()


def _assert_every_row_settled(df) -> None:
    ok = (df["status"] == "ok").to_numpy()
    finite = np.isfinite(df["score"].to_numpy(dtype=float))
    assert (ok == finite).all(), df[ok != finite]


@pytest.fixture(scope="module")
def bad_rows_run(ray_local, tiny_model, tmp_path_factory):
    """One scoring run over shards with every kind of bad row and shard:

    a.parquet  60 rows, ids 0..59: row 5 null id, row 7 pixels at 3e38, row 9 RA 400, row 11
               Dec -95
    b.parquet  40 rows, ids 50..89: ids 50..59 repeat a.parquet's
    c.parquet  30 rows without an image column (footer readable: its rows are counted)
    d.parquet  not Parquet at all (no footer: no row count)
    """
    src = tmp_path_factory.mktemp("bad") / "in"
    src.mkdir()
    a = make_batch(60, seed=1)
    a["object_id"] = np.array([None if i == 5 else i for i in range(60)], dtype=object)
    a["image"][7] = 3e38
    a["ra"][9], a["dec"][11] = 400.0, -95.0
    write_parquet(str(src / "a.parquet"), a, row_group_size=32)
    write_parquet(str(src / "b.parquet"), make_batch(40, seed=2, start_id=50))
    c = batch_to_table(make_batch(30, seed=3)).drop_columns(["image"])
    pq.write_table(c, str(src / "c.parquet"))
    (src / "d.parquet").write_bytes(b"PAR1 not parquet PAR1")
    out = str(tmp_path_factory.mktemp("bad") / "out")
    code, err = _cli("score", str(src), out, "--model", tiny_model, "--rows-per-unit", "32")
    assert code == 0, err
    return out, _scores(out), _manifest(out), err


def test_null_object_id_stays_null(bad_rows_run):
    """A null id is written as null (it was 0, the id of a real object)."""
    _, df, _, _ = bad_rows_run
    a = df[df["shard"].str.endswith("a.parquet")].set_index("row")
    assert pd_isna(a.loc[5, "object_id"]) and a.loc[5, "status"] == "missing_object_id"
    assert np.isnan(a.loc[5, "score"])
    assert (df["object_id"] == 0).sum() == 1  # only the real object 0


def pd_isna(v) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v))


def test_duplicate_ids_across_shards_flagged(bad_rows_run):
    out, df, m, _ = bad_rows_run
    b = df[df["shard"].str.endswith("b.parquet")].set_index("row").sort_index()
    dup = b.loc[0:9]
    assert dup["status"].str.startswith("duplicate_object_id:").all()
    assert dup["status"].str.contains("a.parquet row").all()  # names the first occurrence
    assert dup["score"].isna().all() and dup["score_m0"].isna().all()
    a = df[df["shard"].str.endswith("a.parquet")].set_index("row")
    assert (a.loc[50:59, "status"] == "ok").all()  # the first occurrence keeps its score
    assert m["counts"]["duplicate_object_ids"] == 10
    cand = pq.read_table(os.path.join(out, "candidates.parquet")).to_pandas()
    assert (cand["status"] == "ok").all() and not cand["object_id"].duplicated().any()


def test_later_occurrences_stream_one_file_at_a_time():
    """The later occurrences of repeated ids came back as one table turned into a dict per row
    (a survey listed twice: half its rows, out of memory after scoring); they now stream by
    file, and a file's rows that span batches stay one group."""
    from lensscan.score.duplicates import _by_file

    names = ["a", "a", "a", "b", "c", "c", "c", "c", "d"]
    table = pa.table({"filename": names, "row": list(range(len(names)))})
    reader = pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=2))
    got = [(name, t.column("row").to_pylist()) for name, t in _by_file(reader)]
    assert got == [("a", [0, 1, 2]), ("b", [3]), ("c", [4, 5, 6, 7]), ("d", [8])]
    empty = pa.RecordBatchReader.from_batches(table.schema, [])
    assert list(_by_file(empty)) == []


def test_overflowing_pixels_quarantined_not_null_ok(bad_rows_run):
    """Pixels near the float32 maximum overflow the preprocessing: the row is quarantined,
    never 'ok' with a null score."""
    _, df, _, _ = bad_rows_run
    a = df[df["shard"].str.endswith("a.parquet")].set_index("row")
    assert a.loc[7, "status"].startswith("non_finite_input:") and np.isnan(a.loc[7, "score"])
    _assert_every_row_settled(df)


def test_coordinates_off_the_sky_flagged(bad_rows_run):
    _, df, _, _ = bad_rows_run
    a = df[df["shard"].str.endswith("a.parquet")].set_index("row")
    for r in (9, 11):
        assert a.loc[r, "status"].startswith("invalid_coordinates:"), a.loc[r, "status"]


def test_rejected_shards_counted_and_reported(bad_rows_run):
    """The rows of a shard whose footer is readable are counted as quarantined; every
    unreadable shard's reason is printed on stderr."""
    out, df, m, err = bad_rows_run
    c = df[df["shard"].str.endswith("c.parquet")]
    assert len(c) == 30 and c["status"].str.startswith(
        "unreadable: missing required column 'image'").all()
    assert c["object_id"].isna().all()
    counts = m["counts"]
    assert counts["rows_read"] == 60 + 40 + 30 == len(df)
    assert counts["rows_read"] == counts["rows_scored"] + counts["rows_quarantined"]
    assert counts["rows_scored"] == int((df["status"] == "ok").sum()) == 60 - 4 + 40 - 10
    assert counts["shards_unreadable"] == 2
    for name in ("c.parquet", "d.parquet"):
        assert f"unreadable shard {os.path.join(os.path.dirname(df['shard'][0]), name)}" in err


def test_no_readable_shard_fails_with_reasons(tiny_model, tmp_path):
    """Nothing readable is a failure (exit status 2), with every shard's reason on stderr."""
    src = tmp_path / "in"
    src.mkdir()
    (src / "x.parquet").write_bytes(b"not parquet")
    pq.write_table(batch_to_table(make_batch(12, seed=1)).drop_columns(["image"]),
                   str(src / "y.parquet"))
    out = str(tmp_path / "out")
    code, err = _cli("score", str(src), out, "--model", tiny_model)
    assert code == 2, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("lensscan score: error: ") and "no row could be read" in last
    assert "2 of 2 shards unreadable" in last and "12 rows quarantined" in last
    assert "x.parquet: not a readable Parquet file" in err
    assert "y.parquet: missing required column 'image'" in err
    assert not os.path.exists(os.path.join(out, "_manifest.json"))
    quarantine = json.loads(pathlib.Path(out, "_quarantine.json").read_text())
    assert len(quarantine["shards"]) == 2


def test_mixed_id_types_scored_as_strings(ray_local, tiny_model, tmp_path):
    """int64 ids in one shard and strings in another: both scored, ids written as strings."""
    src = tmp_path / "in"
    src.mkdir()
    write_parquet(str(src / "ints.parquet"), make_batch(20, seed=1, start_id=100))
    s = make_batch(15, seed=2)
    s["object_id"] = np.array([f"HSC-{i}" for i in range(15)], dtype=object)
    write_parquet(str(src / "strs.parquet"), s)
    out = str(tmp_path / "out")
    code, err = _cli("score", str(src), out, "--model", tiny_model)
    assert code == 0, err
    df = _scores(out)
    assert pa.types.is_string(pq.read_schema(
        os.path.join(out, "scores", os.listdir(os.path.join(out, "scores"))[0])).field(
        "object_id").type)
    assert set(df["object_id"]) == {str(i) for i in range(100, 120)} | {
        f"HSC-{i}" for i in range(15)}
    m = _manifest(out)
    assert m["ids_as_strings"] and m["counts"]["rows_scored"] == 35
    assert query(out, top=3).num_rows == 3


def _direct(model: str, images: np.ndarray) -> np.ndarray:
    loaded = modelcard.load_model(model)
    x = torch.from_numpy(preprocess(images, Preprocessing.from_dict(loaded.preprocessing)))
    with torch.inference_mode():
        return loaded.module(x)[0].numpy()


def test_output_of_another_run_refused_unless_overwrite(ray_local, tiny_model, tmp_path):
    """Resume is keyed on the run's fingerprint: another input, model or cut into the same
    output is refused, naming what differs; --overwrite clears the old output first."""
    a_dir, b_dir, out = tmp_path / "a", tmp_path / "b", str(tmp_path / "out")
    write_parquet(str(a_dir / "p.parquet"), make_batch(30, seed=1))
    b = make_batch(25, seed=2, start_id=1000)
    write_parquet(str(b_dir / "p.parquet"), b)
    assert _cli("score", str(a_dir), out, "--model", tiny_model)[0] == 0
    shards = fingerprint.read_shards(out)  # provenance: each shard's size and ETag/mtime
    assert list(shards) == [str(a_dir / "p.parquet")]
    assert shards[str(a_dir / "p.parquet")].size == os.path.getsize(a_dir / "p.parquet")
    refusals = {
        "another survey": (("score", str(b_dir), out, "--model", tiny_model),
                           "1 input shard(s) added"),
        "another model": (("score", str(a_dir), out, "--model", os.path.join(tiny_model, "m0")),
                          "another model"),
        "another cut": (("score", str(a_dir), out, "--model", tiny_model, "--top", "5"),
                        "top None -> 5"),
    }
    for what, (argv, words) in refusals.items():
        code, err = _cli(*argv)
        assert code == 2, what
        line = err.strip().splitlines()[-1]
        assert "holds the output of another run" in line and words in line, (what, line)
        assert "--overwrite" in line
    assert len(_scores(out)) == 30  # untouched
    code, err = _cli("score", str(b_dir), out, "--model", tiny_model, "--overwrite")
    assert code == 0, err
    df = _scores(out)
    assert set(df["object_id"]) == set(range(1000, 1025))  # survey A's rows are gone
    m = _manifest(out)
    assert m["input"] == str(b_dir) and m["counts"]["rows_read"] == 25
    cand = pq.read_table(os.path.join(out, "candidates.parquet")).to_pandas()
    assert set(cand["object_id"]) <= set(range(1000, 1025))
    np.testing.assert_allclose(df.sort_values("row")["score"], _direct(tiny_model, b["image"]),
                               rtol=1e-4, atol=1e-6)
    # the same shard URL with other bytes is another input too
    write_parquet(str(b_dir / "p.parquet"), make_batch(25, seed=9, start_id=1000))
    code, err = _cli("score", str(b_dir), out, "--model", tiny_model)
    assert code == 2 and "1 input shard(s) changed" in err


def test_demo_with_another_model_rescores(ray_local, tiny_model, tmp_path):
    """`lensscan demo --model tiny` after a demo with the default ensemble scores with tiny
    (it reported the default ensemble's recovery, "0 rows to score")."""
    from lensscan.demo import run_demo

    workdir = str(tmp_path / "demo")
    with contextlib.redirect_stdout(io.StringIO()):
        first = run_demo(workdir, lenses=1, nonlenses=7, gallery=False)
        second = run_demo(workdir, lenses=1, nonlenses=7, model=tiny_model, gallery=False)
    assert first["manifest"]["model"]["checksum"] == modelcard.load_model("default").checksum
    m = second["manifest"]
    assert m["model"]["checksum"] == modelcard.load_model(tiny_model).checksum
    assert m["counts"]["rows_scored_this_run"] == 8
    df = _scores(os.path.join(workdir, "run"))
    survey = pq.read_table(os.path.join(workdir, "survey")).to_pandas()
    images = np.stack(survey.sort_values("object_id")["image"].map(
        lambda v: np.asarray(v, np.float32).reshape(3, 64, 64)))
    got = df.sort_values("object_id")["score"].to_numpy()
    np.testing.assert_allclose(got, _direct(tiny_model, images), rtol=1e-4, atol=1e-6)
