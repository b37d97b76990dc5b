"""Credentials never reach Ray's logs, the output or the console: the driver puts no
environment value in a runtime env (Ray logs runtime envs, on every node)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid

import pytest
from support import make_batch

from lensscan import runtime
from lensscan.io import storage
from lensscan.io.parquet import write_parquet


def _files_with(root: str, needle: bytes) -> list[str]:
    hits = []
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            try:
                with open(path, "rb") as fh:
                    if needle in fh.read():
                        hits.append(path)
            except OSError:
                continue  # sockets, vanished files
    return hits


def test_driver_runtime_env_holds_no_environment(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-in-the-runtime-env")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    for local in (True, False):
        env = runtime.driver_runtime_env(local)
        assert "env_vars" not in env and "not-in-the-runtime-env" not in json.dumps(env)


@pytest.mark.slow
def test_secret_key_in_no_log_output_or_console(s3_bucket, tiny_model, tmp_path):
    """A run with a recognisable secret key, reading and writing the S3 test server (so the key
    is really used): the key is nowhere in Ray's temp dir (session logs, runtime-env agent
    log), the output objects, stdout or stderr."""
    secret = f"lensscan-test-secret-{uuid.uuid4().hex}"
    write_parquet(f"{s3_bucket}/cut/p.parquet", make_batch(40, seed=3))
    ray_tmp = tempfile.mkdtemp(prefix="rs", dir="/tmp")  # short: socket paths max 107 chars
    env = dict(os.environ, AWS_SECRET_ACCESS_KEY=secret, RAY_TMPDIR=ray_tmp)
    env.pop("RAY_ADDRESS", None)
    out = f"{s3_bucket}/run"
    try:
        r = subprocess.run([sys.executable, "-m", "lensscan.cli", "score", f"{s3_bucket}/cut/",
                            out, "--model", tiny_model, "--engine", "ray"], env=env,
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        assert "scored 40 of 40 rows" in r.stdout
        assert secret not in r.stdout + r.stderr
        logs = _files_with(ray_tmp, secret.encode())
        assert not logs, f"the secret key is in {logs}"
        assert any(f.endswith("runtime_env_agent.log") for f in _all_files(ray_tmp))  # logged
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    fs, path = storage.filesystem(out)
    for key in fs.find(path):
        assert secret.encode() not in fs.cat_file(key), key


def _all_files(root: str) -> list[str]:
    return [os.path.join(d, f) for d, _, files in os.walk(root) for f in files]


def test_a_url_that_carries_a_password_is_refused_without_showing_it(tiny_model, tmp_path,
                                                                   capsys):
    """A password in a URL (which fsspec would use) reached _run.json, the manifest, the
    provenance of every export and the ``shard`` of every scored row."""
    from lensscan.cli import main

    password = f"pw-{uuid.uuid4().hex}"
    write_parquet(str(tmp_path / "in" / "p.parquet"), make_batch(4, seed=3))
    runs = (["score", f"ftp://bob:{password}@127.0.0.1:1/in", str(tmp_path / "o1"),
             "--model", tiny_model],
            ["score", str(tmp_path / "in"), f"s3://KEY:{password}@bucket/o2",
             "--model", tiny_model],
            ["score", str(tmp_path / "in"), str(tmp_path / "o3"),
             "--model", f"gs://KEY:{password}@models/round31"])
    for argv in runs:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert password not in err and ":***@" in err and "carries a password" in err, err
        assert len(err.strip().splitlines()) == 1
    assert not any((tmp_path / o).exists() for o in ("o1", "o3"))
    assert storage.filesystem("s3://bucket/a@b/c")[1] == "bucket/a@b/c"  # an @ in a key
