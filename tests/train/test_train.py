"""`lensscan train` with 2 DDP workers (gloo, CPU), checkpoints on the S3 test server, resume."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from support import ctrl_c, driver_lines, make_batch

from lensscan.io.parquet import write_parquet
from lensscan.io.storage import filesystem


@pytest.fixture
def train_data(tmp_path):
    for k in range(2):
        write_parquet(str(tmp_path / "train" / f"p{k}.parquet"),
                      make_batch(96, seed=20 + k, start_id=k * 1000))
    write_parquet(str(tmp_path / "val" / "v.parquet"), make_batch(64, seed=30, start_id=9000))
    return tmp_path


def _checkpoints(url):
    fs, path = filesystem(url)
    fs.invalidate_cache()  # s3fs caches listings
    return fs.glob(path + "/*/checkpoint_*")


@pytest.mark.slow
def test_train_two_workers_s3_checkpoints_and_resume(train_data, s3_bucket):
    out = str(train_data / "model")
    ckpt = f"{s3_bucket}/checkpoints"
    cmd = [sys.executable, "-m", "lensscan.cli", "train", str(train_data / "train"),
           "--val", str(train_data / "val"), "--out", out, "--arch", "resnet", "--workers", "2",
           "--epochs", "5", "--steps-per-epoch", "4", "--batch-size", "16", "--storage", ckpt,
           "--patience", "100"]
    env = dict(os.environ)
    first = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 400
        # wait for a second checkpoint: by then the first is fully uploaded and recorded by
        # Ray Train (a kill as the first folder appears can leave nothing to resume from)
        while time.time() < deadline and len(_checkpoints(ckpt)) < 2:
            assert first.poll() is None, "training ended before it could be interrupted"
            time.sleep(0.5)
        assert _checkpoints(ckpt), "no checkpoint reached the S3 server"
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    assert not os.path.exists(os.path.join(out, "card.json"))
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stderr[-3000:]
    log = second.stdout + second.stderr
    # progress lines print once (rank 0 only, and not twice through Ray Train's patched print)
    assert log.count("resuming resnet_s0 after epoch") == 1
    assert log.count("resnet_s0 epoch 5/5 ") == 1
    # local Ray runs without the dashboard: no State API warnings every second
    assert "Failed to query Ray Train Controller" not in log
    card = json.loads(pathlib.Path(os.path.join(out, "card.json")).read_text())
    history = card["training"]["history"]
    assert [h["epoch"] for h in history] == list(range(1, 6))
    assert card["training"]["config"]["workers"] == 2
    assert "roc_auc" in card["metrics"]["validation"] and 0 < card["threshold"] < 1
    from lensscan.modelcard import load_model

    assert load_model(out).member_names == ["resnet_s0"]


@pytest.mark.slow
def test_ctrl_c_stops_training_in_one_line_and_keeps_its_checkpoints(train_data):
    ckpt = str(train_data / "checkpoints")
    cmd = [sys.executable, "-m", "lensscan.cli", "train", str(train_data / "train"),
           "--val", str(train_data / "val"), "--out", str(train_data / "model"), "--arch",
           "resnet", "--epochs", "50", "--steps-per-epoch", "2", "--batch-size", "8",
           "--storage", ckpt]
    def checkpointed(run) -> bool:
        deadline = time.time() + 300
        while time.time() < deadline and not _checkpoints(ckpt):
            assert run.poll() is None, "training ended before it could be interrupted"
            time.sleep(0.5)
        return bool(_checkpoints(ckpt))

    status, err = ctrl_c(cmd, checkpointed)
    assert status == 130, err[-3000:]
    driver = driver_lines(err)
    assert driver.strip().splitlines()[-1].endswith(
        "lensscan train: interrupted: training resnet_s0 stopped at the user's request; rerun "
        "the same command to resume from its last checkpoint")
    assert "Traceback" not in driver
    assert _checkpoints(ckpt) and not (train_data / "model" / "card.json").exists()


def _bundled_member() -> str:
    """The folder of the bundled ensemble's ``resnet_s0``: a model trained elsewhere."""
    from lensscan.io.storage import join
    from lensscan.modelcard import default_model_url, resolve

    return join(resolve(default_model_url()), "resnet_s0")


