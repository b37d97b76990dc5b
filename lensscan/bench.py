"""``lensscan bench``: throughput and memory of scoring, as ratios measured in one run.

(a) ``model_only``: the ensemble's forward pass on in-memory preprocessed tensors;
(b) ``plain_loop``: the original project's way: load each ``.npy``, preprocess, one model call
    per file;
(c) ``pipeline_local``: the full Ray Data pipeline from Parquet on local disk;
(d) ``pipeline_s3``: the same from an S3 server on 127.0.0.1 (moto, as in the tests).
``--scaling`` also scores 10x more cutouts to show time growing linearly and memory staying flat.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import numpy as np
import psutil
import torch

from lensscan import modelcard, runtime
from lensscan.config import ScoreConfig
from lensscan.data.preprocess import Preprocessing, preprocess
from lensscan.io.parquet import write_parquet
from lensscan.score.pipeline import score_survey


class PeakMemory:
    """Sample the memory of this process and all its children (Ray workers) while running.

    ``pss``: proportional set size, shared pages (Ray's object store, shared libraries) split
    between the processes that map them, so the sum is the tree's real footprint (Linux; falls
    back to RSS elsewhere). ``rss``: the plain sum of resident sizes, which counts every shared
    page once per process.
    """

    def __init__(self, interval: float = 0.5) -> None:
        self.interval, self._stop = interval, threading.Event()
        self.pss = self.rss = 0

    @staticmethod
    def _one(p: psutil.Process) -> tuple[int, int]:
        try:  # the kernel's own sums: far cheaper than psutil's parse of the full smaps
            with open(f"/proc/{p.pid}/smaps_rollup", "rb") as fh:
                kb = {ln.split(b":")[0]: int(ln.split()[1]) for ln in fh if ln[:4] in (b"Pss:",
                                                                                      b"Rss:")}
            return kb[b"Pss"] * 1024, kb[b"Rss"] * 1024
        except (OSError, KeyError, ValueError):
            rss = p.memory_info().rss
            return rss, rss

    def _sample(self) -> tuple[int, int]:
        me = psutil.Process()
        pss = rss = 0
        for p in [me, *me.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                a, b = self._one(p)
                pss, rss = pss + a, rss + b
        return pss, rss

    def _run(self) -> None:
        with contextlib.suppress(OSError, AttributeError):  # Linux: nice this thread only
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        while not self._stop.is_set():
            pss, rss = self._sample()
            self.pss, self.rss = max(self.pss, pss), max(self.rss, rss)
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakMemory:
        self.pss, self.rss = self._sample()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def mb(self) -> float:
        return self.pss / 2**20

    @property
    def rss_mb(self) -> float:
        return self.rss / 2**20


def synthetic_batch(n: int, start: int, seed: int) -> dict[str, np.ndarray]:
    """Sky noise plus a galaxy-like blob; throughput does not depend on the content."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:64, :64]
    blob = np.exp(-((xx - 31.5) ** 2 + (yy - 31.5) ** 2) / 40.0).astype(np.float32)
    images = rng.normal(0, 0.06, (n, 3, 64, 64)).astype(np.float32)
    images += rng.uniform(2, 30, (n, 3, 1, 1)).astype(np.float32) * blob
    return {"object_id": np.arange(start, start + n, dtype=np.int64),
            "ra": rng.uniform(0, 360, n), "dec": rng.uniform(-30, 30, n), "image": images}


def write_survey(url: str, n: int, shard_size: int = 5000) -> None:
    for k, s in enumerate(range(0, n, shard_size)):
        m = min(shard_size, n - s)
        write_parquet(f"{url.rstrip('/')}/part-{k:05d}.parquet", synthetic_batch(m, s, k),
                      row_group_size=1024)


def model_only(loaded, n: int, batch: int, threads: int) -> float:
    torch.set_num_threads(threads)
    pre = Preprocessing.from_dict(loaded.preprocessing)
    x = torch.from_numpy(preprocess(synthetic_batch(min(n, 4096), 0, 1)["image"], pre))
    model = loaded.module.eval().to(memory_format=torch.channels_last)
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        model(x[:batch])  # warm up
        done, t0 = 0, time.perf_counter()
        while done < n:
            xb = x[: min(batch, n - done)]
            model(xb)
            done += len(xb)
    return n / (time.perf_counter() - t0)


def plain_loop(loaded, n: int, workdir: str) -> float:
    """One .npy file per cutout, loaded, preprocessed and scored one by one."""
    pre = Preprocessing.from_dict(loaded.preprocessing)
    folder = os.path.join(workdir, "npy")
    os.makedirs(folder, exist_ok=True)
    imgs = synthetic_batch(n, 0, 2)["image"]
    for i in range(n):
        np.save(os.path.join(folder, f"{i:07d}.npy"), imgs[i])
    model = loaded.module.eval()
    t0 = time.perf_counter()
    with torch.inference_mode():
        for name in sorted(os.listdir(folder)):
            img = np.load(os.path.join(folder, name))
            x = torch.from_numpy(preprocess(img[None], pre))
            model(x)
    return n / (time.perf_counter() - t0)


