"""The bench's measurements and its report (see :mod:`lensscan.bench`)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

from lensscan import modelcard, runtime
from lensscan.bench.data import (
    s3_copy,
    s3_endpoint,
    server_cpu_s,
    stop_s3,
    synthetic_batch,
    write_survey,
)
from lensscan.bench.memory import GpuSampler, PeakMemory
from lensscan.config import ScoreConfig
from lensscan.data.preprocess import Preprocessing, preprocess
from lensscan.io import storage
from lensscan.score.actor import WARM_HOOK
from lensscan.score.inprocess import use_local
from lensscan.score.pipeline import score_survey
from lensscan.score.resources import batch_size

MODEL_ONLY_BATCHES = 8  # batches per model-only measurement (one of a pair)
COLD_N = 2000  # cutouts of the cold start: a user's first small survey
#: The timed pipelines, in the order they alternate with model-only runs: (c) and (d) on Ray,
#: (e) and (f) the same inputs in the process (``--engine local``).
PIPELINES = ("local", "s3", "inprocess", "inprocess_s3")


class ModelOnly:
    """(a) The ensemble alone on preprocessed in-memory tensors: on CPU with every core's
    threads, float32; on a GPU (when there is one) fp16 autocast, channels-last, as the actors
    run it. Each call measures ``batches`` forward passes; returns cutouts/s."""

    def __init__(self, loaded, batch: int, threads: int, batches: int = MODEL_ONLY_BATCHES
                 ) -> None:
        import copy

        torch.set_num_threads(threads)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.device.type == "cuda":  # as the scoring model sets it (then for the process)
            torch.backends.cudnn.benchmark = True
        self.batch, self.batches = batch, batches
        pre = Preprocessing.from_dict(loaded.preprocessing)
        x = torch.from_numpy(preprocess(synthetic_batch(batch, 0, 1)["image"], pre))
        self.x = x.to(self.device).contiguous(memory_format=torch.channels_last)
        self.model = copy.deepcopy(loaded.module).eval().to(self.device).to(
            memory_format=torch.channels_last)
        self()  # warm up

    def __call__(self) -> float:
        cuda = self.device.type == "cuda"
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.float16,
                                                    enabled=cuda):
            t0 = time.perf_counter()
            for _ in range(self.batches):
                self.model(self.x)
            if cuda:
                torch.cuda.synchronize()
        return self.batch * self.batches / (time.perf_counter() - t0)


def plain_loop(loaded, n: int, workdir: str) -> float:
    """(b) One .npy file per cutout, loaded, preprocessed and scored one by one."""
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


def pipeline(input_url: str, out_url: str, model: str, batch: int | None,
             engine: str = "ray") -> dict:
    """(c, d, e) A full scoring run (Ray already up for ``engine="ray"``): end-to-end rows/s
    and wall time, start-up time (until the first unit is committed) and the steady rate after
    it."""
    t0 = time.perf_counter()
    m = score_survey(ScoreConfig(input=input_url, output=out_url, model=model, batch_size=batch,
                                 progress=False, engine=engine))
    seconds = time.perf_counter() - t0
    return {"rate": m["counts"]["rows_scored"] / seconds, "seconds": seconds,
            "startup_s": m["seconds_to_first_commit"], "steady": m["steady_rows_per_s"],
            "devices": (m["resources"] or {}).get("devices")}


def cold_start(workdir: str, model: str, engine: str = "auto") -> dict:
    """A user's first run: ``lensscan score --engine ENGINE`` of :data:`COLD_N` cutouts in a
    fresh process, before the bench starts its own Ray (``auto``: what a user gets, the local
    engine; ``ray``: Ray started by the run). ``first_commit_s`` counts from the start of the
    scoring call (Ray start, planning, actor start, model load, the first unit); ``wall_s``
    from the process start to its exit (imports and Ray's shutdown too)."""
    src, out = os.path.join(workdir, "cold"), os.path.join(workdir, "cold-out")
    write_survey(src, COLD_N)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "lensscan.cli", "score", src, out, "--model",
                        model, "--engine", engine], env=env, capture_output=True, text=True,
                       timeout=1800)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"cold start run failed: {r.stderr[-2000:]}")
    with open(os.path.join(out, "_manifest.json")) as fh:
        m = json.load(fh)
    shutil.rmtree(src, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    return {"n": COLD_N, "engine": (m["resources"] or {}).get("engine"), "wall_s": wall,
            "first_commit_s": m["seconds_to_first_commit"], "scoring_s": m["seconds"],
            "startup": m.get("startup")}


def _ratio(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def paired(model_only: ModelOnly, local: str, workdir: str, model: str, batch: int | None,
           pairs: int, s3: bool, server: subprocess.Popen | None = None,
           mem: PeakMemory | None = None) -> dict:
    """Model-only and the pipelines in alternation, each pipeline run between two model-only
    runs (a c a d a e a f a c a ...): each ratio is to the mean of its two neighbours, so a drift
    of the machine's speed moves both sides, and the median of ``pairs`` ratios is reported
    with its range, as paired timing tools do."""
    a = [model_only()]
    runs: dict[str, list[dict]] = {kind: [] for kind in PIPELINES}
    kinds = [k for k in PIPELINES if s3 or not k.endswith("s3")]
    with s3_copy(local) if s3 else contextlib.nullcontext() as bucket:
        for i in range(pairs):
            for kind in kinds:
                on_s3 = kind.endswith("s3")
                src = f"{bucket}/survey/" if on_s3 else local
                out = f"{bucket}/out-{i}/" if on_s3 else os.path.join(workdir, f"out-{i}")
                engine = "local" if kind.startswith("inprocess") else "ray"
                cpu0 = server_cpu_s(server) if on_s3 else None
                if mem is not None:
                    mem.lap()
                runs[kind].append(pipeline(src, out, model, batch, engine))
                if mem is not None:  # this run's own peak (the tree's: the server too)
                    runs[kind][-1]["peak_pss_mb"] = round(mem.lap())
                if cpu0 is not None:  # the test server's share of the cores
                    runs[kind][-1]["server_cpu_s"] = round(server_cpu_s(server) - cpu0, 1)
                storage.remove(out)
                a.append(model_only())
                runs[kind][-1]["model_only"] = (a[-2] + a[-1]) / 2
    return {**summarise(runs, a), "pairs": pairs}


def summarise(runs: dict[str, list[dict]], a: list[float]) -> dict:
    """Each pipeline's medians and its ratios to model-only (median and range), from its runs
    (``rate``, ``startup_s``, ``steady``, ``model_only``: the mean of its two neighbours) and
    the model-only runs ``a``."""
    res: dict = {"model_only_runs": a}
    for kind, rows in runs.items():
        if not rows:
            continue
        key = f"pipeline_{kind}"
        res[f"{key}_runs"] = rows
        res[key] = statistics.median(r["rate"] for r in rows)
        res[f"{key}_startup_s"] = statistics.median(r["startup_s"] for r in rows)
        steady = [r["steady"] for r in rows if r["steady"]]
        res[f"{key}_steady"] = statistics.median(steady) if steady else None
        ratio = _ratio([r["rate"] / r["model_only"] for r in rows])
        res[f"{key}_over_model_only"] = ratio["median"]
        res[f"{key}_over_model_only_range"] = [ratio["min"], ratio["max"]]
        if steady:
            ratio = _ratio([r["steady"] / r["model_only"] for r in rows if r["steady"]])
            res[f"{key}_steady_over_model_only"] = ratio["median"]
            res[f"{key}_steady_over_model_only_range"] = [ratio["min"], ratio["max"]]
    res["model_only"] = statistics.median(a)
    return res


def flops_per_cutout(loaded) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    side = Preprocessing.from_dict(loaded.preprocessing).crop
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


def run_bench(n: int = 20000, model: str = "default", batch: int | None = None,
              plain_n: int = 2000, s3: bool = True, scaling: bool = False,
              workdir: str | None = None, pairs: int = 3, cold: bool = True) -> dict:
    """Measure everything in one process; returns the figures (see :mod:`lensscan.bench`)."""
    workdir = workdir or tempfile.mkdtemp(prefix="lensscan-bench-")
    threads = os.cpu_count() or 1
    loaded = modelcard.load_model(model)
    cuda = torch.cuda.is_available()
    user = ScoreConfig(input=workdir, output=workdir, model=model, batch_size=batch)
    res: dict = {"n": n, "batch_size": batch_size(user, cuda), "threads": threads,
                 "device": torch.cuda.get_device_name() if cuda else "cpu",
                 # what ``lensscan score --engine auto`` runs for n rows in a fresh process
                 "auto_engine": "local" if use_local(user, n, cluster=False) else "ray"}
    res["flops_per_cutout"] = flops_per_cutout(loaded)
    res["matmul_gflops"] = matmul_gflops(threads)
    res["plain_loop_n"] = min(plain_n, n)
    res["plain_loop"] = plain_loop(loaded, res["plain_loop_n"], workdir)
    local = os.path.join(workdir, "survey")
    write_survey(local, n)
    server = s3_endpoint() if s3 else None
    if cold:  # before this process starts Ray: the user's own first run, Ray start included
        res["cold_start"] = cold_start(workdir, model)
        res["cold_start_ray"] = cold_start(workdir, model, "ray")
    runtime.ensure_ray(warm_hook=WARM_HOOK)
    warm_up(workdir, model, batch)
    model_only = ModelOnly(loaded, res["batch_size"], threads)
    with PeakMemory() as mem, GpuSampler() as gpu:
        res.update(paired(model_only, local, workdir, model, batch, pairs, s3, server, mem))
    res["peak_pss_mb"], res["peak_rss_mb"] = mem.mb, mem.rss_mb
    if cuda:
        res["gpu_while_scoring"] = gpu.summary(after=res.get("pipeline_local_startup_s") or 0)
    stop_s3(server)  # what follows reads local files: the S3 server's heap is not its own
    res["model_gflops"] = res["model_only"] * res["flops_per_cutout"] / 1e9
    res["plain_loop_over_model_only"] = res["plain_loop"] / res["model_only"]
    res["pipeline_local_over_plain_loop"] = res["pipeline_local"] / res["plain_loop"]
    res["pipeline_inprocess_over_plain_loop"] = res["pipeline_inprocess"] / res["plain_loop"]
    if cuda:
        from lensscan.bench.gpu import gpu_figures

        res["gpu"] = gpu_figures(loaded, modelcard.resolve(model), workdir)
    if scaling:
        res["scaling"] = _scaling(workdir, n, model, batch)
    shutil.rmtree(workdir, ignore_errors=True)
    return res


def _scaling(workdir: str, n: int, model: str, batch: int | None) -> list[dict]:
    """Score N and 10N cutouts: time should grow linearly, memory stay flat."""
    rows = []
    for k in (1, 10):
        src = os.path.join(workdir, f"scale{k}")
        write_survey(src, n * k)
        with PeakMemory() as mem:
            run = pipeline(src, os.path.join(workdir, f"scale{k}-out"), model, batch)
        rows.append({"n": n * k, "seconds": run["seconds"], "cutouts_s": run["rate"],
                     "steady": run["steady"], "startup_s": run["startup_s"],
                     "peak_pss_mb": mem.mb, "peak_rss_mb": mem.rss_mb})
        shutil.rmtree(src, ignore_errors=True)
    return rows


def warm_up(workdir: str, model: str, batch: int | None) -> None:
    """Score a few hundred rows untimed on each engine, so that Ray Data's per-cluster service
    actors (stats, autoscaling coordinator) exist, as on a long-lived cluster, and this
    process's first model load is behind it. Every timed run still starts its own scoring
    actors and read tasks, or loads its own model."""
    src = os.path.join(workdir, "warmup")
    write_survey(src, 600)
    for engine in ("ray", "local"):
        out = os.path.join(workdir, f"warmup-{engine}")
        pipeline(src, out, model, batch, engine)
        shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(src, ignore_errors=True)