def _member_params(url):
    from lensscan.modelcard import load_member

    model, _ = load_member(url)
    return {k: v.detach() for k, v in model.named_parameters()}


@pytest.mark.slow
def test_train_init_starts_from_a_trained_member(train_data, ray_local, monkeypatch, capsys):
    from lensscan.cli import main

    init = _bundled_member()
    out = str(train_data / "ft")
    # relative paths, as a user types them: Ray Train workers run in folders of their own
    monkeypatch.chdir(train_data)

    @ray_local.remote
    def cwd() -> str:
        return os.getcwd()

    assert ray_local.get(cwd.remote()) != str(train_data)  # the workers' folder is not ours
    argv = ["train", "train", "--val", "val", "--out", "ft", "--arch", "resnet", "--epochs", "1",
            "--steps-per-epoch", "1", "--batch-size", "8", "--init",
            os.path.relpath(init, train_data)]
    assert main([*argv, "--lr", "1e-9"]) == 0, capsys.readouterr().err[-3000:]
    # the same data with another learning rate is another run: its --out is not overwritten
    assert main([*argv, "--lr", "1e-3"]) == 2
    assert "holds another model (run resnet_s0-" in capsys.readouterr().err
    before, after = _member_params(init), _member_params(out)
    assert before.keys() == after.keys()
    for name, w in before.items():
        assert (after[name] - w).abs().max() <= 2e-3 * max(1.0, float(w.abs().max())), name
    card = json.loads(pathlib.Path(out, "card.json").read_text())
    assert card["training"]["config"]["init"] == os.path.abspath(init)
    assert card["training"]["config"]["precision"] == "auto"


def test_train_init_with_another_architecture_is_refused(train_data):
    from lensscan.io.storage import join
    from lensscan.modelcard import default_model_url, resolve

    init = join(resolve(default_model_url()), "msresnet_s1")
    cmd = [sys.executable, "-m", "lensscan.cli", "train", str(train_data / "train"),
           "--out", str(train_data / "x"), "--arch", "resnet", "--init", init]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert run.returncode != 0
    err = run.stderr.strip().splitlines()[-1]
    assert "msresnet_s1" in err and "multiscale_resnet" in err and "Traceback" not in run.stderr
    assert not os.path.exists(train_data / "x" / "card.json")


def test_unknown_precision_is_refused_before_any_worker_starts(train_data):
    from lensscan.config import TrainConfig
    from lensscan.train.trainer import train

    with pytest.raises(ValueError, match="precision must be 'auto', 'bf16' or 'fp32', not 'fp8'"):
        train(TrainConfig(data=str(train_data / "train"), out=str(train_data / "m"),
                          precision="fp8"))


def test_bf16_training_matches_fp32_loss_and_learns():
    """Channels-last bfloat16 autocast (the training default) gives the fp32 loss to bfloat16
    accuracy, and a few optimiser steps on one batch drive its loss down."""
    import torch

    from lensscan.models import create_model
    from lensscan.train.loop import autocast

    torch.manual_seed(0)
    model = create_model("resnet").to(memory_format=torch.channels_last).train()
    x = torch.randn(32, 3, 48, 48).contiguous(memory_format=torch.channels_last)
    y = (torch.arange(32) % 3 == 0).float()
    x[y == 1, :, 20:28, 20:28] += 3.0  # a learnable difference

    def loss_of(precision):
        with autocast(torch.device("cpu"), precision):
            logits = model(x).reshape(-1).float()
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, y)

    with torch.no_grad():
        assert float(loss_of("bf16")) == pytest.approx(float(loss_of("fp32")), rel=0.03)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    start = loss_of("bf16").item()
    for _ in range(15):
        opt.zero_grad()
        loss = loss_of("bf16")
        loss.backward()
        opt.step()
    assert loss_of("bf16").item() < 0.3 * start


def test_early_stopping_waits_for_the_schedule_second_half():
    from lensscan.train.loop import should_stop

    # best at epoch 1 of 16 (the one-cycle peak follows): no stop in the high-LR first half
    assert not any(should_stop(e, 1, 16, 4) for e in range(0, 12))
    assert should_stop(12, 1, 16, 4)  # 5 epochs without improvement after the midpoint (7)
    assert not should_stop(12, 9, 16, 4) and should_stop(14, 9, 16, 4)
    assert not should_stop(3, -1, 4, 0)  # nothing measured yet


