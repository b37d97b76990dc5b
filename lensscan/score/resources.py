"""How big a scoring run is: actors and what each gets (GPUs, CPUs, threads), concurrent read
tasks, the batch size and the object-store budget, from the cluster and the units to score."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, fields, replace
from typing import Any

from lensscan import runtime
from lensscan.config import ScoreConfig
from lensscan.data.stream import ROW_COLUMNS
from lensscan.errors import ShardError
from lensscan.io.shards import Unit, read_unit

READ_CPUS = 0.25  # CPUs reserved per read task
MAX_CPU_ACTORS = 8  # CPU-only clusters: at most this many scoring actors by default
MIN_STORE_MB = 256  # smallest default object-store budget of a scoring run
CPU_BATCH, GPU_BATCH = 512, 8192  # default cutouts per model call
#: Cutouts/s one GPU actor can take, measured (README, "Benchmarks"): the ensemble alone on one
#: H200, fp16 and channels-last, batch 8192 (237,800/s). With the measured decode rate of a read
#: task it sets how many reads feed the GPUs.
GPU_ACTOR_RATE = 240_000
#: Concurrent reads per GPU actor when the GPU nodes are still to come (autoscaling from 0):
#: the CPUs they bring are unknown until they join, and the head's alone would allow one read
READS_PER_COMING_ACTOR = 2
GPU_TASKS_IN_FLIGHT = 4  # inputs queued at a GPU actor (fetched while it computes)
GPU_CALLS = 2  # calls running at once in a GPU actor (one's copies overlap another's kernels)
DECODED_CUTOUT = 3 * 64 * 64  # values of one decoded cutout (3, 64, 64)


@dataclass(frozen=True)
class Resources:
    """What a scoring run asks of the cluster (the manifest's ``resources``, less ``devices``)."""

    actors: int  # scoring actors
    gpus_per_actor: float
    cpus_per_actor: float
    threads: int  # torch intra-op threads per actor
    read_tasks: int  # read tasks at once
    batch_size: int  # cutouts per model call
    read_rate_per_task: float | None = None  # measured decode rate of a read task (GPU runs)
    row_bytes: int | None = None  # one decoded cutout as it travels
    object_store_bytes: int | None = None  # object store for blocks in flight

    @property
    def gpu(self) -> bool:
        return self.gpus_per_actor > 0

    def to_dict(self) -> dict[str, Any]:
        """The fields that are set, in their order."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if getattr(self, f.name) is not None}


def resources(cfg: ScoreConfig, blocks: int | None = None, read_rate: float | None = None,
              cpus: float | None = None, gpus: float | None = None) -> Resources:
    """Actor count, per-actor GPUs/CPUs/threads, concurrent reads and batch size from the
    cluster's resources.

    ``blocks`` is the number of read tasks the run has: a small survey gets no more actors and
    concurrent reads than it can feed (and on CPU, more threads per actor). ``read_rate`` is the
    measured decode rate of one read task (cutouts/s): GPU runs get as many concurrent reads as
    the GPUs can take (:data:`GPU_ACTOR_RATE`), at most one per CPU the actors leave. ``cpus``
    and ``gpus`` default to the Ray cluster's."""
    cpus = runtime.cluster_cpus() if cpus is None else cpus
    gpus = runtime.cluster_gpus() if gpus is None else gpus
    gpa = cfg.gpus_per_actor if cfg.gpus_per_actor is not None else (1.0 if gpus >= 1 else 0.0)
    most = blocks or 2**31
    if gpa > 0:
        actors = min(most, cfg.actors or max(1, int(gpus // gpa)))
        cpa = cfg.cpus_per_actor or 1.0
        threads = cfg.torch_threads or 1
        free = math.floor(cpus - actors * cpa)  # decode-only reads are CPU-bound
        if free < 1 and gpus < actors * gpa:  # GPU nodes still to come (autoscaling from 0):
            free = READS_PER_COMING_ACTOR * actors  # each brings CPUs; one read would feed all
        need = math.ceil(actors * GPU_ACTOR_RATE / read_rate) if read_rate else max(1, free)
        reads = min(most, cfg.read_tasks or max(1, min(free, need)))
    else:
        # one single-threaded actor per core (up to MAX_CPU_ACTORS): batch-level parallelism
        # keeps the cores busy when a read task takes one of them, where one multi-threaded
        # actor stalls at every intra-op barrier (measured here, 60,000 cutouts on 2 cores:
        # 659 vs 589 cutouts/s end to end)
        actors = min(most, cfg.actors or max(1, min(MAX_CPU_ACTORS, math.floor(cpus))))
        cpa = cfg.cpus_per_actor or max(0.5, (cpus - 2 * READ_CPUS) / actors)
        threads = cfg.torch_threads or max(1, math.floor(cpus / actors))
        # An explicit cap on concurrent read tasks: without it, the reads that start before
        # the actors are placed take every CPU slot, and each needs a fresh Ray worker process
        # (seconds of start-up CPU apiece, on the cores the model needs).
        reads = min(most, cfg.read_tasks or max(1, math.floor((cpus - actors * cpa) /
                                                               READ_CPUS)))
    return Resources(actors=actors, gpus_per_actor=gpa, cpus_per_actor=cpa, threads=threads,
                     read_tasks=reads, batch_size=batch_size(cfg, gpa > 0))


def batch_size(cfg: ScoreConfig, gpu: bool) -> int:
    """Cutouts per model call: ``--batch-size``, else the GPU's or the CPU's default."""
    return cfg.batch_size or (GPU_BATCH if gpu else CPU_BATCH)


def store_budget(cfg: ScoreConfig, res: Resources, block_rows: int, row_bytes: int) -> int:
    """Bytes of Ray's object store the run may fill with blocks in flight.

    Ray Data's default is a share of the whole object store (gigabytes), which a long run fills
    and whose touched shared-memory pages then stay resident: memory grew with the survey size.
    The blocks the stages need at once are one per read task and what each actor holds (two
    batches on CPU: the one being scored and the next; on a GPU the tasks queued at it); that
    many plus two spare keeps every actor fed. ``row_bytes``: one decoded cutout."""
    if cfg.object_store_mb:
        return int(cfg.object_store_mb * 2**20)
    block = block_rows * row_bytes
    per_actor = GPU_TASKS_IN_FLIGHT if res.gpu else 2
    held = res.actors * per_actor * max(block, res.batch_size * row_bytes)
    return max(MIN_STORE_MB * 2**20, (res.read_tasks + 2) * block + held)


def read_plan(units: list[Unit], rows_per_unit: int) -> tuple[int, int]:
    """Read tasks for ``units`` (about ``rows_per_unit`` rows each), and one task's rows."""
    mean_rows = max(1, sum(u.rows for u in units) // max(1, len(units)))
    per_task = max(1, rows_per_unit // mean_rows)
    return max(1, math.ceil(len(units) / per_task)), per_task * mean_rows


def half_pixels(units: list[Unit]) -> bool:
    """True when every unit's pixels are stored float16: they then travel as float16 (half the
    bytes) to the actors, which compute in float32."""
    return bool(units) and all(u.dtype == "float16" for u in units)


def read_rate(units: list[Unit]) -> float | None:
    """Decode rate of one read task (cutouts/s), measured on the largest of ``units`` that
    reads (a bad file is the read tasks' to quarantine); None when none does."""
    for unit in sorted(units, key=lambda u: -u.rows):
        t = time.perf_counter()
        try:
            rows = len(read_unit(unit, half=unit.dtype == "float16",
                                 columns=ROW_COLUMNS)["object_id"])
        except ShardError:
            continue
        return rows / max(time.perf_counter() - t, 1e-6)
    return None


def size_run(cfg: ScoreConfig, units: list[Unit]) -> tuple[Resources, int]:
    """The run's :class:`Resources` for scoring ``units`` on the Ray cluster (GPU runs measure
    a read task's decode rate on one of the first units), and its number of read tasks."""
    blocks, task_rows = read_plan(units, cfg.rows_per_unit)
    rate = read_rate(units[:8]) if runtime.cluster_gpus() >= 1 else None
    res = resources(cfg, blocks=blocks, read_rate=rate)
    row_bytes = DECODED_CUTOUT * (2 if half_pixels(units) else 4)
    res = replace(res, read_rate_per_task=round(rate, 1) if rate else None, row_bytes=row_bytes)
    budget = store_budget(cfg, res, min(task_rows, res.batch_size), row_bytes)
    return replace(res, object_store_bytes=budget), blocks
