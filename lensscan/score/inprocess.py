"""Score a small survey in this process, without Ray (``--engine local``, and ``auto`` for at
most :data:`lensscan.config.LOCAL_MAX_ROWS` rows on a machine without a Ray cluster).

The same code as the Ray path, arranged in one process: a reader thread decodes the units
(:meth:`lensscan.data.stream.ReadUnits.blocks`, the read tasks' code) a few blocks ahead while
the model scores (:class:`lensscan.score.predictor.EnsemblePredictor`, the actors' code) and the
driver commits (:class:`lensscan.score.collect.Collector`). What a Ray run pays before its first
unit is committed (Ray's start, worker processes, an actor importing torch while the reads start)
is then the model's load and one block: a user scoring 2,000 cutouts waits seconds, not a
minute. The model loads while the first block is read; the reader stops when the run does.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Iterator

import numpy as np

from lensscan import runtime
from lensscan.config import LOCAL_MAX_ROWS, ScoreConfig
from lensscan.data.stream import ReadUnits
from lensscan.io.shards import Unit
from lensscan.score.resources import CPU_BATCH, GPU_BATCH, Resources, half_pixels

READ_AHEAD = 2  # decoded blocks waiting for the model (bounded: memory stays flat)
_DONE = object()  # the reader's last item

#: Options that lay out Ray's actors and tasks: given one, a run is a Ray run.
RAY_LAYOUT = ("actors", "gpus_per_actor", "cpus_per_actor", "read_tasks", "object_store_mb")


def use_local(cfg: ScoreConfig, rows: int | None = None, cluster: bool | None = None) -> bool:
    """True when the run scores in this process: ``--engine local``, or ``auto`` with no Ray
    cluster (``cluster``, default :func:`lensscan.runtime.cluster_running`), no Ray layout
    option and at most :data:`LOCAL_MAX_ROWS` rows (``rows=None``: not counted yet)."""
    if cfg.engine != "auto":
        return cfg.engine == "local"
    cluster = runtime.cluster_running() if cluster is None else cluster
    if cluster or any(getattr(cfg, f) is not None for f in RAY_LAYOUT):
        return False
    return rows is None or rows <= LOCAL_MAX_ROWS


def local_resources(cfg: ScoreConfig, cuda: bool) -> Resources:
    """The manifest's ``resources`` of a run in this process: one model, every core's threads."""
    cpus = os.cpu_count() or 1
    return Resources(actors=1, gpus_per_actor=1.0 if cuda else 0.0, cpus_per_actor=float(cpus),
                     threads=cfg.torch_threads or cpus, read_tasks=1,
                     batch_size=cfg.batch_size or (GPU_BATCH if cuda else CPU_BATCH))


def score_units(cfg: ScoreConfig, model_url: str, preprocessing: dict, units: list[Unit],
                ids_as_strings: bool, res: Resources) -> Iterator[dict[str, np.ndarray]]:
    """Scored batches of ``units``, as the Ray path's actors return them (each row naming its
    unit by index). A read's :class:`~lensscan.errors.StorageError` and a model's
    :class:`~lensscan.errors.ModelError` are raised here, as themselves."""
    read = ReadUnits(preprocessing, "raw", ids_as_strings=ids_as_strings,
                     half=half_pixels(units), block_rows=res.batch_size)
    blocks: queue.Queue = queue.Queue(maxsize=READ_AHEAD)
    stop = threading.Event()
    reader = threading.Thread(target=_read, args=(read, units, blocks, stop),
                              name="lensscan-reader", daemon=True)
    reader.start()  # the first block is read while torch is imported and the model loads
    try:
        from lensscan.score.predictor import EnsemblePredictor  # torch

        predictor = EnsemblePredictor(model_url, preprocessing, threads=res.threads,
                                      tta=cfg.tta, precision=cfg.precision,
                                      compile=cfg.compile, prior=cfg.prior)
        while (block := blocks.get()) is not _DONE:
            if isinstance(block, BaseException):
                raise block
            yield predictor(block)
    finally:
        stop.set()
        while reader.is_alive():  # unblock a reader waiting to put, so that it sees ``stop``
            with contextlib.suppress(queue.Empty):
                blocks.get(timeout=0.1)
        reader.join()


def _read(read: ReadUnits, units: list[Unit], blocks: queue.Queue,
          stop: threading.Event) -> None:
    """The reader thread: every unit's blocks into ``blocks``, then :data:`_DONE` (or the error
    that stopped it)."""
    try:
        for index, unit in enumerate(units):
            for block in read.blocks(unit, index):
                if stop.is_set():
                    return
                blocks.put(block)
        blocks.put(_DONE)
    except BaseException as exc:  # noqa: BLE001  (handed to the scoring loop, raised there)
        blocks.put(exc)
