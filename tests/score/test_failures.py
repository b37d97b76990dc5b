"""Runs that fail under their feet end with one line naming the URL and how to resume: the S3
endpoint lost mid-run, a full disk. Real processes, a real S3 server, a real full filesystem."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import boto3
import pytest
from support import free_port, make_batch

from lensscan.io.parquet import write_parquet

RESUME = "rerun the same command to resume"


def _wait(pred, proc, timeout=240) -> bool:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if pred():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.2)
    return False


def _parts(out) -> int:
    d = os.path.join(out, "scores")
    return len([p for p in os.listdir(d) if p.endswith(".parquet")]) if os.path.isdir(d) else 0


def _one_line_failure(err: str, url_part: str) -> str:
    """The stderr of a failed run: no traceback, and a last line naming the URL and how to
    resume; returns that line."""
    assert "Traceback" not in err, err[-3000:]
    lines = err.strip().splitlines()
    # the failure is one line; the others are progress and Ray's start-up notices
    assert len(lines) <= 10 and len([x for x in lines if "error" in x.lower()]) == 1, err
    last = lines[-1]
    assert last.startswith("lensscan score: error: ") and url_part in last, last
    assert last.endswith(RESUME), last
    return last


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["ray", "local"])
def test_s3_endpoint_lost_mid_run(tiny_model, tmp_path, engine):
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    moto = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    env = dict(os.environ, AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="k",
               AWS_SECRET_ACCESS_KEY="s", AWS_DEFAULT_REGION="us-east-1")
    try:
        s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="k",
                          aws_secret_access_key="s", region_name="us-east-1")
        for _ in range(100):
            try:
                s3.create_bucket(Bucket="lost")
                break
            except Exception:  # noqa: BLE001 - the server is still starting
                time.sleep(0.1)
        old = {k: os.environ.get(k) for k in env}
        os.environ.update(env)  # the writer below talks to this server
        try:
            for k in range(6):
                write_parquet(f"s3://lost/in/p{k}.parquet",
                              make_batch(400, seed=k, start_id=k * 1000), row_group_size=50)
        finally:
            for k, v in old.items():
                os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
        out = str(tmp_path / "out")
        proc = subprocess.Popen(
            [sys.executable, "-m", "lensscan.cli", "score", "s3://lost/in/", out, "--model",
             tiny_model, "--batch-size", "25", "--rows-per-unit", "50", "--engine", engine],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True)
        try:
            assert _wait(lambda: _parts(out) >= 2, proc), "the run committed nothing"
            os.killpg(moto.pid, signal.SIGKILL)  # the endpoint goes away mid-run
            _, err = proc.communicate(timeout=400)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if moto.poll() is None:
            os.killpg(moto.pid, signal.SIGKILL)
    assert proc.returncode == 3, err[-3000:]
    _one_line_failure(err, "s3://lost/in/p")
    assert not os.path.exists(os.path.join(out, "_manifest.json"))
    assert not os.path.exists(os.path.join(out, "_lease.json"))  # released on the way out


def _unshare() -> list[str] | None:
    """A command prefix that runs in a private mount namespace (root, or a user namespace)."""
    if not shutil.which("unshare"):
        return None
    cmd = ["unshare", "--mount"] + ([] if os.geteuid() == 0 else ["--map-root-user"])
    ok = subprocess.run([*cmd, "true"], capture_output=True).returncode == 0
    return cmd if ok else None


@pytest.mark.slow
def test_disk_full_mid_run(tiny_model, tmp_path):
    """The output on a 96 KiB tmpfs (its own mount namespace): it fills after a few parts."""
    prefix = _unshare()
    if prefix is None:
        pytest.skip("no mount namespace here (unshare) for a small full filesystem")
    src, out = tmp_path / "in", tmp_path / "full"
    out.mkdir()
    for k in range(6):
        write_parquet(str(src / f"p{k}.parquet"), make_batch(400, seed=k, start_id=k * 1000),
                      row_group_size=50)
    score = [sys.executable, "-m", "lensscan.cli", "score", str(src), str(out / "run"),
             "--model", tiny_model, "--batch-size", "25", "--rows-per-unit", "50"]
    script = f'mount -t tmpfs -o size=96k tmpfs "{out}" && exec "$@"'
    r = subprocess.run([*prefix, "sh", "-c", script, "sh", *score], capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 3, r.stderr[-3000:]
    last = _one_line_failure(r.stderr, str(out / "run" / "scores" / "part-"))
    assert "No space left on device" in last


def test_an_actor_that_cannot_read_the_model_fails_its_first_batch_with_the_url(monkeypatch):
    """Storage that fails while an actor reads the model (a node whose own credentials cannot
    read the bucket, an endpoint down) killed the actor in its constructor: Ray restarted it
    and printed tracebacks, where the run reports a StorageError in one line (exit 3)."""
    from lensscan.errors import StorageError
    from lensscan.score.actor import ScoringActor

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing there
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    actor = ScoringActor(model_url="s3://models/round31", preprocessing={}, threads=1,
                         tta=False, precision="fp32", compile=False, prior=None)
    with pytest.raises(StorageError, match=rf"s3://models/round31/card.json: .*{RESUME}"):
        actor({})