def test_auto_precision_is_bf16_only_where_native():
    """bfloat16 is emulated (about half the fp32 speed) on CPUs without AVX-512 BF16 or AMX:
    'auto' picks it only where the device computes it natively."""
    import torch

    from lensscan.train.loop import native_bf16, resolve_precision

    cpu = torch.device("cpu")
    with open("/proc/cpuinfo") as fh:
        flags = fh.read()
    native = "avx512_bf16" in flags or "amx_bf16" in flags
    assert native_bf16(cpu) is native
    assert resolve_precision("auto", cpu) == ("bf16" if native else "fp32")
    assert resolve_precision("bf16", cpu) == "bf16" and resolve_precision("fp32", cpu) == "fp32"


def test_data_problem_names_what_cannot_train():
    from lensscan.train.loop import data_problem

    assert data_problem(5, 20, 2, 9, world=1) is None
    assert data_problem(0, 20, 2, 9, world=1) == (
        "the training data needs both lenses and non-lenses: 0 lenses, 20 non-lenses")
    assert "on every worker (give fewer --workers)" in data_problem(3, 0, 2, 9, world=2)
    assert data_problem(5, 20, 0, 9, world=1).startswith(
        "the validation data needs both lenses and non-lenses: 0 lenses, 9 non-lenses")
    assert "give --val" in data_problem(5, 20, 0, 0, world=1)
    assert data_problem(5, 20, 0, 9, world=1, val="v/") == (  # --val given: no advice to give it
        "the validation data v/ needs both lenses and non-lenses: 0 lenses, 9 non-lenses")


@pytest.mark.slow
def test_validation_of_one_class_is_refused_and_a_rerun_with_both_trains(train_data, ray_local,
                                                                         capsys):
    """Without both classes the validation AUC is undefined, and the run would keep its
    starting weights as if trained: refused in one line (no Ray retries, no traceback); the
    same command with usable data then trains, past the report of the refused start."""
    from lensscan.cli import main

    val = train_data / "val" / "v.parquet"
    one_class = make_batch(24, seed=31, start_id=9000)
    one_class["label"][:] = 1
    write_parquet(str(val), one_class)
    argv = ["train", str(train_data / "train"), "--val", str(train_data / "val"),
            "--out", str(train_data / "m"), "--arch", "resnet", "--epochs", "1",
            "--steps-per-epoch", "1", "--batch-size", "8"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert (f"the validation data {train_data / 'val'} needs both lenses and non-lenses: 24 "
            "lenses, 0 non-lenses") in err
    assert "Traceback" not in driver_lines(err)
    assert not (train_data / "m" / "card.json").exists()
    write_parquet(str(val), make_batch(64, seed=30, start_id=9000))
    assert main(argv) == 0
    assert (train_data / "m" / "card.json").exists()


def _agree_worker(rank: int, port: int, out) -> None:
    import torch
    import torch.distributed as dist

    from lensscan.train.consensus import agree_min, from_rank0

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=2)
    try:
        # rows left after dropping quarantined ones differ by worker: 1025 and 1023
        least = agree_min([1025 - 2 * rank, 7 + rank], torch.device("cpu"))
        # an early-stopping decision that differs by worker: rank 0's holds on every one
        out.put((rank, (least, from_rank0([rank, 5 + rank], torch.device("cpu")))))
    finally:
        dist.destroy_process_group()


