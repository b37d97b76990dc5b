"""The stages of a scoring run, each on its own: plan -> stream -> commit -> manifest, and the
driver's collector, which gets each row's unit as a small integer and names its shard."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support import make_batch

from lensscan import modelcard
from lensscan.config import ScoreConfig
from lensscan.data.stream import plan_survey
from lensscan.errors import NothingReadableError, OutputError, StorageError
from lensscan.io.parquet import write_parquet
from lensscan.io.shards import Unit
from lensscan.score import commit, fingerprint
from lensscan.score.collect import Collector
from lensscan.score.finish import commit_run, unreadable_shards
from lensscan.score.manifest import build_manifest
from lensscan.score.pipeline import output_columns
from lensscan.score.plan import RunPlan, plan_run, rejected_units, unit_key
from lensscan.score.progress import Progress
from lensscan.score.resources import Resources
from lensscan.score.stream import Streamed, stream_units

COLUMNS = output_columns(["m0"])


def _scored(unit: int, rows: list[int]) -> dict[str, np.ndarray]:
    """A batch as the actors return it: rows of unit ``unit`` (by index), scores made up."""
    n, r = len(rows), np.asarray(rows, np.int64)
    score = (r % 7 / 7.0).astype(np.float32)
    return {"object_id": 1000 * unit + r, "ra": r * 1.0, "dec": -r * 1.0, "score": score,
            "score_m0": score, "row": r, "status": np.full(n, "ok", object),
            "logit": score, "member_spread": np.zeros(n, np.float32),
            "p_lens": np.full(n, np.nan, np.float32), "unit": np.full(n, unit, np.int32),
            "device": np.full(n, "cpu", object)}


def test_collector_names_each_units_shard_and_keeps_each_row_once(tmp_path):
    out = str(tmp_path / "out")
    units = [Unit("s3://b/a.parquet", "parquet", 0, 4), Unit("s3://b/b.parquet", "parquet", 10, 13)]
    col = Collector(out, units, ["ka", "kb"], COLUMNS)
    col.add(_scored(0, [0, 1]), t0=0.0)
    one, other = _scored(1, [10]), _scored(0, [1, 2, 3])
    col.add({k: np.concatenate([one[k], other[k]]) for k in one}, t0=0.0)
    assert commit.committed_units(out) == {"ka"}  # unit 0 is complete, a retried row once
    assert col.scored == 4 and col.received == 5
    col.add(_scored(0, [2, 3]), t0=0.0)  # a retried task re-delivers part of a committed unit
    assert col.scored == 4 and col.received == 5 and 0 not in col.pending
    assert col.run([_scored(1, [12, 11])], 0.0, Progress(enabled=False)) == 7
    a = pq.read_table(commit.part_url(out, "ka")).to_pydict()
    b = pq.read_table(commit.part_url(out, "kb")).to_pydict()
    assert a["row"] == [0, 1, 2, 3] and set(a["shard"]) == {"s3://b/a.parquet"}
    assert b["row"] == [10, 11, 12] and set(b["shard"]) == {"s3://b/b.parquet"}
    # rows scored per device: each row once (retried rows were counted twice, 10)
    assert list(a) == COLUMNS and col.devices == {"cpu": 7}
    # a unit with rows missing, or one of which no row arrived (it was not noticed): one line,
    # the run resumable (exit 3), not a RuntimeError's traceback
    for delivered in ([_scored(0, [0, 1, 2, 3]), _scored(1, [10])], [_scored(0, [0, 1, 2, 3])]):
        with pytest.raises(StorageError, match=r"ended before 1 of 2 units were complete "
                                               r"\(kb\); rerun the same command"):
            Collector(str(tmp_path / "o2"), units, ["ka", "kb"], COLUMNS).run(
                delivered, 0.0, Progress(enabled=False))


def test_collector_commits_nothing_once_its_guard_refuses(tmp_path):
    """The run's lease is checked before every part: a run whose lease another run took over
    writes no more parts into the folder."""
    from lensscan.errors import OutputError

    out = str(tmp_path / "out")
    units = [Unit("a.parquet", "parquet", 0, 2)]

    def lost() -> None:
        raise OutputError("lease lost")

    with pytest.raises(OutputError, match="lease lost"):
        Collector(out, units, ["ka"], COLUMNS, guard=lost).run([_scored(0, [0, 1])], 0.0,
                                                               Progress(enabled=False))
    assert commit.committed_units(out) == set()


def _in(arith: str, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {**batch, "arithmetic": np.full(len(batch["row"]), arith, object)}


def test_one_output_one_arithmetic(tmp_path):
    """Every part names the arithmetic of its scores; a unit of another arithmetic than the
    output's (an actor given a GPU its torch cannot use, among fp16 GPU actors), or whose rows
    mix two, is refused before it is written; parts of an older lensscan name none (unknown)
    and rejected shards' parts have no scores, so neither pins the output's arithmetic."""
    from lensscan.score import arithmetic

    out = str(tmp_path / "out")
    units = [Unit("a.parquet", "parquet", 0, 2), Unit("b.parquet", "parquet", 0, 2),
             Unit("c.parquet", "parquet", 0, 2)]
    col = Collector(out, units, ["ka", "kb", "kc"], COLUMNS)
    col.add(_in("fp16", _scored(0, [0, 1])), 0.0)
    with pytest.raises(OutputError, match="unit kb was computed in fp32, the run's first units "
                                          "in fp16: every actor must compute in one arithmetic"):
        col.add(_in("fp32", _scored(1, [0, 1])), 0.0)
    mixed = {k: np.concatenate([a, b]) for (k, a), b in
             zip(_in("fp16", _scored(2, [0])).items(), _in("bf16", _scored(2, [1])).values(),
                 strict=True)}
    with pytest.raises(OutputError, match="unit kc was computed in bf16 and fp16"):
        col.add(mixed, 0.0)
    assert commit.committed_units(out) == {"ka"}
    assert arithmetic.part_arithmetic(out, "ka") == "fp16" and col.one_arithmetic.seen == {"fp16"}
    # an older lensscan's part, and a rejected shard's: neither decides
    commit.write_unit(out, "old", {**_scored(0, [0, 1]), "shard": np.full(2, "a", object)},
                      COLUMNS)
    commit.write_rejected(out, "rej", "r.parquet", 3, "bad footer", COLUMNS, False)
    assert arithmetic.part_arithmetic(out, "old") == arithmetic.UNKNOWN
    assert arithmetic.committed_arithmetic(out, ["rej"]) == []
    assert arithmetic.committed_arithmetic(out, ["rej", "ka"]) == ["fp16"]
    col = Collector(out, units, ["ka", "kb", "kc"], COLUMNS, committed=["rej", "old"])
    col.add(_in("fp32", _scored(1, [0, 1])), 0.0)
    assert col.one_arithmetic.seen == {"unknown", "fp32"}
    # an older part read first does not hide the arithmetic of the parts after it
    (tmp_path / "out" / "scores" / "part-old.parquet").rename(
        tmp_path / "out" / "scores" / "part-aold.parquet")
    assert arithmetic.committed_arithmetic(out, ["aold", "ka"]) == ["unknown", "fp16"]
    col = Collector(out, units, ["x", "kb", "kc"], COLUMNS, committed=["aold", "ka"])
    with pytest.raises(OutputError, match="an earlier run .* in fp16; this run computes in fp32"):
        col.add(_in("fp32", _scored(1, [0, 1])), 0.0)
    # a unit with no scored row has no arithmetic of its own
    none = _in("fp32", _scored(2, [0, 1]))
    none["status"] = np.full(2, "unreadable: broken page", object)
    Collector(out, units, ["x", "kb", "kc"], COLUMNS).add(none, 0.0)
    assert arithmetic.part_arithmetic(out, "kc") == commit.NO_SCORES
    # a damaged part is named
    (tmp_path / "out" / "scores" / "part-bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(OutputError, match=r"part-bad\.parquet: damaged part .*--overwrite"):
        arithmetic.committed_arithmetic(out, ["bad"])


def _survey(root) -> None:
    for k, n in enumerate((120, 80)):
        write_parquet(str(root / f"p{k}.parquet"), make_batch(n, seed=k, start_id=1000 * k),
                      row_group_size=40)
    pq.write_table(pa.table({"object_id": [1, 2, 3]}), str(root / "noimage.parquet"))


def test_plan_finds_the_units_left_and_refuses_another_run(ray_local, tiny_model, tmp_path):
    src, out = tmp_path / "in", str(tmp_path / "out")
    src.mkdir()
    _survey(src)
    cfg = ScoreConfig(input=str(src), output=out, model=tiny_model, rows_per_unit=40)
    info = modelcard.model_info(tiny_model)
    said = []
    plan = plan_run(cfg, info, 0.5, COLUMNS, said.append)
    assert len(plan.units) == 5 and not plan.done and list(plan.todo) == list(plan.units)
    assert [u.rows for u, _ in plan.rejected.values()] == [3]  # its footer counts its rows
    assert said == ["5 units, 0 already committed, 200 rows to score"]
    assert fingerprint.read(out).fingerprint == plan.record.fingerprint
    first = next(iter(plan.units))
    commit.write_unit(out, first, _scored(0, list(range(40))) | {
        "shard": np.full(40, "x", object)}, COLUMNS)
    again = plan_run(cfg, info, 0.5, COLUMNS, said.append)
    assert again.done == {first} and first not in again.todo
    assert said[-1] == "5 units, 1 already committed, 160 rows to score"
    assert again.parts == sorted([*again.units, *again.rejected])
    with pytest.raises(OutputError, match="threshold"):
        plan_run(cfg, info, 0.7, COLUMNS, said.append)


def test_stream_commits_only_the_units_left(ray_local, tiny_model, tmp_path):
    src, out = tmp_path / "in", str(tmp_path / "out")
    src.mkdir()
    write_parquet(str(src / "p.parquet"), make_batch(90, seed=3), row_group_size=30)
    cfg = ScoreConfig(input=str(src), output=out, model=tiny_model, rows_per_unit=30,
                      batch_size=16)
    units = plan_survey(str(src), 30).units
    todo = {unit_key(u): u for u in units[1:]}  # the first is committed already
    shown = []

    class Shown(Progress):
        def update(self, rows: int) -> None:
            shown.append(rows)

    info = modelcard.model_info(tiny_model)
    got = stream_units(cfg, tiny_model, info.preprocessing, todo, False, output_columns(
        info.member_names), 0.0, Shown(enabled=False))
    assert commit.committed_units(out) == set(todo) and got.scored == 60
    assert shown[-1] == 60 and shown == sorted(shown)
    assert got.resources.actors >= 1 and got.resources_report()["devices"] == {"cpu": 60}
    rows = pq.read_table(commit.part_url(out, unit_key(units[2]))).to_pydict()
    assert rows["row"] == list(range(60, 90)) and set(rows["shard"]) == {units[2].url}
    assert stream_units(cfg, tiny_model, info.preprocessing, {}, False, [], 0.0,
                        Progress(enabled=False)) == Streamed()


def _plan(src, out, rows_per_unit: int = 40) -> RunPlan:
    """The plan of a run into ``out`` as :func:`plan_run` makes it, without Ray."""
    survey = plan_survey(str(src), rows_per_unit)
    rec = fingerprint.RunRecord(input=str(src), model_checksum="m", threshold=0.5, top=None,
                                preprocessing={}, rows_per_unit=rows_per_unit,
                                shards=survey.stamps)
    return RunPlan(survey, rec, {unit_key(u): u for u in survey.units},
                   rejected_units(survey), set(), {"list_s": 0.0})


def test_commit_counts_rejected_shards_and_refuses_nothing_readable(tmp_path):
    src, out = tmp_path / "in", str(tmp_path / "out")
    src.mkdir()
    _survey(src)
    plan = _plan(src, out)
    cfg = ScoreConfig(input=str(src), output=out)
    for i, (key, unit) in enumerate(plan.units.items()):  # as the stream leaves them
        commit.write_unit(out, key, _scored(i, list(range(unit.start, unit.stop))) | {
            "shard": np.full(unit.rows, unit.url, object)}, COLUMNS)
    counts = commit_run(cfg, plan, 0.5, COLUMNS)
    assert (counts["rows_read"], counts["rows_scored"], counts["rows_unreadable"]) == (203, 200, 3)
    quarantine = json.loads(pathlib.Path(out, commit.QUARANTINE).read_text())
    assert [s["shard"].endswith("noimage.parquet") for s in quarantine["shards"]] == [True]
    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    (only_bad / "x.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(NothingReadableError, match=r"no row could be read: 1 of 1 shards"):
        commit_run(ScoreConfig(input=str(only_bad), output=str(tmp_path / "o2")),
                   _plan(only_bad, str(tmp_path / "o2")), 0.5, COLUMNS)


def test_manifest_fields_in_their_order(tmp_path):
    src, out = tmp_path / "in", str(tmp_path / "out")
    src.mkdir()
    _survey(src)
    plan = _plan(src, out)
    cfg = ScoreConfig(input=str(src), output=out, model="m")
    info = modelcard.ModelInfo(modelcard.ModelCard(name="tiny"), ["m0"], "sum")
    res = Resources(actors=2, gpus_per_actor=0.0, cpus_per_actor=0.75, threads=1, read_tasks=2,
                    batch_size=64, row_bytes=12288, object_store_bytes=1)
    counts = {"rows_read": 203, "candidates": 3}
    plan.unreadable = unreadable_shards(plan)  # as commit_run leaves it
    streamed = Streamed(res, 200, 190, (1.0, 40), {"cpu": 190}, "ray", ["fp32"])
    m = build_manifest(cfg, info, plan, streamed, counts, "then", 0.0, None, "model card")
    assert list(m) == ["lensscan_version", "input", "output", "model", "ids_as_strings",
                       "counts", "unreadable_shards", "finished", "seconds",
                       "throughput_rows_per_s", "seconds_to_first_commit",
                       "steady_rows_per_s", "resources", "startup", "started", "fingerprint",
                       "threshold", "top", "prior", "p_lens"]
    assert m["model"] == {"url": "m", "name": "tiny", "checksum": "sum", "members": ["m0"],
                          "tta": False, "arithmetic": ["fp32"]}
    assert m["counts"] == {**counts, "shards_unreadable": 1,
                           "rows_committed_this_run": 200, "rows_scored_this_run": 190}
    assert list(m["resources"]) == ["engine", "actors", "gpus_per_actor", "cpus_per_actor",
                                    "threads", "read_tasks", "batch_size", "row_bytes",
                                    "object_store_bytes", "devices"]
    assert m["fingerprint"] == plan.record.fingerprint and m["threshold"] == 0.5
    assert m["p_lens"]["calibrated"] is False and m["seconds_to_first_commit"] == 1.0
    nothing = build_manifest(cfg, info, plan, Streamed(), counts, "then", 0.0, None, "")
    assert nothing["resources"] is None and nothing["steady_rows_per_s"] is None
