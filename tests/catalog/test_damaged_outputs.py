"""Scoring outputs damaged or misused after the run, and truth tables of odd kinds: one line
naming the file, never a traceback or a silently wrong answer."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support import finish_output

from lensscan.catalog.query import query
from lensscan.catalog.truth import read_truth, recovery
from lensscan.cli import main
from lensscan.score import commit

ORDER = ["object_id", "ra", "dec", "score", "shard", "row", "status"]


def _output(path: str, n: int = 40) -> str:
    rows = {"object_id": np.arange(n, dtype=np.int64), "ra": np.linspace(150, 150.01, n),
            "dec": np.full(n, 2.0), "score": np.linspace(0, 1, n).astype(np.float32),
            "shard": np.full(n, "s.parquet", dtype=object), "row": np.arange(n),
            "status": np.full(n, "ok", dtype=object)}
    commit.write_unit(path, "k0", rows, ORDER)
    commit.finalize(path, ["k0"], 0.9, None)
    finish_output(path)
    return path


def test_a_part_of_text_scores_or_damaged_pages_is_named(tmp_path):
    """A part whose score column is text made the ranking lexicographic (DuckDB unites the
    parts' types); a part whose pages are damaged was reported without its name."""
    out = _output(str(tmp_path / "run"))
    extra = pathlib.Path(out, commit.SCORES, "part-zz.parquet")
    pq.write_table(pa.table({"object_id": [90, 91], "score": ["0.95", "0.5"]}), extra)
    with pytest.raises(ValueError, match=r"part-zz.parquet: damaged part of .*column 'score' "
                                         r"holds string"):
        query(out, top=3)
    extra.unlink()
    part = next(pathlib.Path(out, commit.SCORES).glob("part-k0*"))
    data = bytearray(part.read_bytes())
    data[100:len(data) // 2] = b"\xab" * (len(data) // 2 - 100)
    part.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=rf"{part.name}: damaged part of "):
        query(out, top=3)


def test_damaged_run_files_and_exports_into_the_output_are_one_line(tmp_path, capsys):
    out = _output(str(tmp_path / "run"))
    assert main(["query", out, "--top", "3", "--format", "parquet", "-o",
                 f"{out}/scores/top.parquet"]) == 2
    assert "it would write into the scoring output's own scores" in capsys.readouterr().err
    assert not pathlib.Path(out, "scores", "top.parquet").exists()
    listing = pathlib.Path(out, "_shards.parquet")
    pq.write_table(pq.read_table(listing).drop_columns(["size"]), listing)
    assert main(["query", out, "--top", "1"]) == 2
    err = capsys.readouterr().err
    assert "_shards.parquet: not the output's shard listing" in err and "Traceback" not in err
    finish_output(out)
    manifest = pathlib.Path(out, "_manifest.json")
    m = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**m, "model": "x"}))
    assert main(["query", out, "--top", "1"]) == 2
    err = capsys.readouterr().err
    assert "_manifest.json: field 'model' is not an object" in err and "Traceback" not in err


def test_truth_of_odd_kinds_matches_or_is_refused(tmp_path):
    """An unmatched lens has no separation (it was 648000"); text positions are numbers;
    integral float ids match as integers, other kinds are refused; a row without a position
    is refused in a cross-match; text ids are trimmed."""
    out = _output(str(tmp_path / "run"))
    far = pa.table({"object_id": ["far", "near"], "ra": [10.0, 150.0], "dec": [-30.0, 2.0]})
    table, summary = recovery(out, far, radius_arcsec=1.0)
    seps = dict(zip(table["known_id"].to_pylist(), table["separation_arcsec"].to_pylist(),
                    strict=True))
    assert seps["far"] is None and seps["near"] == pytest.approx(0.0, abs=1e-6)
    assert summary["matched"] == 1
    pq.write_table(pa.table({"ra": ["150.0"], "dec": ["2.0"]}), tmp_path / "t.parquet")
    assert recovery(out, read_truth(str(tmp_path / "t.parquet")), radius_arcsec=1.0)[1][
        "matched"] == 1
    pq.write_table(pa.table({"object_id": [39.0, 38.0, float("nan")]}), tmp_path / "f.parquet")
    ids = read_truth(str(tmp_path / "f.parquet"))["object_id"].to_pylist()
    assert ids == ["39", "38", None]
    assert recovery(out, read_truth(str(tmp_path / "f.parquet")), top=2)[1]["recovered"] == 2
    pq.write_table(pa.table({"object_id": [1.5]}), tmp_path / "h.parquet")
    with pytest.raises(ValueError, match=r"h.parquet: row 1: object id 1.5 is not an integer"):
        read_truth(str(tmp_path / "h.parquet"))
    pq.write_table(pa.table({"object_id": [True]}), tmp_path / "b.parquet")
    with pytest.raises(ValueError, match=r"b.parquet: the object id column holds bool"):
        read_truth(str(tmp_path / "b.parquet"))
    (tmp_path / "s.csv").write_text("object_id,ra,dec\n 39,nan,2\n")
    truth = read_truth(str(tmp_path / "s.csv"))
    assert truth["object_id"].to_pylist() == ["39"]
    assert recovery(out, truth, top=1)[1]["recovered"] == 1
    with pytest.raises(ValueError, match="truth: known lens '39' has no position"):
        recovery(out, truth, radius_arcsec=1.0)
    # ids of a pandas category column, a database's decimals, UTF-8 bytes: matched as text
    for ids in (pa.array(["39", "38"]).dictionary_encode(),
                pa.array([39, 38], pa.decimal128(20, 0)), pa.array([b"39", b" 38"])):
        pq.write_table(pa.table({"object_id": ids}), tmp_path / "k.parquet")
        assert recovery(out, read_truth(str(tmp_path / "k.parquet")), top=2)[1]["recovered"] == 2
    nulls = pa.table({"object_id": pa.nulls(1), "ra": [150.0], "dec": [2.0]})
    pq.write_table(nulls, tmp_path / "n.parquet")  # no ids: matched by position only
    assert recovery(out, read_truth(str(tmp_path / "n.parquet")), radius_arcsec=1.0)[1][
        "matched"] == 1
    with pytest.raises(ValueError, match="truth has no object_id: give a cross-match radius"):
        recovery(out, read_truth(str(tmp_path / "n.parquet")), top=2)