def test_workers_agree_on_the_least_counts_and_on_stopping():
    """A worker with one step more than the others waits forever in DDP's gradient exchange:
    every worker sizes its epoch from the least row count over the workers; and a worker that
    stopped early (its EMA's batch-norm statistics rank near-equal AUCs its own way) would
    leave the others waiting: every worker takes rank 0's decision (real gloo group)."""
    import socket

    import torch.multiprocessing as mp

    from lensscan.train.consensus import agree_min, from_rank0

    assert agree_min([3, 4], None) == [3, 4]  # no process group: the worker's own counts
    assert from_rank0([1, 2], None) == [1, 2]  # and its own decision
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_agree_worker, args=(r, port, out)) for r in range(2)]
    for p in procs:
        p.start()
    got = dict(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    agreed = ([1023, 7], [0, 5])
    assert got == {0: agreed, 1: agreed}


def test_a_diverged_run_saves_no_model_and_another_models_out_is_kept(train_data, ray_local,
                                                                         capsys):
    """A loss that became NaN was saved as a model (all weights NaN, threshold NaN in the
    card), exit 0; an --out holding another run's model was replaced with no word."""
    from lensscan.cli import main

    base = ["train", str(train_data / "train"), "--val", str(train_data / "val"), "--arch",
            "resnet", "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "8"]
    assert main([*base, "--out", str(train_data / "nan"), "--lr", "1e30"]) == 2
    err = capsys.readouterr().err
    assert "the weights diverged; lower the learning rate (1e+30)" in err
    assert "Traceback" not in driver_lines(err) and not (train_data / "nan" / "card.json").exists()
    # the same command again begins afresh (its checkpoint holds no weights to resume from)
    assert main([*base, "--out", str(train_data / "nan"), "--lr", "1e30"]) == 2
    assert "the weights diverged" in capsys.readouterr().err
    # an --out holding a model of another run (the bundled member, trained elsewhere)
    shutil.copytree(_bundled_member(), train_data / "m")
    assert main([*base, "--out", str(train_data / "m"), "--lr", "5e-3"]) == 2
    assert "holds another model (run resnet_s0-" in capsys.readouterr().err
    assert main([*base, "--out", str(train_data / "train" / "m")]) == 2
    assert "it lies inside the data folder" in capsys.readouterr().err


def test_training_reads_shards_of_integer_and_string_ids_together(tmp_path, ray_local):
    """A simulated set (integer ids) beside an imported one (string ids, ``import-npy``): one
    stream, every id as text, every row kept; Ray Data could not join the two id types."""
    from lensscan.data.preprocess import Preprocessing
    from lensscan.train.trainer import dataset

    write_parquet(str(tmp_path / "d" / "sim.parquet"), make_batch(40, seed=5))
    imported = make_batch(30, seed=6)
    imported["object_id"] = np.array([f"L{i:06d}" for i in range(30)], dtype=object)
    write_parquet(str(tmp_path / "d" / "npy.parquet"), imported)
    rows = dataset(str(tmp_path / "d"), Preprocessing(), "normalized").take_all()
    ids = sorted(r["object_id"] for r in rows)
    assert ids == sorted([str(i) for i in range(40)] + [f"L{i:06d}" for i in range(30)])
    labels = {r["object_id"]: int(r["label"]) for r in rows}
    assert labels["L000007"] == int(imported["label"][7])
    folds = [dataset(str(tmp_path / "d"), Preprocessing(), "normalized", fold=f).take_all()
             for f in (False, True)]  # the training and validation folds split every row
    assert sorted(r["object_id"] for f in folds for r in f) == ids


def test_a_data_problem_checkpoint_that_carries_weights_is_resumable(tmp_path):
    """A data problem reported after good epochs (a rerun with more --workers than the data
    allows) became the latest checkpoint with no weights: the next rerun started afresh, and
    its first report rotated the good checkpoint out. It now carries them."""
    import shutil

    import torch

    from lensscan.train import checkpoint as ckpt

    good, bad, carried, diverged = (str(tmp_path / n) for n in ("g", "b", "c", "d"))
    w = {"w": torch.zeros(2)}
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    ckpt.save(good, w, w, opt.state_dict(), {"epoch": 3}, {})
    ckpt.save_problem(bad, "0 lenses on every worker (give fewer --workers)")
    shutil.copytree(good, carried)
    ckpt.save_problem(carried, "0 lenses on every worker (give fewer --workers)")
    ckpt.save_problem(diverged, "the training loss became nan", diverged=True)
    assert [ckpt.has_weights(p) for p in (good, bad, carried, diverged)] == [
        True, False, True, False]
    assert ckpt.read_problem(carried) and ckpt.load(carried)[3]["epoch"] == 3
