"""The two places a survey is scored: Ray Data actors, and this process (``--engine local``,
:mod:`lensscan.score.inprocess`). Their outputs are compared in ``test_score.py``; here: which
one a run picks, and how each fails."""

from __future__ import annotations

import shutil
import threading
from dataclasses import replace

import numpy as np
import pytest
from support import make_batch

from lensscan import modelcard
from lensscan.config import LOCAL_MAX_ROWS, ScoreConfig
from lensscan.errors import ModelError, OutputError
from lensscan.io.parquet import write_parquet
from lensscan.io.shards import plan_units
from lensscan.score import arithmetic, commit, inprocess
from lensscan.score.pipeline import score_survey


def _cfg(**kw) -> ScoreConfig:
    return ScoreConfig(input="in", output="out", progress=False, **kw)


def test_auto_is_local_only_for_a_small_survey_without_a_cluster():
    auto = _cfg()
    assert inprocess.use_local(auto, 2000, cluster=False)
    assert inprocess.use_local(auto, None, cluster=False)  # before the rows are counted
    assert inprocess.use_local(auto, LOCAL_MAX_ROWS, cluster=False)
    assert not inprocess.use_local(auto, LOCAL_MAX_ROWS + 1, cluster=False)
    assert not inprocess.use_local(auto, 2000, cluster=True)  # RAY_ADDRESS, or Ray started
    for option in inprocess.RAY_LAYOUT:  # a Ray layout asked for: a Ray run
        assert not inprocess.use_local(replace(auto, **{option: 1}), 2000, cluster=False)
    assert inprocess.use_local(_cfg(engine="local"), 10**9, cluster=True)
    assert not inprocess.use_local(_cfg(engine="ray"), 10, cluster=False)


def test_engine_options_checked():
    with pytest.raises(ValueError, match="engine must be one of auto, ray, local, not 'Local'"):
        inprocess.use_local(_cfg(engine="Local"), 10, cluster=False)
    with pytest.raises(ValueError, match=r"^--actors, --read-tasks: options of Ray's actors"):
        inprocess.use_local(_cfg(engine="local", actors=2, read_tasks=1), 10, cluster=False)
    cpu = _cfg(engine="local", gpus_per_actor=0.0)  # a CPU run: honoured by the local engine
    assert inprocess.use_local(cpu, 10, cluster=False)
    assert inprocess.local_resources(cpu, cuda=True).gpus_per_actor == 0.0
    assert inprocess.local_resources(cpu, cuda=True).batch_size == 512
    assert inprocess.local_resources(_cfg(), cuda=True).gpus_per_actor == 1.0
    with pytest.raises(ValueError, match="^--gpus-per-actor 0.5: with --engine local, 0"):
        inprocess.use_local(_cfg(engine="local", gpus_per_actor=0.5), 10, cluster=False)
    gpu = _cfg(engine="local", gpus_per_actor=1.0)
    assert inprocess.local_resources(gpu, cuda=True).gpus_per_actor == 1.0
    with pytest.raises(ValueError, match="^--gpus-per-actor 1: torch finds no CUDA GPU"):
        inprocess.local_resources(gpu, cuda=False)


def test_refused_options_leave_the_output_untouched(tiny_model, tmp_path):
    _units(tmp_path / "in", shards=1)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="^--actors: options of Ray's actors"):
        score_survey(ScoreConfig(input=str(tmp_path / "in"), output=str(out), model=tiny_model,
                                 progress=False, engine="local", actors=2))
    assert not out.exists()  # no lease taken, nothing written


def test_a_listing_big_enough_starts_ray_while_the_footers_are_read():
    from lensscan.io.storage import Stamp

    cutout64 = 3 * 64 * 64 * 8  # no row takes more than a float64 cutout
    stamps = {f"s{k}": Stamp(cutout64 * 1000, "mtime 0") for k in range(60)}
    assert inprocess.rows_at_least(stamps) == 60_000
    assert not inprocess.use_local(_cfg(), inprocess.rows_at_least(stamps), cluster=False)
    assert inprocess.use_local(_cfg(), inprocess.rows_at_least({"s": stamps["s0"]}),
                               cluster=False)