def pipeline(input_url: str, out_url: str, model: str, batch: int) -> dict:
    """A full scoring run (Ray already up): end-to-end rows/s and wall time, start-up time
    (until the first unit is committed) and the steady rate after it."""
    t0 = time.perf_counter()
    m = score_survey(ScoreConfig(input=input_url, output=out_url, model=model, batch_size=batch,
                                 progress=False))
    seconds = time.perf_counter() - t0
    return {"rate": m["counts"]["rows_scored"] / seconds, "seconds": seconds,
            "startup_s": m["seconds_to_first_commit"], "steady": m["steady_rows_per_s"]}


def _drop_page_cache() -> bool:
    """Empty the OS page cache (Linux, root only) so the next read comes from the disk."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as fh:
            fh.write("3")
        return True
    except OSError:
        return False


def read_speed(n: int, workdir: str, cold: bool = False) -> dict:
    """Decode ``n`` cutouts from local Parquet vs reading the same files' raw bytes.

    Both passes read every shard whole; the Parquet pass also checks every row (status) and
    returns float32 (N, 3, 64, 64) arrays. With ``cold`` the page cache is emptied before each
    pass (root only), so both read from the disk; otherwise both read a warm cache.
    """
    from lensscan.io.parquet import read_parquet
    from lensscan.io.storage import list_shards

    src = os.path.join(workdir, "read")
    write_survey(src, n, shard_size=10_000)
    files = list_shards(src)
    size = sum(os.path.getsize(f) for f in files)
    for f in files:  # warm the page cache for both passes
        with open(f, "rb") as fh:
            while fh.read(1 << 24):
                pass
    dropped = cold and _drop_page_cache()
    t0 = time.perf_counter()
    for f in files:
        with open(f, "rb") as fh:
            while fh.read(1 << 24):
                pass
    raw = time.perf_counter() - t0
    if cold:
        _drop_page_cache()
    t0 = time.perf_counter()
    rows = sum(len(read_parquet(f)["image"]) for f in files)
    decoded = time.perf_counter() - t0
    shutil.rmtree(src, ignore_errors=True)
    return {"read_n": rows, "read_bytes": size, "cache": "cold" if dropped else "warm",
            "raw_read_mb_s": size / raw / 2**20,
            "parquet_read_mb_s": size / decoded / 2**20,
            "parquet_read_cutouts_s": rows / decoded,
            "parquet_over_raw": raw / decoded}


def flops_per_cutout(loaded) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    side = loaded.preprocessing.get("crop", 48)
    with FlopCounterMode(display=False) as fc, torch.inference_mode():
        loaded.module(torch.zeros(1, 3, side, side))
    return float(fc.get_total_flops())


def matmul_gflops(threads: int, n: int = 2048, reps: int = 5) -> float:
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


def run_bench(n: int = 20000, model: str = "default", batch: int = 512, plain_n: int = 2000,
              s3: bool = True, scaling: bool = False, workdir: str | None = None) -> dict:
    """Measure everything in one process; returns the figures (see module docstring)."""
    workdir = workdir or tempfile.mkdtemp(prefix="lensscan-bench-")
    threads = os.cpu_count() or 1
    loaded = modelcard.load_model(model)
    res: dict = {"n": n, "batch_size": batch, "threads": threads}
    res["flops_per_cutout"] = flops_per_cutout(loaded)
    res["matmul_gflops"] = matmul_gflops(threads)
    res["model_only"] = model_only(loaded, n, batch, threads)
    res["model_gflops"] = res["model_only"] * res["flops_per_cutout"] / 1e9
    res["plain_loop_n"] = min(plain_n, n)
    res["plain_loop"] = plain_loop(loaded, res["plain_loop_n"], workdir)
    local = os.path.join(workdir, "survey")
    write_survey(local, n)
    server = _s3_endpoint() if s3 else None
    runtime.ensure_ray()
    _warm_up(workdir, model, batch)
    with PeakMemory() as mem:
        run = pipeline(local, os.path.join(workdir, "out"), model, batch)
        res["pipeline_local"] = run["rate"]
        res["pipeline_local_startup_s"] = run["startup_s"]
        res["pipeline_local_steady"] = run["steady"]
        if s3:
            run = _s3_run(local, model, batch)
            res["pipeline_s3"] = run["rate"]
            res["pipeline_s3_startup_s"] = run["startup_s"]
            res["pipeline_s3_steady"] = run["steady"]
    res["peak_pss_mb"], res["peak_rss_mb"] = mem.mb, mem.rss_mb
    if server is not None:  # what follows reads local files: the S3 server's heap is not its own
        server.terminate()
        server.wait(timeout=30)
        for key, value in server.saved_env.items():  # the caller's own settings, if any
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    for key in ("pipeline_local", "pipeline_s3", "plain_loop", "pipeline_local_steady",
                "pipeline_s3_steady"):
        if res.get(key):
            res[f"{key}_over_model_only"] = res[key] / res["model_only"]
    if "pipeline_local" in res:
        res["pipeline_local_over_plain_loop"] = res["pipeline_local"] / res["plain_loop"]
    if scaling:
        res["scaling"] = []
        for k in (1, 10):
            src = os.path.join(workdir, f"scale{k}")
            write_survey(src, n * k)
            with PeakMemory() as mem:
                run = pipeline(src, os.path.join(workdir, f"scale{k}-out"), model, batch)
            res["scaling"].append({"n": n * k, "seconds": run["seconds"],
                                   "cutouts_s": run["rate"], "steady": run["steady"],
                                   "peak_pss_mb": mem.mb, "peak_rss_mb": mem.rss_mb})
            shutil.rmtree(src, ignore_errors=True)
    shutil.rmtree(workdir, ignore_errors=True)
    return res


def _warm_up(workdir: str, model: str, batch: int) -> None:
    """Score a few hundred rows untimed, so that Ray Data's per-cluster service actors (stats,
    autoscaling coordinator) exist, as on a long-lived cluster. Every timed run still starts its
    own scoring actors and read tasks."""
    src = os.path.join(workdir, "warmup")
    write_survey(src, 600)
    pipeline(src, os.path.join(workdir, "warmup-out"), model, batch)
    shutil.rmtree(src, ignore_errors=True)


def _s3_endpoint() -> subprocess.Popen | None:
    """Start a moto S3 server on 127.0.0.1 in a child process (unless ``AWS_ENDPOINT_URL``
    already names one; then None) and point the standard AWS variables at it; call before Ray
    starts, so that its workers inherit them. A process of its own, as a real store would be:
    its CPU use still shows (it shares the cores), but it does not hold the driver's GIL, and
    its memory is part of the measured process tree."""
    if os.environ.get("AWS_ENDPOINT_URL"):
        return None
    if ray_is_up():
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


def ray_is_up() -> bool:
    import ray

    return ray.is_initialized()


def _s3_run(local: str, model: str, batch: int) -> dict:
    """Copy the survey to the S3 endpoint and score it from there."""
    import uuid

    import boto3

    from lensscan.io import storage

    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"]).create_bucket(Bucket=bucket)
    for name in sorted(os.listdir(local)):
        with open(os.path.join(local, name), "rb") as fh:
            storage.write_bytes_atomic(f"s3://{bucket}/survey/{name}", fh.read())
    try:
        return pipeline(f"s3://{bucket}/survey/", f"s3://{bucket}/out/", model, batch)
    finally:  # the test server keeps objects in memory: free them for what follows
        fs, _ = storage.filesystem(f"s3://{bucket}/")
        fs.rm(f"{bucket}/", recursive=True)
        fs.invalidate_cache()


def report(res: dict) -> str:
    """Human-readable lines with the ratios."""
    lines = [f"cutouts: {res['n']}, batch {res['batch_size']}, {res['threads']} threads"]
    for key in ("model_only", "plain_loop", "pipeline_local", "pipeline_s3"):
        if key in res:
            extra = ""
            if res.get(f"{key}_steady"):
                extra = (f"  (start-up {res[f'{key}_startup_s']:.1f}s, then "
                         f"{res[f'{key}_steady']:.1f} cutouts/s)")
            lines.append(f"{key:>15}: {res[key]:9.1f} cutouts/s{extra}")
    for key in ("pipeline_local_over_model_only", "pipeline_s3_over_model_only",
                "pipeline_local_steady_over_model_only", "pipeline_s3_steady_over_model_only",
                "pipeline_local_over_plain_loop"):
        if key in res:
            lines.append(f"{key}: {res[key]:.2f}")
    lines.append(f"peak memory of the process tree: {res['peak_pss_mb']:.0f} MB PSS "
                 f"({res['peak_rss_mb']:.0f} MB summed RSS)")
    lines.append(f"model: {res['flops_per_cutout'] / 1e6:.1f} MFLOP/cutout, "
                 f"{res['model_gflops']:.1f} GFLOP/s achieved vs {res['matmul_gflops']:.1f} "
                 "GFLOP/s float32 matmul")
    for row in res.get("scaling", []):
        lines.append(f"scaling: n={row['n']}: {row['seconds']:.1f}s "
                     f"({row['cutouts_s']:.0f} cutouts/s end to end, "
                     f"{res['model_only'] and row['cutouts_s'] / res['model_only']:.2f} of "
                     f"model-only), peak {row['peak_pss_mb']:.0f} MB PSS")
    if len(res.get("scaling", [])) == 2:
        a, b = res["scaling"]
        lines.append(f"scaling 10N/N: time x{b['seconds'] / a['seconds']:.2f}, "
                     f"peak memory x{b['peak_pss_mb'] / a['peak_pss_mb']:.2f}")
    return "\n".join(lines)
