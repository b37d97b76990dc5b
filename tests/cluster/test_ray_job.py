"""`ray start --head` with a declared GPU, then `ray job submit` of jobs/score_survey.py: on the
(fake) GPU actor, and with S3 credentials passed the way Ray documents (`--runtime-env-json`).

Ray 2.60's `ray start --head` turns token authentication on: the client runs with
RAY_AUTH_MODE=token and finds the token the head wrote (~/.ray/auth_token)."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import subprocess
import tempfile
import time

import pytest
from support import RAY, free_port, make_batch

from lensscan.io import storage
from lensscan.io.parquet import write_parquet

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ray_head():
    """A Ray head with 2 CPUs and 1 (fake) GPU in its own process group; only it is stopped."""
    temp = tempfile.mkdtemp(prefix="rj", dir="/tmp")  # short: socket paths max 107 chars
    ports = {k: free_port() for k in ("port", "dashboard", "agent", "client", "node", "object",
                                      "metrics", "agent_grpc", "runtime_env")}
    cmd = [RAY, "start", "--head", "--block", "--num-cpus=2", "--num-gpus=1",
           f"--temp-dir={temp}", f"--port={ports['port']}", "--include-dashboard=true",
           "--dashboard-host=127.0.0.1", f"--dashboard-port={ports['dashboard']}",
           f"--dashboard-agent-listen-port={ports['agent']}",
           f"--dashboard-agent-grpc-port={ports['agent_grpc']}",
           f"--ray-client-server-port={ports['client']}",
           f"--node-manager-port={ports['node']}", f"--object-manager-port={ports['object']}",
           f"--metrics-export-port={ports['metrics']}",
           f"--runtime-env-agent-port={ports['runtime_env']}", "--disable-usage-stats"]
    # no AWS_* in the cluster's own environment: a job gets credentials from its runtime env
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"
           and not k.startswith("AWS_")}
    proc = subprocess.Popen(cmd, start_new_session=True, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    address = f"http://127.0.0.1:{ports['dashboard']}"
    client_env = dict(env, RAY_AUTH_MODE=os.environ.get("RAY_AUTH_MODE", "token"))
    deadline = time.time() + 120
    while time.time() < deadline:
        r = subprocess.run([RAY, "job", "list", "--address", address], env=client_env,
                           capture_output=True, text=True)
        if r.returncode == 0:
            break
        if proc.poll() is not None:
            pytest.fail("ray start --head exited early")
        time.sleep(2)
    else:
        os.killpg(proc.pid, signal.SIGTERM)
        pytest.fail(f"the job server did not answer: {r.stderr[-1000:]}")
    yield address, client_env
    # Ray's own shutdown of every daemon takes half a minute here: a few seconds' grace, then
    # the whole process group (the head's daemons and workers; nothing else is in it)
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=8)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow
def test_ray_job_submit_scores_on_gpu_actor(ray_head, tiny_model, tmp_path):
    address, env = ray_head
    src, out = tmp_path / "in", tmp_path / "out"
    for k in range(2):
        write_parquet(str(src / f"p{k}.parquet"), make_batch(120, seed=k, start_id=k * 1000))
    cmd = [RAY, "job", "submit", "--address", address, "--working-dir", str(ROOT), "--",
           "python", "jobs/score_survey.py", "--input", str(src), "--output", str(out),
           "--model", tiny_model, "--batch-size", "64"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert "succeeded" in r.stdout.lower()
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["counts"]["rows_scored"] == 240 and manifest["counts"]["rows_read"] == 240
    assert manifest["resources"]["gpus_per_actor"] == 1.0  # scheduled on the (fake) GPU
    # the actor took the GPU Ray gave it (GPU 0); torch has no CUDA here, so it scored on CPU
    assert manifest["resources"]["devices"] == {"cpu (Ray GPU 0)": 240}
    assert "scored 240 of 240 rows" in r.stdout


@pytest.mark.slow
def test_ray_job_submit_with_env_vars_in_runtime_env(ray_head, tiny_model, s3_server,
                                                     s3_bucket):
    """The job's runtime env sets the S3 variables; the driver adds none of its own, so Ray
    has nothing to merge ("Failed to merge the Job's runtime env ... conflict" before)."""
    address, env = ray_head
    batch = make_batch(60, seed=8)
    write_parquet(f"{s3_bucket}/cut/p.parquet", batch)
    out = f"{s3_bucket}/runs/job"
    job_env = {k: os.environ[k] for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID",
                                          "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    cmd = [RAY, "job", "submit", "--address", address, "--working-dir", str(ROOT),
           "--runtime-env-json", json.dumps({"env_vars": job_env}), "--",
           "python", "jobs/score_survey.py", "--input", f"{s3_bucket}/cut/", "--output", out,
           "--model", tiny_model]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert "scored 60 of 60 rows" in r.stdout
    manifest = json.loads(storage.read_bytes(f"{out}/_manifest.json"))
    assert manifest["counts"]["rows_scored"] == 60
