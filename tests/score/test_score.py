"""The scoring pipeline for real: local Ray, Parquet/FITS/npy inputs, S3, quarantine, reruns."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import replace

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from support import ctrl_c, make_batch, s3_calls

from lensscan import modelcard
from lensscan.cli import main
from lensscan.config import ScoreConfig
from lensscan.data.preprocess import Preprocessing, preprocess
from lensscan.io import fits as fio
from lensscan.io.parquet import write_parquet
from lensscan.io.shards import Unit
from lensscan.io.storage import filesystem
from lensscan.score.pipeline import score_survey
from lensscan.score.resources import MIN_STORE_MB, Resources, resources, store_budget
from lensscan.score.stream import build_dataset

CONTRACT = ["object_id", "ra", "dec", "score", "score_m0", "score_m1", "shard", "row", "status"]


def _read_scores(out: str):
    import pyarrow.dataset as pads

    fs, path = filesystem(out + "/scores")
    return pads.dataset(path, format="parquet", filesystem=fs).to_table().to_pandas()


def _survey(root, n_shards=3, rows=150, bad=True):
    batches = []
    for k in range(n_shards):
        b = make_batch(rows, seed=100 + k, start_id=k * 10_000)
        if bad and k == 1:
            b["image"][3, 1, 10, 10] = np.nan
            b["image"][7] = 0.0
        batches.append(b)
        if k == 2:
            fio.write_fits(f"{root}/s{k}.fits", b)
        else:
            write_parquet(f"{root}/s{k}.parquet", b, row_group_size=64)
    return batches


def _direct_scores(model_url, batch):
    loaded = modelcard.load_model(model_url)
    x = torch.from_numpy(preprocess(batch["image"],
                                    Preprocessing.from_dict(loaded.preprocessing)))
    with torch.inference_mode():
        score, members = loaded.module(x)
    return score.numpy(), members.numpy()


@pytest.mark.parametrize("engine", ["ray", "local"])
def test_local_pipeline_contract_and_direct_scores(ray_local, tiny_model, tmp_path, engine):
    """Both engines (Ray Data actors; this process) give the contract's output, every row once,
    the same quarantine and the scores of the model called directly."""
    src, out = tmp_path / "in", str(tmp_path / "out")
    src.mkdir()
    batches = _survey(src)
    m = score_survey(ScoreConfig(input=str(src), output=out, model=tiny_model, rows_per_unit=100,
                                 batch_size=64, progress=False, engine=engine))
    df = _read_scores(out)
    assert list(df.columns[: len(CONTRACT)]) == CONTRACT
    assert len(df) == 450 and not df.duplicated(["shard", "row"]).any()
    assert set(df["object_id"]) == {int(i) for b in batches for i in b["object_id"]}
    c = m["counts"]
    assert (c["rows_read"], c["rows_scored"], c["rows_quarantined"]) == (450, 448, 2)
    assert c["rows_scored"] + c["rows_quarantined"] == c["rows_read"]
    # this run's own counts too: quarantined rows are committed, not scored
    assert (c["rows_committed_this_run"], c["rows_scored_this_run"]) == (450, 448)
    bad = df[df["status"] != "ok"].sort_values("row")
    assert list(bad["row"]) == [3, 7] and bad["score"].isna().all()
    assert bad["status"].iloc[0].startswith("non_finite_pixels")
    assert bad["status"].iloc[1].startswith("all_zero")
    # every score equals the model called directly on the same cutouts
    for b in batches:
        got = df.set_index("object_id").loc[b["object_id"]]
        ok = (got["status"] == "ok").to_numpy()
        s, mem = _direct_scores(tiny_model, {"image": b["image"][ok]})
        np.testing.assert_allclose(got["score"].to_numpy()[ok], s, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(got["score_m1"].to_numpy()[ok], mem[:, 1], rtol=1e-4,
                                   atol=1e-6)
    # provenance: shard + row point back at the input row
    row = df[df["object_id"] == 10_005].iloc[0]
    assert row["shard"].endswith("s1.parquet") and row["row"] == 5
    cand = pq.read_table(os.path.join(out, "candidates.parquet")).to_pandas()
    assert (cand["score"] >= 0.5).all() and cand["rank"].tolist() == list(range(1, len(cand) + 1))
    assert cand["score"].is_monotonic_decreasing
    assert len(cand) == int((df["score"] >= 0.5).sum())
    manifest = json.loads(pathlib.Path(os.path.join(out, "_manifest.json")).read_text())
    assert manifest["counts"]["candidates"] == len(cand) and manifest["threshold"] == 0.5
    assert manifest["model"]["checksum"] and manifest["lensscan_version"]
    assert 0 < manifest["seconds_to_first_commit"] <= manifest["seconds"]
    if engine == "ray":
        # 2 CPUs: two single-threaded CPU actors; reads capped at what the actors leave
        # and the blocks in flight get a bounded share of the object store (tiny blocks: the
        # floor)
        assert manifest["resources"] == {
            "engine": "ray", "actors": 2, "gpus_per_actor": 0.0, "cpus_per_actor": 0.75,
            "threads": 1, "read_tasks": 2, "batch_size": 64, "row_bytes": 3 * 64 * 64 * 4,
            "object_store_bytes": MIN_STORE_MB * 2**20, "devices": {"cpu": 448}}
    else:  # one model with every core's threads, one reader thread
        cpus = os.cpu_count()
        assert manifest["resources"] == {
            "engine": "local", "actors": 1, "gpus_per_actor": 0.0, "cpus_per_actor": cpus,
            "threads": cpus, "read_tasks": 1, "batch_size": 64, "devices": {"cpu": 448}}
    assert set(manifest["startup"]) >= {"list_s", "ray_s", "plan_s"}


def test_tta_scores_are_the_mean_over_views_and_another_run(ray_local, tiny_model, tmp_path):
    """--tta: every score is the ensemble's mean member logit over the 8 dihedral views, the
    manifest says so, and the same folder without --tta is another run (refused)."""
    from lensscan.errors import OutputError

    src, out = tmp_path / "in", str(tmp_path / "out")
    src.mkdir()
    (batch,) = _survey(src, n_shards=1, rows=40, bad=False)
    m = score_survey(ScoreConfig(input=str(src), output=out, model=tiny_model, batch_size=16,
                                 tta=True, progress=False))
    assert m["model"]["tta"] is True
    loaded = modelcard.load_model(tiny_model)
    loaded.module.tta = True
    x = torch.from_numpy(preprocess(batch["image"], Preprocessing.from_dict(
        loaded.preprocessing)))
    with torch.inference_mode():
        want = loaded.module(x)[0].numpy()
        loaded.module.tta = False
        plain = loaded.module(x)[0].numpy()
    got = _read_scores(out).set_index("object_id").loc[batch["object_id"], "score"]
    np.testing.assert_allclose(got.to_numpy(), want, rtol=1e-4, atol=1e-6)
    assert not np.allclose(want, plain, rtol=1e-4)  # the views do change an untrained model
    with pytest.raises(OutputError, match="tta"):
        score_survey(ScoreConfig(input=str(src), output=out, model=tiny_model, batch_size=16,
                                 progress=False))


def test_object_store_budget_sized_from_blocks_and_applied(ray_local):
    res = Resources(actors=2, gpus_per_actor=0.0, cpus_per_actor=0.75, threads=1, read_tasks=2,
                    batch_size=512)
    row = 3 * 64 * 64 * 4  # a decoded float32 cutout: the read tasks only decode
    block = 2048 * row
    cfg = ScoreConfig(input="x", output="y")
    # one block per read task, two per actor, two spare
    assert store_budget(cfg, res, 2048, row) == 8 * block
    assert store_budget(cfg, res, 16, row) == MIN_STORE_MB * 2**20
    assert store_budget(ScoreConfig(input="x", output="y", object_store_mb=300), res, 2048,
                        row) == 300 * 2**20
    # a GPU actor holds the batches queued at it (four of 8192 float16 cutouts here)
    gpu = Resources(actors=1, gpus_per_actor=1.0, cpus_per_actor=1.0, threads=1, read_tasks=15,
                    batch_size=8192)
    assert store_budget(cfg, gpu, 2048, row // 2) == (17 * 2048 + 4 * 8192) * (row // 2)
    units = [Unit(url="a.parquet", fmt="parquet", start=0, stop=2048)]
    res = replace(res, row_bytes=row, object_store_bytes=123 * 2**20)
    ds = build_dataset(units, cfg, Preprocessing().to_dict(), "unused", res, blocks=1)
    assert ds.context.execution_options.resource_limits.object_store_memory == 123 * 2**20
    assert ds.context.target_max_block_size == 512 * row  # a read block is one actor batch


def test_small_survey_gets_no_more_actors_than_read_tasks(ray_local):
    """Actors and reads beyond what the run's read tasks can feed would sit idle (and Ray Data
    warns about each); on CPU the one actor left takes the threads."""
    cfg = ScoreConfig(input="x", output="y")
    assert resources(cfg).actors == 2
    assert resources(cfg, blocks=1) == Resources(actors=1, gpus_per_actor=0.0,
                                                 cpus_per_actor=1.5, threads=2, read_tasks=1,
                                                 batch_size=512)
    assert resources(cfg, blocks=3).actors == 2


def test_every_read_task_feeds_the_actors(ray_local, tiny_model, tmp_path):
    """Six units, four per read task: two tasks (blocks of three units each), each feeding an
    actor. A read batch larger than a block made Ray Data merge the blocks into one task, one
    actor input, and an idle actor."""
    src, out = tmp_path / "in", str(tmp_path / "out")
    src.mkdir()
    for k in range(6):
        write_parquet(str(src / f"p{k}.parquet"), make_batch(100, seed=k, start_id=k * 1000))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = score_survey(ScoreConfig(input=str(src), output=out, model=tiny_model,
                                     rows_per_unit=400, batch_size=64, progress=False))
    assert (m["resources"]["read_tasks"], m["resources"]["actors"]) == (2, 2)
    assert m["counts"]["rows_scored"] == 600
    assert not [w for w in caught if "only received" in str(w.message)], \
        [str(w.message) for w in caught]


def test_top_n_and_corrupt_shard_quarantined(ray_local, tiny_model, tmp_path):
    src, out = tmp_path / "in", str(tmp_path / "out")
    src.mkdir()
    _survey(src, n_shards=2, bad=False)
    (src / "broken.parquet").write_bytes(b"PAR1 this is not parquet PAR1")
    m = score_survey(ScoreConfig(input=str(src), output=out, model=tiny_model, top=10,
                                 progress=False))
    assert m["counts"]["shards_unreadable"] == 1
    assert m["unreadable_shards"][0]["shard"].endswith("broken.parquet")
    assert "not a readable Parquet file" in m["unreadable_shards"][0]["reason"]
    cand = pq.read_table(os.path.join(out, "candidates.parquet"))
    assert cand.num_rows == 10 and m["counts"]["rows_read"] == 300


def test_s3_in_and_out(ray_local, tiny_model, s3_bucket):
    batches = [make_batch(80, seed=5, start_id=0), make_batch(60, seed=6, start_id=500)]
    for k, b in enumerate(batches):
        write_parquet(f"{s3_bucket}/cutouts/p{k}.parquet", b, row_group_size=32)
    out = f"{s3_bucket}/runs/r1"
    with s3_calls(out) as calls:
        m = score_survey(ScoreConfig(input=f"{s3_bucket}/cutouts/", output=out,
                                     model=tiny_model, rows_per_unit=32, progress=False))
    assert m["counts"]["rows_scored"] == 140
    # the commit stage's queries read the 5 parts without a HEAD request per part and query
    # (DuckDB asks for each file's size and version every time: 294 HEADs in all before the
    # scores folder was listed once for it, 14 after; the rest are the run's own files)
    assert calls["HeadObject"] < 30, calls
    df = _read_scores(out)
    assert len(df) == 140 and set(df["object_id"]) == set(range(80)) | set(range(500, 560))
    s, _ = _direct_scores(tiny_model, batches[1])
    got = df.set_index("object_id").loc[batches[1]["object_id"], "score"].to_numpy()
    np.testing.assert_allclose(got, s, rtol=1e-4, atol=1e-6)
    fs, path = filesystem(out)
    assert fs.exists(path + "/_manifest.json") and fs.exists(path + "/candidates.parquet")


def test_single_cutout_files_npy_and_fits(ray_local, tiny_model, tmp_path):
    b = make_batch(6, seed=9)
    (tmp_path / "cut").mkdir()
    for i in range(3):
        np.save(tmp_path / "cut" / f"obj{i}.npy", b["image"][i])
        fio.write_fits_cube(str(tmp_path / "cut" / f"c{i}.fits"), b["image"][3 + i],
                            object_id=f"C{i}")
    m = score_survey(ScoreConfig(input=str(tmp_path / "cut"), output=str(tmp_path / "out"),
                                 model=tiny_model, progress=False))
    df = _read_scores(str(tmp_path / "out"))
    assert m["counts"]["rows_scored"] == 6
    assert set(df["object_id"]) == {"cut/obj0", "cut/obj1", "cut/obj2", "C0", "C1", "C2"}


def test_rerun_skips_committed_units(ray_local, tiny_model, tmp_path):
    src, out = tmp_path / "in", str(tmp_path / "out")
    src.mkdir()
    _survey(src, bad=False)
    cfg = ScoreConfig(input=str(src), output=out, model=tiny_model, rows_per_unit=64,
                      progress=False)
    first = score_survey(cfg)
    parts = sorted(os.listdir(os.path.join(out, "scores")))
    again = score_survey(cfg)
    assert again["counts"]["rows_scored_this_run"] == 0
    os.remove(os.path.join(out, "scores", parts[1]))
    third = score_survey(cfg)
    assert 0 < third["counts"]["rows_scored_this_run"] <= 64
    assert third["counts"]["rows_read"] == first["counts"]["rows_read"] == 450
    assert len(_read_scores(out)) == 450


def _parts(out) -> int:
    """Committed units: a killed write leaves only a hidden temporary file."""
    return len([p for p in os.listdir(os.path.join(out, "scores"))
                if p.startswith("part-") and p.endswith(".parquet")])


def _wait_for_parts(out, n, proc, timeout=240):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if os.path.isdir(os.path.join(out, "scores")) and _parts(out) >= n:
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.2)
    return False


@pytest.mark.slow
def test_second_writer_refused_killed_driver_rerun_gives_every_row_once(tiny_model, tmp_path,
                                                                          capsys):
    """Two runs into one output at once: the second is refused (the first holds the lease);
    the first is killed, and a rerun takes its dead lease over and finishes the work."""
    src, out = tmp_path / "in", str(tmp_path / "out")
    src.mkdir()
    for k in range(6):
        write_parquet(str(src / f"p{k}.parquet"), make_batch(400, seed=k, start_id=k * 1000),
                      row_group_size=50)
    cmd = [sys.executable, "-m", "lensscan.cli", "score", str(src), out, "--model", tiny_model,
           "--batch-size", "25", "--rows-per-unit", "50"]
    env = dict(os.environ)
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        assert _wait_for_parts(out, 3, proc), "the first run committed nothing"
        assert main(cmd[3:]) == 2  # a second writer, while the first runs
        line = capsys.readouterr().err.strip().splitlines()[-1]
        assert "is being written by another run" in line and f"pid {proc.pid}" in line
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not os.path.exists(os.path.join(out, "_manifest.json"))
    committed = _parts(out)
    assert committed < 48, "the run finished before it was killed"
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    df = _read_scores(out)
    assert len(df) == 2400 and not df.duplicated(["shard", "row"]).any()
    assert not df.duplicated("object_id").any()
    manifest = json.loads(pathlib.Path(os.path.join(out, "_manifest.json")).read_text())
    assert manifest["counts"]["rows_read"] == 2400
    assert manifest["counts"]["rows_scored_this_run"] == 2400 - 50 * committed


@pytest.mark.slow
def test_ctrl_c_stops_scoring_in_one_line_and_a_rerun_resumes(tiny_model, tmp_path):
    src, out = tmp_path / "in", str(tmp_path / "out")
    src.mkdir()
    # enough units that the tiny model is still scoring when the signal comes: this run stays
    # in the process (local engine), which commits its units in order, and the signal follows
    # the first commit within a poll (0.2 s); a unit's commit, not its rows, takes the time, so
    # the units are small. (Earlier runs that finished before the signal had been started with
    # SIGINT ignored; `ctrl_c` now restores it.)
    # 360 units of 10 rows, two model batches a unit (one may be half done at the signal)
    files, rows, unit = 12, 300, 10
    for k in range(files):
        write_parquet(str(src / f"p{k}.parquet"), make_batch(rows, seed=k, start_id=k * 10000),
                      row_group_size=unit)
    cmd = [sys.executable, "-m", "lensscan.cli", "score", str(src), out, "--model", tiny_model,
           "--batch-size", "5", "--rows-per-unit", str(unit)]
    status, err = ctrl_c(cmd, lambda proc: _wait_for_parts(out, 1, proc))
    assert status == 130, err[-2000:]
    # that line, whatever warnings a loaded machine prints after it (one line each)
    assert (f"lensscan score: interrupted: {out}: the units committed so far are kept; rerun "
            "the same command to resume") in err.strip().splitlines(), err[-2000:]
    assert "Traceback" not in err and not os.path.exists(os.path.join(out, "_manifest.json"))
    committed = _parts(out)
    assert 1 <= committed < files * rows // unit, "the run finished before it was interrupted"
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    df = _read_scores(out)
    assert len(df) == files * rows and not df.duplicated(["shard", "row"]).any()
    manifest = json.loads(pathlib.Path(os.path.join(out, "_manifest.json")).read_text())
    assert manifest["counts"]["rows_scored_this_run"] == files * rows - unit * committed
    assert manifest["resources"]["engine"] == "local"  # as the comment above assumes


@pytest.mark.slow
def test_killed_actor_is_replaced_and_rows_stay_once(ray_local, tiny_model, tmp_path):
    from ray._private import state

    src, out = tmp_path / "in", str(tmp_path / "out")
    src.mkdir()
    for k in range(4):
        write_parquet(str(src / f"p{k}.parquet"), make_batch(300, seed=k, start_id=k * 1000),
                      row_group_size=50)
    killed = []

    def killer():
        t0 = time.time()
        while time.time() - t0 < 120 and not killed:
            for a in state.actors().values():
                if "ScoringActor" in a["ActorClassName"] and a["State"] == "ALIVE" and \
                        a.get("Pid") and os.path.isdir(os.path.join(out, "scores")):
                    os.kill(a["Pid"], signal.SIGKILL)
                    killed.append(a["Pid"])
                    return
            time.sleep(0.2)

    t = threading.Thread(target=killer)
    t.start()
    m = score_survey(ScoreConfig(input=str(src), output=out, model=tiny_model, rows_per_unit=50,
                                 batch_size=25, progress=False))
    t.join()
    assert killed, "no scoring actor was found to kill"
    df = _read_scores(out)
    assert len(df) == 1200 and not df.duplicated(["shard", "row"]).any()
    assert m["counts"]["rows_scored"] == 1200


def test_gpu_reads_sized_from_measured_rates():
    """A GPU run gets as many concurrent reads as the GPUs can take at the measured decode rate
    of a read task, at most one per CPU the actors leave, and GPU-sized batches."""
    from lensscan.score.resources import GPU_ACTOR_RATE, GPU_BATCH

    cfg = ScoreConfig(input="x", output="y")
    res = resources(cfg, read_rate=GPU_ACTOR_RATE / 4, cpus=16, gpus=1)
    assert (res.actors, res.gpus_per_actor, res.read_tasks) == (1, 1.0, 4)
    assert res.batch_size == GPU_BATCH
    assert resources(cfg, read_rate=GPU_ACTOR_RATE / 40, cpus=16, gpus=1).read_tasks == 15
    assert resources(cfg, read_rate=GPU_ACTOR_RATE / 40, cpus=16, gpus=2).read_tasks == 14
    assert resources(cfg, read_rate=1e9, cpus=16, gpus=2).read_tasks == 1
    res = resources(ScoreConfig(input="x", output="y", read_tasks=3, batch_size=100),
                    read_rate=1.0, cpus=16, gpus=1)
    assert (res.read_tasks, res.batch_size) == (3, 100)
    # autoscaling from 0 (the README's aws-gpu run): the head alone, no GPU yet; one read task
    # fed all 16 GPU actors for the whole run
    coming = ScoreConfig(input="x", output="y", gpus_per_actor=1.0, actors=16)
    assert resources(coming, cpus=8, gpus=0).read_tasks == 32
    assert resources(coming, cpus=8, gpus=16).read_tasks == 1  # there, and the CPUs all taken


#: A calibration written into a copy of the tiny model (a Platt map fitted at 1 lens in 4).
CALIBRATION = {"method": "platt", "a": 1.3, "b": -0.2, "val_prevalence": 0.25, "prior": 1e-3}
ADDED = ["logit", "member_spread", "p_lens"]


@pytest.fixture(scope="module")
def calibrated_model(tiny_model, tmp_path_factory) -> str:
    import shutil

    root = tmp_path_factory.mktemp("calibrated") / "model"
    shutil.copytree(tiny_model, root)
    modelcard.update_card(str(root), calibration=CALIBRATION)
    return str(root)


def _p_lens(logit: np.ndarray, prior: float) -> np.ndarray:
    """The contract's p_lens, written out: Platt map, then the odds moved to ``prior``."""
    c = CALIBRATION
    odds = np.exp(c["a"] * logit + c["b"]) * (prior / (1 - prior)) / (
        c["val_prevalence"] / (1 - c["val_prevalence"]))
    return odds / (1 + odds)


