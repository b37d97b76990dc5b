"""The streaming stage of a scoring run: read tasks decode the units, ensemble actors
preprocess and score them, and the driver commits each unit as its last row comes back.

Only scores travel back to the driver (never pixels), each row naming its unit by index.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import ray.data
from ray.data import ActorPoolStrategy, ExecutionResources

from lensscan import runtime
from lensscan.config import ScoreConfig
from lensscan.data.readstage import read_stage
from lensscan.io.shards import Unit
from lensscan.score import inprocess
from lensscan.score.actor import WARM_HOOK, ScoringActor
from lensscan.score.build import predictor_kwargs, unit_reader
from lensscan.score.collect import Collector
from lensscan.score.progress import ACTORS_STARTING, Progress
from lensscan.score.resources import (
    GPU_CALLS,
    GPU_TASKS_IN_FLIGHT,
    READ_CPUS,
    Resources,
    size_run,
)


@dataclass
class Streamed:
    """What the stream did: resources asked for, rows committed, the first commit."""

    resources: Resources | None = None  # None: nothing was left to score
    committed: int = 0  # rows committed, quarantined ones included
    scored: int = 0  # of them, rows scored
    first_commit: tuple[float, int] | None = None  # (seconds since the start, rows) then
    devices: dict[str, int] = field(default_factory=dict)  # rows scored per device
    engine: str | None = None  # "ray" or "local" (:mod:`lensscan.score.inprocess`)
    arithmetic: list[str] = field(default_factory=list)  # what the output's scores computed in

    def resources_report(self) -> dict[str, Any] | None:
        """The manifest's ``resources``."""
        if self.resources is None:
            return None
        return {"engine": self.engine, **self.resources.to_dict(),
                "devices": dict(sorted(self.devices.items()))}


def build_dataset(units: list[Unit], cfg: ScoreConfig, preprocessing: dict, model_url: str,
                  res: Resources, blocks: int, ids_as_strings: bool = False) -> ray.data.Dataset:
    """The streaming Ray Data plan (nothing runs until it is iterated): ``blocks`` read tasks
    decode, actors preprocess and score."""
    read = unit_reader(preprocessing, units, ids_as_strings, res)
    ds = read_stage(units, read, READ_CPUS, blocks=blocks, tasks=res.read_tasks)
    pool = ActorPoolStrategy(size=res.actors, **(
        {"max_tasks_in_flight_per_actor": GPU_TASKS_IN_FLIGHT,
         "max_concurrent_calls_per_actor": GPU_CALLS, "enable_true_multi_threading": True}
        if res.gpu else {}))
    ds = ds.map_batches(
        ScoringActor,
        fn_constructor_kwargs=predictor_kwargs(cfg, model_url, preprocessing, res),
        batch_size=res.batch_size,
        num_gpus=res.gpus_per_actor,
        num_cpus=res.cpus_per_actor,
        compute=pool,
    )  # Ray Data restarts dead actors and retries their batches by default
    # per dataset, not Ray-wide: the cap holds for this run only
    ds.context.execution_options.resource_limits = ExecutionResources.for_limits(
        object_store_memory=res.object_store_bytes)
    # a read block is one actor batch (Ray Data would merge a task's output up to 128 MB): the
    # first unit's batches go to every actor at once, and it is committed sooner
    ds.context.target_max_block_size = res.batch_size * res.row_bytes
    # an error of a task (StorageError, ModelError) reaches the driver as itself, not wrapped in
    # Ray Data's UserCodeException, which drops it: the run reports it in one line
    ds.context.raise_original_map_exception = True
    return ds


def stream_units(cfg: ScoreConfig, model_url: str, preprocessing: dict, todo: dict[str, Unit],
                 ids_as_strings: bool, columns: list[str], t0: float,
                 progress: Progress, local: bool | None = None,
                 guard: Callable[[], None] | None = None,
                 committed: Iterable[str] = ()) -> Streamed:
    """Score the units ``todo`` (by key: their part's name) through Ray Data, or in this
    process when ``local`` (None: :func:`lensscan.score.inprocess.use_local` decides), committing
    each into ``cfg.output`` as it completes; ``t0``: the run's start (``time.time()``);
    ``guard`` is called before each commit (it raises when the output's lease was lost);
    ``committed``: the keys of this run's units an earlier run committed."""
    if not todo:
        return Streamed()
    units = list(todo.values())
    collector = Collector(cfg.output, units, list(todo), columns, guard, committed)
    rows = sum(u.rows for u in units)
    if inprocess.use_local(cfg, rows) if local is None else local:
        res = inprocess.local_resources(cfg)
        batches = inprocess.score_units(cfg, model_url, preprocessing, units, ids_as_strings,
                                        res)
        engine, waiting = "local", inprocess.WAITING
    else:
        runtime.ensure_ray(warm_hook=WARM_HOOK)
        res, blocks = size_run(cfg, units)
        ds = build_dataset(units, cfg, preprocessing, model_url, res, blocks, ids_as_strings)
        # no prefetch: Ray Data's waits until that many blocks are ready before it yields the
        # first, so each unit reached the driver two actor batches late (the first commit about
        # 1 s later on 2 cores); the blocks are scores (about 100 bytes a row), cheap to fetch
        batches = ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=0)
        engine, waiting = "ray", ACTORS_STARTING
    progress.start(rows, waiting)
    try:  # Ray's C++ core writes to fd 2: filtered on Ray runs (nothing to filter in process)
        with runtime.native_stderr_filtered() if engine == "ray" else contextlib.nullcontext():
            collector.run(batches, t0, progress)
    finally:  # as soon as the run stops (an error of a commit too): the local engine's reader
        close = getattr(batches, "close", None)  # thread stops with it
        if close is not None:
            close()
    progress.close()  # the last progress line, before the commit stage
    return Streamed(res, collector.committed, collector.scored, collector.first_commit,
                    collector.devices, engine, sorted(collector.one_arithmetic.seen))

