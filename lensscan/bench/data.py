"""Bench inputs: synthetic cutouts as Parquet shards, and an S3 test server in its own process."""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import numpy as np

from lensscan.io import storage
from lensscan.io.parquet import write_parquet


def synthetic_batch(n: int, start: int, seed: int) -> dict[str, np.ndarray]:
    """Sky noise plus a galaxy-like blob; throughput does not depend on the content."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:64, :64]
    blob = np.exp(-((xx - 31.5) ** 2 + (yy - 31.5) ** 2) / 40.0).astype(np.float32)
    images = rng.normal(0, 0.06, (n, 3, 64, 64)).astype(np.float32)
    images += rng.uniform(2, 30, (n, 3, 1, 1)).astype(np.float32) * blob
    return {"object_id": np.arange(start, start + n, dtype=np.int64),
            "ra": rng.uniform(0, 360, n), "dec": rng.uniform(-30, 30, n), "image": images}


def write_survey(url: str, n: int, shard_size: int = 5000, half: bool = False) -> None:
    """``n`` synthetic cutouts in Parquet shards of ``shard_size`` rows (row groups of 1024),
    float32, or float16 with ``half`` (a plain FixedSizeList<float16>, as the reader accepts)."""
    for k, s in enumerate(range(0, n, shard_size)):
        m = min(shard_size, n - s)
        url_k = f"{url.rstrip('/')}/part-{k:05d}.parquet"
        batch = synthetic_batch(m, s, k)
        if half:
            _write_half(url_k, batch)
        else:
            write_parquet(url_k, batch, row_group_size=1024)


def _write_half(url: str, batch: dict) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    image = pa.FixedSizeListArray.from_arrays(
        pa.array(batch["image"].astype(np.float16).reshape(-1)), 3 * 64 * 64)
    table = pa.table({"object_id": batch["object_id"], "ra": batch["ra"], "dec": batch["dec"],
                      "image": image})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, row_group_size=1024, compression={
        c: "none" if c == "image" else "zstd" for c in table.column_names},
        use_dictionary=[c for c in table.column_names if c != "image"])
    storage.write_bytes_atomic(url, sink.getvalue().to_pybytes())


def s3_endpoint() -> subprocess.Popen | None:
    """Start a moto S3 server on 127.0.0.1 in a child process (unless ``AWS_ENDPOINT_URL``
    already names one; then None) and point the standard AWS variables at it; call before Ray
    starts, so that its workers inherit them. A process of its own, as a real store would be:
    its CPU use still shows (it shares the cores), but it does not hold the driver's GIL, and
    its memory is part of the measured process tree."""
    if os.environ.get("AWS_ENDPOINT_URL"):
        return None
    if importlib.util.find_spec("moto") is None:
        raise ValueError("the S3 pipeline run needs moto's server: pip install -e '.[test]', "
                         "or pass --no-s3")
    import ray

    if ray.is_initialized():
        raise RuntimeError("start the S3 test server before Ray (workers must see the endpoint)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    atexit.register(proc.terminate)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            break
        except OSError as exc:
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"the moto S3 server did not start on {url}") from exc
            time.sleep(0.2)
    env = {"AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "bench",
           "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}
    proc.saved_env = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    return proc


@contextlib.contextmanager
def s3_copy(local: str) -> Iterator[str]:
    """Copy a local survey into a fresh bucket of the S3 endpoint, as ``s3://bucket/survey/``;
    yields ``s3://bucket``, and empties the bucket afterwards (the test server keeps objects in
    memory)."""
    import uuid

    import boto3

    from lensscan.io import storage

    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"]).create_bucket(Bucket=bucket)
    for name in sorted(os.listdir(local)):
        with open(os.path.join(local, name), "rb") as fh:
            storage.write_bytes_atomic(f"s3://{bucket}/survey/{name}", fh.read())
    try:
        yield f"s3://{bucket}"
    finally:
        fs, _ = storage.filesystem(f"s3://{bucket}/")
        fs.rm(f"{bucket}/", recursive=True)
        fs.invalidate_cache()


def server_cpu_s(server: subprocess.Popen | None) -> float | None:
    """CPU seconds the S3 test server has used so far (None: an outside endpoint, not
    measured). A real object store serves from other machines; this one takes its CPU from
    the cores that score, so the S3 runs report it."""
    if server is None:
        return None
    import psutil

    t = psutil.Process(server.pid).cpu_times()
    return t.user + t.system


def stop_s3(server: subprocess.Popen | None) -> None:
    """Stop the S3 test server and give the caller back its own AWS settings."""
    if server is None:
        return
    server.terminate()
    server.wait(timeout=30)
    for key, value in server.saved_env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