def test_logit_spread_p_lens_and_the_expected_lenses_of_the_top_n(ray_local, calibrated_model,
                                                                  tmp_path, capsys):
    """Every scored row gets its logit, the members' spread and p_lens at the card's prior; the
    manifest sums p_lens over the top N, the candidates and every row; another --prior into the
    same output is another run (refused, then --overwrite)."""
    from lensscan.errors import OutputError

    src, out = tmp_path / "in", str(tmp_path / "out")
    src.mkdir()
    _survey(src, n_shards=2, rows=70)  # 140 rows, two of them quarantined
    m = score_survey(ScoreConfig(input=str(src), output=out, model=calibrated_model,
                                 batch_size=32, progress=False))
    df = _read_scores(out)
    assert list(df.columns) == CONTRACT + ADDED
    ok = (df["status"] == "ok").to_numpy()
    assert ok.sum() == 138 and df.loc[~ok, ADDED].isna().all().all()
    d = df[ok]
    assert d[ADDED].dtypes.tolist() == [np.float32] * 3
    z = d["logit"].to_numpy(np.float64)
    np.testing.assert_allclose(1 / (1 + np.exp(-z)), d["score"], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(d["member_spread"], d[["score_m0", "score_m1"]].std(axis=1, ddof=0),
                               atol=1e-6)
    np.testing.assert_allclose(d["p_lens"], _p_lens(z, 1e-3), rtol=1e-5, atol=1e-12)
    p = m["p_lens"]
    assert (m["prior"], p["calibrated"], p["prior"], p["prior_from"]) == (
        1e-3, True, 1e-3, "model card")
    assert p["calibration"]["a"] == 1.3
    ranked = d.sort_values(["score", "object_id"], ascending=[False, True])["p_lens"]
    ranked = ranked.to_numpy(np.float64)
    assert [e["n"] for e in p["top_n"]] == [10, 100]  # 1000 > the rows scored
    for e in p["top_n"]:
        assert e["expected_lenses"] == pytest.approx(ranked[:e["n"]].sum(), abs=1e-4)
        assert e["expected_purity"] == pytest.approx(ranked[:e["n"]].sum() / e["n"], abs=1e-6)
    cand = pq.read_table(os.path.join(out, "candidates.parquet")).to_pandas()
    assert list(cand.columns[-3:]) == ADDED and p["candidates"]["n"] == len(cand)
    assert p["candidates"]["expected_lenses"] == pytest.approx(cand["p_lens"].sum(), abs=1e-4)
    assert p["scored"]["n"] == 138
    assert p["scored"]["expected_lenses"] == pytest.approx(ranked.sum(), abs=1e-4)
    with pytest.raises(OutputError, match="prior 0.001 -> 0.01"):
        score_survey(ScoreConfig(input=str(src), output=out, model=calibrated_model,
                                 prior=0.01, progress=False))
    assert main(["score", str(src), out, "--model", calibrated_model, "--prior", "0.01",
                 "--batch-size", "32", "--overwrite"]) == 0
    assert "p_lens at prior 0.01: " in capsys.readouterr().out
    again = _read_scores(out).set_index("object_id").loc[d["object_id"]]
    np.testing.assert_allclose(again["p_lens"], _p_lens(z, 0.01), rtol=1e-5, atol=1e-12)
    manifest = json.loads(pathlib.Path(out, "_manifest.json").read_text())
    assert manifest["p_lens"]["prior_from"] == "--prior" and manifest["prior"] == 0.01


def test_model_without_calibration_gives_null_p_lens_and_refuses_prior(ray_local, tiny_model,
                                                                        tmp_path, capsys):
    src, out = tmp_path / "in", str(tmp_path / "out")
    src.mkdir()
    _survey(src, n_shards=1, rows=40, bad=False)
    assert main(["score", str(src), out, "--model", tiny_model, "--prior", "1e-4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no calibration" in err[0] and "--prior 0.0001" in err[0]
    assert not os.path.exists(out)  # refused before anything was written
    m = score_survey(ScoreConfig(input=str(src), output=out, model=tiny_model, progress=False))
    df = _read_scores(out)
    assert df["p_lens"].isna().all() and df["logit"].notna().all()
    assert df["member_spread"].notna().all()
    assert m["prior"] is None and m["p_lens"]["calibrated"] is False
    assert "no calibration" in m["p_lens"]["reason"]


def test_an_output_without_the_added_columns_is_another_run(ray_local, tiny_model, tmp_path):
    """A folder scored before logit/member_spread/p_lens existed (its run record names no
    columns) is not resumed into a mix of parts with and without them."""
    from lensscan.errors import OutputError
    from lensscan.score import fingerprint

    src, out = tmp_path / "in", str(tmp_path / "out")
    src.mkdir()
    _survey(src, n_shards=1, rows=20, bad=False)
    cfg = ScoreConfig(input=str(src), output=out, model=tiny_model, progress=False)
    score_survey(cfg)
    old = json.loads(pathlib.Path(out, fingerprint.RUN).read_text())
    del old["columns"], old["prior"]
    pathlib.Path(out, fingerprint.RUN).write_text(json.dumps(old))
    with pytest.raises(OutputError, match=r"columns: none recorded \(an older lensscan's "
                                          r"output\) -> .*p_lens"):
        score_survey(cfg)
