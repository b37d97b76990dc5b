"""Queries checked against independent numpy/astropy computations over the same files."""

from __future__ import annotations

import json
import pathlib
import re

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from support import finish_output

from lensscan.catalog import formats
from lensscan.catalog.names import iau_names
from lensscan.catalog.query import Cone, query, source_sql
from lensscan.cli import main
from lensscan.errors import OutputError
from lensscan.io import storage
from lensscan.score import commit

ORDER = ["object_id", "ra", "dec", "score", "score_a", "shard", "row", "status"]


def _scores(out: str, n: int = 3000, seed: int = 0) -> dict:
    """A scoring output with objects clustered around RA=0 and near the north pole."""
    rng = np.random.default_rng(seed)
    ra = np.concatenate([rng.uniform(359.9, 360.0, n // 3), rng.uniform(0.0, 0.1, n // 3),
                         rng.uniform(0, 360, n - 2 * (n // 3))]) % 360
    dec = np.concatenate([rng.uniform(-0.05, 0.05, 2 * (n // 3)),
                          rng.uniform(89.9, 90.0, n - 2 * (n // 3))])
    score = rng.random(n).astype(np.float32)
    status = np.full(n, "ok", dtype=object)
    status[::97] = "all_zero: every pixel is 0"
    score[::97] = np.nan
    rows = {"object_id": np.arange(n, dtype=np.int64), "ra": ra, "dec": dec, "score": score,
            "score_a": score, "shard": np.full(n, "s.parquet", dtype=object),
            "row": np.arange(n, dtype=np.int64), "status": status}
    for k in range(3):  # three parts, like three units
        sel = slice(k * n // 3, (k + 1) * n // 3)
        commit.write_unit(out, f"k{k}", {c: v[sel] for c, v in rows.items()}, ORDER)
    commit.finalize(out, ["k0", "k1", "k2"], 0.9, None)
    finish_output(out)
    return rows


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("q") / "run")
    return path, _scores(path)


def _ok(rows):
    return rows["status"] == "ok"


def test_top_n_and_min_score(out):
    path, rows = out
    ok = _ok(rows)
    t = query(path, top=25)
    expect = np.argsort(-np.where(ok, rows["score"], -np.inf), kind="stable")[:25]
    np.testing.assert_array_equal(t.column("object_id").to_numpy(), rows["object_id"][expect])
    assert t.column("rank").to_pylist() == list(range(1, 26))
    t = query(path, min_score=0.95)
    assert t.num_rows == int((ok & (rows["score"] >= 0.95)).sum())
    assert (t.column("score").to_numpy() >= 0.95).all()


@pytest.mark.parametrize("ra0,dec0,radius", [(0.0, 0.0, 150.0), (359.97, 0.01, 90.0),
                                              (120.0, 89.97, 200.0), (0.0, 90.0, 300.0)])
def test_cone_matches_astropy(out, ra0, dec0, radius):
    path, rows = out
    ok = _ok(rows)
    sep = SkyCoord(rows["ra"] * u.deg, rows["dec"] * u.deg).separation(
        SkyCoord(ra0 * u.deg, dec0 * u.deg)).arcsec
    expect = set(rows["object_id"][ok & (sep <= radius)])
    t = query(path, cone=Cone(ra0, dec0, radius))
    got = dict(zip(t.column("object_id").to_pylist(), t.column("distance_arcsec").to_pylist(),
                   strict=True))
    assert set(got) == expect and len(expect) > 5
    for oid, d in list(got.items())[:50]:
        assert d == pytest.approx(sep[oid], abs=1e-6)


def test_where_and_rank_among_all(out):
    path, rows = out
    t = query(path, where="row % 2 = 0", top=5)
    assert all(r % 2 == 0 for r in t.column("row").to_pylist())
    full = query(path)
    ranks = dict(zip(full.column("object_id").to_pylist(), full.column("rank").to_pylist(),
                     strict=True))
    assert all(ranks[o] == r for o, r in zip(t.column("object_id").to_pylist(),
                                             t.column("rank").to_pylist(), strict=True))


def test_candidates_file(out):
    path, rows = out
    t = query(path, candidates=True)
    expect = int((_ok(rows) & (rows["score"] >= 0.9)).sum())
    assert t.num_rows == expect
    cand = pq.read_table(f"{path}/candidates.parquet")
    assert cand.column("rank").to_pylist() == list(range(1, expect + 1))


def test_bad_where_is_clear(out):
    with pytest.raises(ValueError, match="unknown column 'no_such_column'"):
        query(out[0], where="no_such_column > 1")


def test_s3_query(s3_bucket):
    path = f"{s3_bucket}/run"
    rows = _scores(path, n=300, seed=3)
    t = query(path, top=3)
    ok = _ok(rows)
    best = rows["object_id"][np.argsort(-np.where(ok, rows["score"], -np.inf))[:3]]
    np.testing.assert_array_equal(t.column("object_id").to_numpy(), best)


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet", "fits", "votable"])
def test_output_formats_round_trip(out, tmp_path, fmt):
    from astropy.table import Table

    t = query(out[0], top=7)
    dest = str(tmp_path / f"r.{fmt}")
    formats.write(t, fmt, dest)
    if fmt == "csv":
        back = pacsv.read_csv(dest)
        assert back.column("object_id").to_pylist() == t.column("object_id").to_pylist()
    elif fmt == "json":
        back = json.loads(pathlib.Path(dest).read_text())
        assert [r["object_id"] for r in back] == t.column("object_id").to_pylist()
    elif fmt == "parquet":
        assert pq.read_table(dest).equals(t)
    else:
        back = Table.read(dest, format="fits" if fmt == "fits" else "votable")
        assert list(back["object_id"]) == t.column("object_id").to_pylist()
        np.testing.assert_allclose(back["score"], t.column("score").to_numpy())


def test_cli_query_table_and_csv(out, capsys):
    assert main(["query", out[0], "--top", "3", "--format", "csv"]) == 0
    text = capsys.readouterr().out
    lines = text.strip().splitlines()
    assert lines[0].startswith('"rank","object_id"') or lines[0].startswith("rank,object_id")
    assert len(lines) == 4
    assert main(["query", out[0], "--cone", "0", "0", "100", "--top", "2"]) == 0
    assert "distance_arcsec" in capsys.readouterr().out
    assert main(["query", out[0], "--where", "nonsense >"]) == 2
    assert "not one SQL expression" in capsys.readouterr().err


def test_text_table_formatting():
    t = pa.table({"a": [1, 2], "b": [0.123456789, None]})
    text = formats.to_text_table(t)
    assert "0.123457" in text and text.splitlines()[0].split() == ["a", "b"]


def test_truth_recovery_by_id_and_position(out, tmp_path):
    from lensscan.catalog.truth import read_truth, recovery

    path, rows = out
    ok = _ok(rows)
    order = np.argsort(-np.where(ok, rows["score"], -np.inf), kind="stable")
    rank = np.empty(len(order), int)
    rank[order] = np.arange(1, len(order) + 1)
    known = [int(order[0]), int(order[10]), int(order[500]), 97]  # 97 was quarantined
    pq.write_table(pa.table({"object_id": known}), tmp_path / "t.parquet")
    table, summary = recovery(path, read_truth(str(tmp_path / "t.parquet")), top=100)
    got = dict(zip(table.column("known_id").to_pylist(), table.column("rank").to_pylist(),
                   strict=True))
    assert got == {str(known[0]): 1, str(known[1]): 11, str(known[2]): 501, "97": None}
    assert summary == {"known": 4, "matched": 3, "top": 100, "recovered": 2, "recall": 0.5,
                       "purity": 0.02}
    # by position, with a little astrometric offset
    t = pa.table({"ra": rows["ra"][known[:3]] + 0.1 / 3600, "dec": rows["dec"][known[:3]]})
    table, summary = recovery(path, t, top=100, radius_arcsec=0.5)
    assert sorted(table.column("rank").to_pylist()) == [1, 11, 501]
    assert max(table.column("separation_arcsec").to_pylist()) < 0.2
    # merged catalogues: ids null or repeated stay one known lens per row, and two entries of
    # one lens matching one candidate are one true positive in the purity
    t = pa.table({"object_id": pa.array(["A", None, None, "A"], pa.string()),
                  "ra": rows["ra"][[known[0], known[1], known[2], known[0]]],
                  "dec": rows["dec"][[known[0], known[1], known[2], known[0]]]})
    table, summary = recovery(path, t, top=100, radius_arcsec=0.5)
    assert sorted(table.column("rank").to_pylist()) == [1, 1, 11, 501]
    assert summary["known"] == 4 and summary["recovered"] == 3 and summary["purity"] == 0.02


def test_a_position_matched_by_two_rows_gives_one_rows_rank_score_and_position(tmp_path):
    """One object under two ids (overlapping tracts) at the same position: rank, score, ra and
    dec each went to whichever row the aggregate met first, so a known lens could get one
    row's rank and the other's score."""
    from lensscan.catalog.truth import recovery

    n = 400  # 200 objects, each scored twice at one position with different scores
    rng = np.random.default_rng(4)
    ra, dec = np.repeat(rng.uniform(10, 11, n // 2), 2), np.repeat(rng.uniform(2, 3, n // 2), 2)
    score = rng.permutation(n).astype(np.float32) / n
    rows = {"object_id": np.arange(n, dtype=np.int64), "ra": ra, "dec": dec, "score": score,
            "score_a": score, "shard": np.full(n, "s.parquet", dtype=object),
            "row": np.arange(n, dtype=np.int64), "status": np.full(n, "ok", dtype=object)}
    out = str(tmp_path / "run")
    for k in range(2):  # the two copies of each object in different parts, as two tracts
        commit.write_unit(out, f"k{k}", {c: v[k::2] for c, v in rows.items()}, ORDER)
    commit.finalize(out, ["k0", "k1"], 0.5, None)
    finish_output(out)
    table, _ = recovery(out, pa.table({"ra": ra[::2], "dec": dec[::2]}), radius_arcsec=0.5)
    best = np.maximum(score[::2], score[1::2])  # the better-ranked copy of each object
    got = table.to_pydict()
    rank_of = {float(v): r for r, v in enumerate(np.sort(score)[::-1], start=1)}
    assert sorted(got["score"]) == pytest.approx(sorted(best.tolist()))
    assert all(rank_of[float(np.float32(sc))] == r
               for sc, r in zip(got["score"], got["rank"], strict=True))


def test_truth_columns_given_are_not_replaced_and_a_byte_order_mark_is_skipped(tmp_path):
    from lensscan.catalog.truth import read_truth

    (tmp_path / "t.csv").write_text("name,RA,DEC,RAdeg,DEdeg\nL1,10.0,2.0,150.0,2.0\n")
    t = read_truth(str(tmp_path / "t.csv"), ",RAdeg,DEdeg")
    assert t.column("ra").to_pylist() == [150.0] and t.column("ra_orig").to_pylist() == [10.0]
    (tmp_path / "g.csv").write_bytes(b"\xef\xbb\xbfobject_id,grade\n00042,A\n")
    assert read_truth(str(tmp_path / "g.csv")).column("object_id").to_pylist() == ["00042"]


def test_candidates_query_and_recovery_share_one_ranking(tmp_path):
    """Ties in score are broken by object id, the same way in candidates.parquet, a query and
    a recovery; quarantined rows are never ranked."""
    from lensscan.catalog.truth import recovery

    rng = np.random.default_rng(5)
    n = 400
    score = rng.choice(np.float32([0.2, 0.5, 0.7, 0.9]), n)  # many ties
    status = np.where(rng.random(n) < 0.1, "all_zero: every pixel is 0", "ok").astype(object)
    score[status != "ok"] = np.nan
    ids = rng.permutation(10 * n)[:n].astype(np.int64)
    rows = {"object_id": ids, "ra": rng.uniform(0, 1, n), "dec": rng.uniform(0, 1, n),
            "score": score, "score_a": score, "shard": np.full(n, "s.parquet", dtype=object),
            "row": np.arange(n, dtype=np.int64), "status": status}
    out = str(tmp_path / "run")
    for k in range(2):
        commit.write_unit(out, f"k{k}", {c: v[k::2] for c, v in rows.items()}, ORDER)
    # DuckDB failing on sound parts (here a LIMIT beyond int64, which `score` now refuses
    # before it reads) is no damaged part: no --overwrite, rescoring the survey, advised
    with pytest.raises(OutputError, match=r"run/scores: the committed parts could not be "
                                          r"counted \(.*\)$"):
        commit.finalize(out, ["k0", "k1"], None, 2**63)
    commit.finalize(out, ["k0", "k1"], None, 50)
    finish_output(out)
    ok = np.flatnonzero(status == "ok")
    expect = ids[ok[np.lexsort((ids[ok], -score[ok]))]]  # score descending, then id
    cand = pq.read_table(f"{out}/candidates.parquet")
    assert cand.column("object_id").to_pylist() == list(expect[:50])
    assert cand.column("rank").to_pylist() == list(range(1, 51))
    assert query(out, top=50).column("object_id").to_pylist() == list(expect[:50])
    known = [int(expect[0]), int(expect[77]), int(expect[-1])]
    table, _ = recovery(out, pa.table({"object_id": known}))
    assert table.column("rank").to_pylist() == [1, 78, len(expect)]


def test_gallery_grades_csv_reads_back_as_truth(out, tmp_path, capsys):
    path, rows = out
    best = int(np.nanargmax(np.where(_ok(rows), rows["score"], np.nan)))
    (tmp_path / "grades.csv").write_text(
        f'object_id,grade\n"{best}","A"\n"5","not a lens"\n')
    assert main(["query", path, "--truth", str(tmp_path / "grades.csv"), "--top", "10",
                 "--format", "json"]) == 0
    captured = capsys.readouterr()
    rows_out = json.loads(captured.out)
    ra, dec = rows_out[0]["ra"], rows_out[0]["dec"]
    assert rows_out == [{"known_id": str(best), "name": iau_names([ra], [dec])[0], "rank": 1,
                         "score": rows_out[0]["score"], "ra": ra, "dec": dec}]
    assert json.loads(captured.err.strip().splitlines()[-1])["recovered"] == 1


def test_a_grades_truth_table_is_combined_as_training_combines_it(tmp_path):
    """Two graders' A on one object is one known lens; a grader's later "not a lens" wins; a
    lone C is no known lens; an unknown grade is refused, naming its row."""
    from lensscan.catalog.truth import read_truth

    grades = tmp_path / "g.csv"
    grades.write_text("object_id,grade,grader,time\n1,A,ann,\n1,A,bob,\n"
                      "2,A,ann,2026-11-29T10:00:00Z\n2,not a lens,ann,2026-11-29T11:00:00Z\n"
                      "3,C,ann,\n4,B,ann,\n")
    table = read_truth(str(grades))
    assert table.column("object_id").to_pylist() == ["1", "4"]
    by_position = tmp_path / "p.csv"  # no ids: each row's own grade
    by_position.write_text("object_id,ra,dec,grade\n,10,1,A\n,11,1,not a lens\nq,12,1,C\n")
    assert read_truth(str(by_position)).column("ra").to_pylist() == [10]
    grades.write_text("object_id,grade\n1,A\n2,zzz\n")
    with pytest.raises(ValueError, match="row 3: grade 'zzz' of object '2' is not one of"):
        read_truth(str(grades))


ATTACKS = {
    "1=1); COPY (SELECT 42) TO 'x.csv'; SELECT (1": "not one SQL expression",
    "row >= 0) UNION ALL SELECT 42, * FROM read_csv('/etc/passwd') --": "not one SQL expression",
    "row >= 0) UNION ALL SELECT 42, * FROM read_csv('/etc/passwd') WHERE (true":
        "not one SQL expression",
    # a clause beside the expression, which the rendering of the condition dropped silently
    "true) WINDOW w AS (ORDER BY score": "a ')' closes more than it opened",
    "name = ')(' AND (row > 0 -- )\n)": "unknown column 'name'",  # quoted and commented: fine
    " ": "the filter is empty",
    "object_id": "not a condition (it gives BIGINT)",  # DuckDB took a nonzero number as true
    "": "the filter is empty",
    # the tokenizer counts bytes: text before the ')' that is not ASCII must not hide it
    "status = '\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9') WINDOW w AS (ORDER BY score":
        "a ')' closes more than it opened",
    "(SELECT count(*) FROM read_csv('/etc/passwd')) > 0": "subqueries are not allowed",
    "score > 0 AND length(read_text('/etc/passwd')) > 0": "function 'read_text' is not allowed",
    "getenv('AWS_SECRET_ACCESS_KEY') IS NOT NULL": "function 'getenv' is not allowed",
    "score > 0 ORDER BY ra": "not one SQL expression",
    "count(*) > 1": "function 'count_star' is not allowed",
    "t.score > 0": "unknown column 't.score'",
    "score + " * 300 + "0 > 1": "nested too deeply",  # DuckDB's depth limit
    "score + " * 900 + "0 > 1": "nested too deeply",  # Python's recursion limit
}


def test_where_is_one_expression_over_the_output(out, tmp_path, monkeypatch, capsys):
    """--where accepts one boolean expression over the output's columns: no statements,
    subqueries, table functions or file access, through the CLI and the Python API."""
    path, rows = out
    monkeypatch.chdir(tmp_path)
    for text, why in ATTACKS.items():
        with pytest.raises(ValueError, match=re.escape(why)):
            query(path, where=text)
    assert not (tmp_path / "x.csv").exists()
    assert main(["query", path, "--where", next(iter(ATTACKS))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not one SQL expression" in err[0]
    assert not (tmp_path / "x.csv").exists()
    # what a filter is for still works: columns, arithmetic, functions, IN, LIKE, casts
    with pytest.raises(ValueError, match=r"query failed: .*missing \]"):  # the filter's fault
        query(path, where="regexp_matches(status, '[')")
    assert query(path, where="status = '\u00e9\u00e9\u00e9\u00e9' OR status = '))' OR "
                             "row IN ((1), (2))").num_rows == 2
    t = query(path, where="(row % 3 = 0 OR object_id IN (1, 2)) AND shard LIKE 's.%' "
                          "AND CAST(row AS VARCHAR) <> '' AND abs(dec) < 90 AND rank <= 50")
    got = t.column("row").to_pylist()
    assert got and all(r % 3 == 0 or r in (1, 2) for r in got)
    assert max(t.column("rank").to_pylist()) <= 50


def test_queries_reach_nothing_but_the_output(out, s3_bucket):
    """The connection a query runs on reads its output and nothing else: no local file, no
    other bucket, no writes outside it."""
    import boto3

    from lensscan import duck

    path, _ = out
    con = duck.connect(path)
    duck.confine(con, path)
    assert con.execute(f"SELECT count(*) FROM {source_sql(path)}").fetchone()[0] == 3000
    for sql in ("SELECT * FROM read_csv('/etc/passwd')", "COPY (SELECT 1) TO '/tmp/x.csv'",
                "SET enable_external_access = true"):
        with pytest.raises(duckdb.Error):
            con.execute(sql)
    other = f"{s3_bucket}-other"
    boto3.client("s3").create_bucket(Bucket=other.removeprefix("s3://"))
    storage.write_bytes_atomic(f"{other}/t.csv", b"a,b\n1,2\n")
    run = f"{s3_bucket}/run"
    _scores(run, n=30, seed=1)
    con = duck.connect(run)
    duck.confine(con, run)
    assert con.execute(f"SELECT count(*) FROM {source_sql(run)}").fetchone()[0] == 30
    with pytest.raises(duckdb.Error, match="disabled by configuration"):
        con.execute(f"SELECT * FROM read_csv('{other}/t.csv')")


@pytest.fixture(scope="module")
def calibrated_out(tmp_path_factory):
    """A scoring output with logit, member_spread and p_lens, from a run at prior 1e-3."""
    from lensscan.score import fingerprint

    path = str(tmp_path_factory.mktemp("qp") / "run")
    rng = np.random.default_rng(3)
    n = 500
    score = rng.uniform(0.01, 0.99, n).astype(np.float32)
    rows = {"object_id": np.arange(n, dtype=np.int64), "ra": rng.uniform(0, 360, n),
            "dec": rng.uniform(-60, 60, n), "score": score, "score_a": score,
            "shard": np.full(n, "s.parquet", dtype=object), "row": np.arange(n, dtype=np.int64),
            "status": np.full(n, "ok", dtype=object),
            "logit": np.log(score / (1 - score)).astype(np.float32),
            "member_spread": np.zeros(n, np.float32), "p_lens": (score * 0.01).astype(np.float32)}
    order = [*ORDER, "logit", "member_spread", "p_lens"]
    commit.write_unit(path, "k0", rows, order)
    commit.finalize(path, ["k0"], 0.9, None)
    rec = fingerprint.RunRecord(input="test", model_checksum="test", threshold=0.9, top=None,
                                preprocessing={}, rows_per_unit=2048, prior=1e-3, columns=order)
    fingerprint.write(path, rec)
    commit.write_json(storage.join(path, commit.MANIFEST), {"fingerprint": rec.fingerprint})
    return path, rows


def test_p_lens_is_returned_and_summed_over_the_rows_returned(calibrated_out, out, capsys):
    """A calibrated run's query returns p_lens and says, on stderr, how many real lenses the
    rows returned hold in expectation (sum of p_lens) and their expected purity."""
    from lensscan.catalog.query import expected_in

    path, rows = calibrated_out
    t = query(path, top=20)
    assert t.column_names == ["rank", "object_id", "ra", "dec", "score", "score_a", "shard",
                              "row", "p_lens"]
    best = np.sort(rows["p_lens"].astype(np.float64))[::-1][:20]
    s = expected_in(t, 1e-3)
    assert (s["rows"], s["n"], s["prior"]) == (20, 20, 1e-3)
    assert s["expected_lenses"] == pytest.approx(best.sum(), abs=1e-4)
    assert s["expected_purity"] == pytest.approx(best.sum() / 20, abs=1e-6)
    assert main(["query", path, "--top", "20", "--format", "csv"]) == 0
    cap = capsys.readouterr()
    lines = cap.out.strip().splitlines()
    assert len(lines) == 21 and "p_lens" in lines[0]  # stdout: the table only
    summary = json.loads(cap.err.strip().splitlines()[-1])["expected"]
    assert summary["expected_lenses"] == pytest.approx(best.sum(), abs=1e-4)
    assert main(["query", path, "--where", "p_lens > 0.005", "--columns",
                 "object_id,logit,member_spread", "--format", "csv"]) == 0
    cap = capsys.readouterr()
    header = cap.out.splitlines()[0].replace('"', "").split(",")
    assert header == ["rank", "object_id", "logit", "member_spread"]
    assert len(cap.out.strip().splitlines()) == 1 + int((rows["score"] > 0.5).sum())
    assert "expected" not in cap.err  # no p_lens among the columns asked for
    assert main(["query", out[0], "--top", "3"]) == 0  # an output without p_lens: no summary
    assert "expected" not in capsys.readouterr().err


def test_duckdb_spills_to_a_private_folder_of_this_process():
    """Not a fixed /tmp name another user of the machine could create first, or read."""
    import os
    import stat

    from lensscan import duck

    path = duck.spill_folder()
    assert os.path.basename(path).startswith("lensscan-duckdb-") and path != "/tmp/lensscan-duckdb"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o700 and os.stat(path).st_uid == os.getuid()
    con = duck.connect()
    assert con.execute("SELECT current_setting('temp_directory')").fetchone()[0] == path


def test_saturated_scores_rank_by_their_logit(tmp_path):
    """float32 scores saturate: logits 17.5 and 25 are both a score of 1.0, and the object
    the model is surer of must rank first, in the catalog, the queries and the recovery."""
    out = str(tmp_path / "run")
    logit = np.array([17.5, 25.0, 3.0], np.float32)
    score = (1 / (1 + np.exp(-logit.astype(np.float64)))).astype(np.float32)
    assert score[0] == score[1] == 1.0
    rows = {"object_id": np.array([1, 2, 3]), "ra": np.zeros(3), "dec": np.zeros(3),
            "score": score, "score_a": score, "shard": np.full(3, "s.parquet", dtype=object),
            "row": np.arange(3), "status": np.full(3, "ok", dtype=object), "logit": logit}
    commit.write_unit(out, "k0", rows, [*ORDER, "logit"])
    commit.finalize(out, ["k0"], 0.99, None)
    finish_output(out)
    assert pq.read_table(f"{out}/candidates.parquet").column("object_id").to_pylist() == [2, 1]
    assert query(out).column("object_id").to_pylist() == [2, 1, 3]
    assert query(out, where="object_id < 3").column("rank").to_pylist() == [1, 2]


def test_truth_tables_of_every_kind_read_and_count_right(out, tmp_path):
    """A label column keeps its lenses (text labels are refused); an id column named with
    --truth-cols stays text (leading zeros and all); a gzipped table is read; purity counts the
    rows scored when --top asks for more."""
    from lensscan.catalog.truth import read_truth, recovery

    path, rows = out
    (tmp_path / "l.csv").write_text("object_id,label\n5,1\n6,0\n7,1\n")
    assert read_truth(str(tmp_path / "l.csv")).column("object_id").to_pylist() == ["5", "7"]
    (tmp_path / "n.csv").write_text("ObjName,x\n00123,1\n")
    t = read_truth(str(tmp_path / "n.csv"), "ObjName,,")
    assert t.column("object_id").to_pylist() == ["00123"]
    import gzip

    (tmp_path / "t.csv.gz").write_bytes(gzip.compress(b"object_id\n00042\n"))
    assert read_truth(str(tmp_path / "t.csv.gz")).column("object_id").to_pylist() == ["00042"]
    (tmp_path / "b.csv.gz").write_bytes(b"\x1f\x8b")
    with pytest.raises(ValueError, match="b.csv.gz: not a readable gzip file"):
        read_truth(str(tmp_path / "b.csv.gz"))
    (tmp_path / "y.csv").write_text("object_id,label\n5,yes\n")
    with pytest.raises(ValueError, match="y.csv: column 'label' must hold 1"):
        read_truth(str(tmp_path / "y.csv"))
    scored = int(_ok(rows).sum())
    best = int(np.nanargmax(np.where(_ok(rows), rows["score"], np.nan)))
    _, summary = recovery(path, pa.table({"object_id": [str(best)]}), top=10 * len(rows["score"]))
    assert summary["recovered"] == 1 and summary["purity"] == 1 / scored


def test_recovery_of_a_damaged_output_is_one_line(tmp_path):
    from lensscan.catalog.truth import recovery

    path = str(tmp_path / "run")
    _scores(path, n=30)
    part = next(pathlib.Path(path, commit.SCORES).glob("*.parquet"))
    part.write_bytes(b"not parquet at all")
    with pytest.raises(ValueError, match=rf"{re.escape(str(part))}: damaged part of "):
        recovery(path, pa.table({"object_id": ["1"]}), top=5)


def test_query_options_that_do_not_go_together_are_refused(out, capsys):
    """--truth ranks known lenses among all scores: listing cuts beside it would be silently
    ignored, so they are refused; --match-radius and --truth-cols need --truth. --columns
    takes rank (always first), refuses a repeat and distance_arcsec without --cone."""
    path = out[0]
    assert main(["query", path, "--truth", "t.csv", "--where", "score > 0.5",
                 "--min-score", "0.9"]) == 2
    assert "--where, --min-score cut a listing" in capsys.readouterr().err
    assert main(["query", path, "--truth", "t.csv", "--min-score", "0"]) == 2
    assert "--min-score cut a listing" in capsys.readouterr().err
    assert main(["query", path, "--match-radius", "1"]) == 2
    assert "--match-radius only go with --truth" in capsys.readouterr().err
    assert main(["query", path, "--columns", "ra,ra"]) == 2
    assert "more than once" in capsys.readouterr().err
    assert main(["query", path, "--columns", "distance_arcsec"]) == 2
    assert "comes with --cone" in capsys.readouterr().err
    t = query(path, top=2, columns=["rank", "object_id"])
    assert t.column_names == ["rank", "object_id"]
    t = query(path, top=2, columns=["object_id", "distance_arcsec"], cone=Cone(0.0, 0.0, 300.0))
    assert t.column_names == ["rank", "object_id", "distance_arcsec"]


def test_a_filter_may_end_in_a_comment(out):
    a = query(out[0], where="score > 0.5 -- the bright ones")
    assert a.num_rows == query(out[0], where="score > 0.5").num_rows > 0


def test_a_cone_off_the_sky_is_named_with_the_values_given(out):
    """A Dec of 90.0000001 was reported as "--cone 0 90 10" (rounded by :g): the message shows
    what was given."""
    with pytest.raises(ValueError, match=r"--cone 0.0 90.0000001 10.0: RA must be in"):
        query(out[0], cone=Cone(0.0, 90.0000001, 10.0))