_EARLY_START = """
import sys, ray
from lensscan.config import ScoreConfig
from lensscan.score import inprocess, plan
inprocess.LOCAL_MAX_ROWS = 50  # the shards' 240 rows take the bytes of more than 50
cfg = ScoreConfig(input=sys.argv[1], output=sys.argv[2], progress=False)
survey, startup = plan.plan_while_ray_starts(cfg, cluster=False)
print(sum(u.rows for u in survey.units), ray.is_initialized(), startup["ray_s"] < 1)
"""


def test_a_resumed_run_does_not_start_ray_on_the_shards_bytes(tmp_path):
    """Ray starts early on the listing's bytes only on a first try: a resumed run may have few
    rows left, which the footers count before the engine is chosen. (A fresh process: this
    one may have Ray up already.)"""
    import subprocess
    import sys

    _units(tmp_path / "in")
    out = tmp_path / "out"
    out.mkdir()
    (out / "_run.json").write_text("{}")  # an earlier try's record
    r = subprocess.run([sys.executable, "-c", _EARLY_START, str(tmp_path / "in"), str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["240", "False", "True"]


def _units(root, shards=2, rows=120):
    for k in range(shards):
        write_parquet(str(root / f"p{k}.parquet"), make_batch(rows, seed=k, start_id=k * 1000),
                      row_group_size=40)
    return [u for k in range(shards) for u in plan_units(str(root / f"p{k}.parquet"), 40)]


def _readers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "lensscan-reader"]


def test_local_engine_reader_stops_with_the_run(tiny_model, tmp_path):
    """A consumer that stops early stops the reader too (no thread left behind); a shard that
    vanishes under the run has its rows quarantined, each with the reason."""
    src = tmp_path / "in"
    units = _units(src)
    cfg = _cfg(batch_size=16)
    res = inprocess.local_resources(cfg, cuda=False)
    pre = modelcard.model_info(tiny_model).preprocessing
    batches = inprocess.score_units(cfg, tiny_model, pre, units, False, res)
    first = next(batches)
    assert len(first["score"]) == 16 and np.isfinite(first["score"]).all()
    batches.close()  # the driver stops (an error elsewhere): the reader stops with it
    assert not _readers()
    (src / "p1.parquet").unlink()  # a shard gone since planning: its rows are quarantined
    got = list(inprocess.score_units(cfg, tiny_model, pre, units, False, res))
    status = np.concatenate([b["status"] for b in got])
    unit = np.concatenate([b["unit"] for b in got])
    assert len(status) == 240 and (status[unit < 3] == "ok").all()
    assert all(s.startswith("unreadable") for s in status[unit >= 3]), set(status[unit >= 3])
    assert not _readers()


def test_units_on_object_storage_are_read_by_two_readers_each_once(tiny_model, tmp_path,
                                                                    s3_bucket):
    """Two reader threads share the units of an S3 survey: every row comes back exactly once,
    with its unit's rows, and both readers stop when the consumer does."""
    from lensscan.io import storage

    fs, _ = storage.filesystem(s3_bucket)
    local = _units(tmp_path / "in", shards=3)
    for k in range(3):
        fs.put(str(tmp_path / "in" / f"p{k}.parquet"), f"{s3_bucket[5:]}/in/p{k}.parquet")
    units = [u for k in range(3) for u in plan_units(f"{s3_bucket}/in/p{k}.parquet", 40)]
    assert len(units) == len(local) == 9 and inprocess.reader_count(units) == 2
    assert inprocess.reader_count(local) == 1
    cfg = _cfg(batch_size=16)
    res = inprocess.local_resources(cfg, cuda=False)
    pre = modelcard.model_info(tiny_model).preprocessing
    got = list(inprocess.score_units(cfg, tiny_model, pre, units, False, res))
    ids = np.concatenate([b["object_id"] for b in got])
    unit = np.concatenate([b["unit"] for b in got])
    assert sorted(ids.tolist()) == sorted(k * 1000 + i for k in range(3) for i in range(120))
    for i, u in enumerate(units):  # each unit's rows are its own
        assert sorted(ids[unit == i] % 1000) == list(range(u.start, u.stop))
    batches = inprocess.score_units(cfg, tiny_model, pre, units, False, res)
    next(batches)
    assert len(_readers()) == 2
    batches.close()
    assert not _readers()


@pytest.mark.parametrize("engine", ["local", "ray"])
def test_modified_weights_fail_the_run_in_one_line(request, tiny_model, tmp_path, engine):
    """Weights that are not the card's: the run stops with the ModelError of the process that
    loads them (the actors', or this one's), one line, and writes no manifest."""
    if engine == "ray":
        request.getfixturevalue("ray_local")
    model = tmp_path / "m"
    shutil.copytree(tiny_model, model)
    (model / "m1" / "model.safetensors").write_bytes(b"not the weights")
    _units(tmp_path / "in", shards=1)
    out = tmp_path / "out"
    with pytest.raises(ModelError, match=r"m1/model\.safetensors: checksum mismatch") as err:
        score_survey(ScoreConfig(input=str(tmp_path / "in"), output=str(out),
                                 model=str(model), progress=False, engine=engine))
    assert "\n" not in str(err.value)
    assert not (out / "_manifest.json").exists()


def _set_arithmetic(part, value: str) -> None:
    """Rewrite a committed part as if its scores had been computed in ``value``."""
    import pyarrow.parquet as pq

    table = pq.read_table(part)
    pq.write_table(table.replace_schema_metadata({commit.ARITHMETIC_KEY: value}), part)


def test_a_run_resumed_in_another_arithmetic_is_refused(tiny_model, tmp_path):
    """``--precision auto`` is fp16 on a GPU and fp32 on a CPU: an output whose first run
    committed units on a GPU is not finished on a CPU with scores of the other arithmetic (one
    output, one arithmetic, named in every part and in the manifest)."""
    import json

    _units(tmp_path / "in")
    out = tmp_path / "out"
    cfg = ScoreConfig(input=str(tmp_path / "in"), output=str(out), model=tiny_model,
                      engine="local", rows_per_unit=40, progress=False)
    m = score_survey(cfg)
    assert m["model"]["arithmetic"] == ["fp32"] and m["counts"]["rows_read"] == 240
    parts = sorted((out / "scores").glob("part-*.parquet"))
    assert {arithmetic.part_arithmetic(str(out), p.name[5:-8]) for p in parts} == {"fp32"}
    # an interrupted run of the same survey on a GPU: two units in, one not yet
    for p in parts[:2]:
        _set_arithmetic(p, "fp16")
    (out / "_manifest.json").unlink()
    parts[2].unlink()
    with pytest.raises(OutputError, match="an earlier run of this scoring committed were "
                                          r"computed in fp16; this run computes in fp32 \("):
        score_survey(cfg)
    assert commit.committed_units(str(out)) == {p.name[5:-8] for p in parts} - {parts[2].name[5:-8]}
    m = score_survey(replace(cfg, overwrite=True))  # every row again, in one arithmetic
    assert m["model"]["arithmetic"] == ["fp32"] and m["counts"]["rows_scored_this_run"] == 240
    # the same arithmetic resumes: only the missing unit is scored
    parts[0].unlink()
    (out / "_manifest.json").unlink()
    m = score_survey(cfg)
    assert m["counts"]["rows_scored_this_run"] == 40 and m["model"]["arithmetic"] == ["fp32"]
    assert json.loads((out / "_manifest.json").read_text())["model"]["arithmetic"] == ["fp32"]
