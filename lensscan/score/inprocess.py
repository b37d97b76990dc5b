"""Score a small survey in this process, without Ray (``--engine local``, and ``auto`` for at
most :data:`lensscan.config.LOCAL_MAX_ROWS` rows on a machine without a Ray cluster).

The same code as the Ray path, arranged in one process: a reader thread (two for object
storage, where one waits on the network while the other decodes) decodes the units
(:meth:`lensscan.data.stream.ReadUnits.blocks`, the read tasks' code) a few blocks ahead while
the model scores (:class:`lensscan.score.predictor.EnsemblePredictor`, the actors' code) and the
driver commits (:class:`lensscan.score.collect.Collector`). What a Ray run pays before its first
unit is committed (Ray's start, worker processes, an actor importing torch while the reads start)
is then the model's load and one block: a user scoring 2,000 cutouts waits seconds, not a
minute. The model loads while the first blocks are read; the readers stop when the run does.
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
from lensscan.io import storage
from lensscan.io.shards import Unit
from lensscan.score.build import predictor_kwargs, unit_reader
from lensscan.score.resources import DECODED_CUTOUT, Resources, batch_size

READ_AHEAD = 2  # decoded blocks waiting for the model (bounded: memory stays flat)
#: Reader threads for units on object storage: while one waits on the network for its unit,
#: another decodes. Local files take one (decoding is CPU work, the model's cores).
REMOTE_READERS = 2
STOP_WAIT_S = 5.0  # how long a run that ends waits for its reader thread (a daemon) to stop
ENGINES = ("auto", "ray", "local")
_DONE = object()  # the reader's last item
WAITING = "loading the model"  # what the progress line says before the first row is scored

#: Options that lay out Ray's actors and tasks: given one, a run is a Ray run.
RAY_LAYOUT = ("actors", "gpus_per_actor", "cpus_per_actor", "read_tasks", "object_store_mb")


def use_local(cfg: ScoreConfig, rows: int | None = None, cluster: bool | None = None) -> bool:
    """True when the run scores in this process: ``--engine local``, or ``auto`` with no Ray
    cluster (``cluster``, default :func:`lensscan.runtime.cluster_running`), no Ray layout
    option and at most :data:`LOCAL_MAX_ROWS` rows to score (``rows=None``: not counted yet).

    Raises
    ------
    ValueError
        For an engine other than auto, ray and local; for ``--engine local`` with a layout of
        Ray's actors (``--gpus-per-actor`` 0, the CPU, or 1, the GPU, excepted).
    """
    if cfg.engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {cfg.engine!r}")
    layout = [f for f in RAY_LAYOUT if getattr(cfg, f) is not None]
    if cfg.engine == "local":
        if [f for f in layout if f != "gpus_per_actor"]:
            options = ", ".join("--" + f.replace("_", "-") for f in layout)
            raise ValueError(f"{options}: options of Ray's actors, for --engine ray (or auto)")
        if cfg.gpus_per_actor not in (None, 0, 1):
            raise ValueError(f"--gpus-per-actor {cfg.gpus_per_actor:g}: with --engine local, 0 "
                             "(the CPU) or 1 (the GPU); one model runs in the process")
        return True
    if cfg.engine == "ray":
        return False
    cluster = runtime.cluster_running() if cluster is None else cluster
    return not cluster and not layout and (rows is None or rows <= LOCAL_MAX_ROWS)


def rows_at_least(stamps: dict) -> int:
    """About the fewest rows shards of these sizes hold (``stamps``: a listing's
    :class:`~lensscan.io.storage.Stamp` by URL), known before any footer is read, taking a row
    for a float64 cutout, 96 KiB. A first try above :data:`LOCAL_MAX_ROWS` by this count starts
    Ray while the footers are read; the rows the footers count then decide the engine."""
    return sum(s.size for s in stamps.values()) // (DECODED_CUTOUT * 8)


def local_resources(cfg: ScoreConfig, cuda: bool | None = None) -> Resources:
    """The manifest's ``resources`` of a run in this process: one model, every core's threads,
    on the GPU when there is one (``cuda``, default: torch finds one; imports torch) unless
    ``--gpus-per-actor 0``.

    Raises
    ------
    ValueError
        For ``--gpus-per-actor 1`` without a GPU.
    """
    if cuda is None:
        import torch

        cuda = torch.cuda.is_available()
    if cfg.gpus_per_actor == 1 and not cuda:
        raise ValueError("--gpus-per-actor 1: torch finds no CUDA GPU on this machine "
                         "(0 scores on the CPU)")
    cpus = os.cpu_count() or 1
    gpu = cuda and cfg.gpus_per_actor != 0
    return Resources(actors=1, gpus_per_actor=1.0 if gpu else 0.0, cpus_per_actor=float(cpus),
                     threads=cfg.torch_threads or cpus, read_tasks=1,
                     batch_size=batch_size(cfg, gpu))


def score_units(cfg: ScoreConfig, model_url: str, preprocessing: dict, units: list[Unit],
                ids_as_strings: bool, res: Resources) -> Iterator[dict[str, np.ndarray]]:
    """Scored batches of ``units``, as the Ray path's actors return them (each row naming its
    unit by index). A read's :class:`~lensscan.errors.StorageError` and a model's
    :class:`~lensscan.errors.ModelError` are raised here, as themselves."""
    read = unit_reader(preprocessing, units, ids_as_strings, res)
    blocks: queue.Queue = queue.Queue(maxsize=READ_AHEAD)
    todo: queue.Queue = queue.Queue()
    for item in enumerate(units):
        todo.put(item)
    stop = threading.Event()
    readers = [threading.Thread(target=_read, args=(read, todo, blocks, stop),
                                name="lensscan-reader", daemon=True)
               for _ in range(reader_count(units))]
    for reader in readers:
        reader.start()  # the first blocks are read while the model loads
    try:
        from lensscan.score.predictor import EnsemblePredictor  # torch

        predictor = EnsemblePredictor(**predictor_kwargs(cfg, model_url, preprocessing, res),
                                      device="cuda" if res.gpu else "cpu")
        finished = 0
        while finished < len(readers):
            block = blocks.get()
            if block is _DONE:
                finished += 1
            elif isinstance(block, BaseException):
                raise block
            else:
                yield predictor(block)
    finally:
        stop.set()
        with contextlib.suppress(queue.Empty):  # free a reader blocked on a full queue
            while True:
                blocks.get_nowait()
        for reader in readers:  # a read in progress (slow storage) is not waited out
            reader.join(timeout=STOP_WAIT_S)


def reader_count(units: list[Unit]) -> int:
    """Reader threads for ``units``: :data:`REMOTE_READERS` on object storage, else one."""
    remote = bool(units) and not storage.is_local(units[0].url)
    return min(REMOTE_READERS if remote else 1, max(1, len(units)))


def _read(read: ReadUnits, todo: queue.Queue, blocks: queue.Queue,
          stop: threading.Event) -> None:
    """A reader thread: the blocks of the units it takes from ``todo`` (``(index, unit)``)
    into ``blocks`` until none is left, then :data:`_DONE` (or the error that stopped it).
    Blocks of different units may interleave: each row names its unit."""
    try:
        while not stop.is_set():
            try:
                index, unit = todo.get_nowait()
            except queue.Empty:
                break
            for block in read.blocks(unit, index):
                if not _put(blocks, block, stop):
                    return
        _put(blocks, _DONE, stop)
    except BaseException as exc:  # noqa: BLE001  (handed to the scoring loop, raised there)
        _put(blocks, exc, stop)


def _put(blocks: queue.Queue, item: object, stop: threading.Event) -> bool:
    """Put ``item`` once there is room, unless the run stops first (then False)."""
    while not stop.is_set():
        try:
            blocks.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False
