"""Score a survey: plan units -> Ray Data read/preprocess tasks -> ensemble actors -> commits.

Only scores travel back to the driver (never pixels); the driver groups rows by unit and commits
each unit's Parquet part atomically once all its rows are in. The run holds the output's lease
(one writer at a time) and records its fingerprint there; a rerun of the same run skips
committed units, so an interrupted run ends with every input row exactly once, and a different
run into the same output is refused unless ``overwrite``.
"""

from __future__ import annotations

import math
import sys
import time
from datetime import UTC, datetime

import ray
import ray.data
from ray.data import ActorPoolStrategy, ExecutionResources, TaskPoolStrategy

from lensscan import __version__, modelcard, runtime
from lensscan.config import ScoreConfig
from lensscan.data.stream import ReadUnits, SurveyPlan, plan_survey, unit_key, units_to_items
from lensscan.errors import NothingReadableError
from lensscan.io import storage
from lensscan.io.shards import Unit
from lensscan.score import commit, fingerprint
from lensscan.score.collect import Collector
from lensscan.score.lease import Lease
from lensscan.score.predictor import EnsemblePredictor

READ_CPUS = 0.25  # CPUs reserved per read/preprocess task
MAX_CPU_ACTORS = 8  # CPU-only clusters: at most this many scoring actors by default
MIN_STORE_MB = 256  # smallest default object-store budget of a scoring run


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def resources(cfg: ScoreConfig, blocks: int | None = None) -> dict:
    """Actor count and per-actor GPUs/CPUs/threads from the cluster's resources.

    ``blocks`` is the number of read tasks the run has: a small survey gets no more actors and
    concurrent reads than it can feed (and on CPU, more threads per actor)."""
    cpus, gpus = runtime.cluster_cpus(), runtime.cluster_gpus()
    gpa = cfg.gpus_per_actor if cfg.gpus_per_actor is not None else (1.0 if gpus >= 1 else 0.0)
    most = blocks or 2**31
    if gpa > 0:
        actors = min(most, cfg.actors or max(1, int(gpus // gpa)))
        cpa = cfg.cpus_per_actor or 1.0
        threads = cfg.torch_threads or 1
    else:
        # one single-threaded actor per core (up to MAX_CPU_ACTORS): batch-level parallelism
        # keeps the cores busy when a read task takes one of them, where one multi-threaded
        # actor stalls at every intra-op barrier (measured here, 60,000 cutouts on 2 cores:
        # 659 vs 589 cutouts/s end to end)
        actors = min(most, cfg.actors or max(1, min(MAX_CPU_ACTORS, math.floor(cpus))))
        cpa = cfg.cpus_per_actor or max(0.5, (cpus - 2 * READ_CPUS) / actors)
        threads = cfg.torch_threads or max(1, math.floor(cpus / actors))
    # An explicit cap on concurrent read tasks: without it, the reads that start before the
    # actors are placed take every CPU slot, and each needs a fresh Ray worker process (seconds
    # of start-up CPU apiece, on the cores the model needs).
    reads = min(most, cfg.read_tasks or max(1, math.floor((cpus - actors * cpa) / READ_CPUS)))
    return {"actors": actors, "gpus_per_actor": gpa, "cpus_per_actor": cpa, "threads": threads,
            "read_tasks": reads}


def store_budget(cfg: ScoreConfig, res: dict, block_rows: int, preprocessing: dict) -> int:
    """Bytes of Ray's object store the run may fill with blocks in flight.

    Ray Data's default is a share of the whole object store (gigabytes), which a long run fills
    and whose touched shared-memory pages then stay resident: memory grew with the survey size.
    The blocks the stages need at once are one per read task and two per actor (the batch being
    scored and the next); that many plus two spare keeps every actor fed."""
    if cfg.object_store_mb:
        return int(cfg.object_store_mb * 2**20)
    crop = int(preprocessing.get("crop", 64))
    block = block_rows * 3 * crop * crop * 4  # float32 model input
    blocks = res["read_tasks"] + 2 * res["actors"] + 2
    return max(MIN_STORE_MB * 2**20, blocks * block)


def _read_plan(units, rows_per_unit: int) -> tuple[int, int]:
    """Read tasks for ``units`` (about ``rows_per_unit`` rows each), and one task's rows."""
    mean_rows = max(1, sum(u.rows for u in units) // max(1, len(units)))
    per_task = max(1, rows_per_unit // mean_rows)
    return max(1, math.ceil(len(units) / per_task)), per_task * mean_rows


def build_dataset(units, cfg: ScoreConfig, preprocessing: dict, model_url: str, res: dict,
                  ids_as_strings: bool = False):
    """The streaming Ray Data plan (nothing runs until it is iterated)."""
    blocks, _ = _read_plan(units, cfg.rows_per_unit)
    ds = ray.data.from_items(units_to_items(units), override_num_blocks=blocks)
    # from_items splits the units evenly, so a block may hold fewer than planned per task; a
    # batch_size above a block's size would make Ray Data bundle blocks into fewer, larger tasks
    ds = ds.map_batches(ReadUnits(preprocessing, "model", ids_as_strings=ids_as_strings),
                        batch_size=len(units) // blocks, num_cpus=READ_CPUS,
                        compute=TaskPoolStrategy(size=res["read_tasks"]))
    ds = ds.map_batches(
        EnsemblePredictor,
        fn_constructor_kwargs={"model_url": model_url, "threads": res["threads"],
                               "tta": cfg.tta},
        batch_size=cfg.batch_size,
        num_gpus=res["gpus_per_actor"],
        num_cpus=res["cpus_per_actor"],
        compute=ActorPoolStrategy(size=res["actors"]),
    )  # Ray Data restarts dead actors and retries their batches by default
    # per dataset, not Ray-wide: the cap holds for this run only
    ds.context.execution_options.resource_limits = ExecutionResources.for_limits(
        object_store_memory=res["object_store_bytes"])
    return ds


def score_survey(cfg: ScoreConfig) -> dict:
    """Score every row under ``cfg.input`` into ``cfg.output``; returns the manifest.

    Raises
    ------
    OutputError
        When another run holds the output's lease, or the output holds another run and
        ``cfg.overwrite`` is not set.
    NothingReadableError
        When no input row could be read (every shard unreadable); no manifest is written.
    StorageError
        When storage fails under the run (a rerun resumes it).
    """
    started, t0 = _now(), time.time()
    model_url = modelcard.resolve(cfg.model)
    loaded = modelcard.load_model(model_url)
    threshold = cfg.threshold if cfg.threshold is not None else loaded.threshold
    with Lease(cfg.output):
        survey = plan_survey(cfg.input, cfg.rows_per_unit)
        rec = fingerprint.RunRecord(
            input=cfg.input, model_checksum=loaded.checksum,
            threshold=None if cfg.top is not None else float(threshold), top=cfg.top,
            preprocessing=loaded.preprocessing, rows_per_unit=cfg.rows_per_unit,
            tta=cfg.tta, shards=survey.stamps)
        if fingerprint.claim(cfg.output, rec, cfg.overwrite):
            _say(cfg, f"--overwrite: cleared the earlier output in {cfg.output}")
        # the output is about to change: it is no longer complete
        storage.remove(storage.join(cfg.output, commit.MANIFEST))
        manifest = _score(cfg, loaded, model_url, survey, float(threshold), t0)
        manifest.update(started=started, fingerprint=rec.fingerprint,
                        threshold=rec.threshold, top=cfg.top)
        commit.write_json(storage.join(cfg.output, commit.MANIFEST), manifest)
    return manifest


def _rejected_units(survey: SurveyPlan) -> dict[str, tuple[Unit, str]]:
    """Shards rejected at planning whose footer gave a row count, as whole-shard units."""
    out = {}
    for err in survey.rejected:
        if err.rows:
            unit = Unit(err.url, "rejected", 0, int(err.rows))
            out[unit_key(unit)] = (unit, err.reason)
    return out


def _score(cfg: ScoreConfig, loaded, model_url: str, survey: SurveyPlan, threshold: float,
           t0: float) -> dict:
    """Commit what is not committed yet, then finalize; returns the manifest (less its
    start, fingerprint and cut)."""
    order = ["object_id", "ra", "dec", "score",
             *[f"score_{n}" for n in loaded.member_names], "shard", "row", "status"]
    keys = {unit_key(u): u for u in survey.units}
    rejected = _rejected_units(survey)
    done = commit.committed_units(cfg.output) & (set(keys) | set(rejected))
    for key, (unit, reason) in rejected.items():
        if key not in done:
            commit.write_rejected(cfg.output, key, unit.url, unit.rows, reason, order,
                                  survey.ids_as_strings)
    todo = [u for k, u in keys.items() if k not in done]
    total = sum(u.rows for u in todo)
    _say(cfg, f"{len(keys)} units, {len(done & set(keys))} already committed, {total} rows to "
              "score" + (" (ids as strings: the shards mix integer and string ids)"
                         if survey.ids_as_strings else ""))
    res, collector = None, Collector(cfg.output, keys, order)
    if todo:
        runtime.ensure_ray()  # after the input and model are known to be usable
        blocks, task_rows = _read_plan(todo, cfg.rows_per_unit)
        res = resources(cfg, blocks=blocks)
        res["object_store_bytes"] = store_budget(cfg, res, task_rows, loaded.preprocessing)
        ds = build_dataset(todo, cfg, loaded.preprocessing, model_url, res,
                           survey.ids_as_strings)
        collector.run(ds.iter_batches(batch_size=None, batch_format="numpy"), t0, total,
                      lambda msg: _say(cfg, msg))
    unreadable = [{"shard": e.url, "reason": e.reason, "rows": e.rows} for e in survey.rejected]
    if unreadable:
        commit.write_json(storage.join(cfg.output, commit.QUARANTINE), {"shards": unreadable})
    counts = commit.finalize(cfg.output, sorted(set(keys) | set(rejected)), threshold, cfg.top)
    if counts["rows_read"] - counts["rows_unreadable"] == 0:
        raise NothingReadableError(_nothing_read(cfg, survey, counts))
    elapsed, scored = time.time() - t0, collector.scored
    first = collector.first_commit
    return {
        "lensscan_version": __version__,
        "input": cfg.input,
        "output": cfg.output,
        "model": {"url": cfg.model, "name": loaded.card.get("name"),
                  "checksum": loaded.checksum, "members": loaded.member_names,
                  "tta": cfg.tta},
        "ids_as_strings": survey.ids_as_strings,
        "counts": {**counts, "shards_unreadable": len(survey.rejected),
                   "rows_scored_this_run": scored},
        "unreadable_shards": unreadable,
        "finished": _now(),
        "seconds": round(elapsed, 3),
        "throughput_rows_per_s": round(scored / elapsed, 1) if elapsed > 0 else None,
        # start-up (model load, planning, actor start) and the rate once rows flow
        "seconds_to_first_commit": round(first[0], 3) if first else None,
        "steady_rows_per_s": _steady(first, scored, elapsed),
        "resources": res,
    }


def _nothing_read(cfg: ScoreConfig, survey: SurveyPlan, counts: dict) -> str:
    """The one-line reason of a run that could read no row."""
    if not survey.rejected and not counts["rows_read"]:
        return f"{cfg.input}: the shards hold no rows"
    first = "; ".join(f"{e.url}: {e.reason}" for e in survey.rejected[:3])
    more = f" (first reasons: {first})" if first else ""
    return (f"{cfg.input}: no row could be read: {len(survey.rejected)} of "
            f"{len(survey.stamps)} shards unreadable, {counts['rows_unreadable']} rows "
            f"quarantined{more}; see {storage.join(cfg.output, commit.QUARANTINE)} and "
            f"{storage.join(cfg.output, commit.SCORES)}")


def _steady(first: tuple[float, int] | None, scored: int, elapsed: float) -> float | None:
    """Rows/s after the first committed unit (None when too few units to tell)."""
    if first is None or scored <= first[1] or elapsed <= first[0]:
        return None
    return round((scored - first[1]) / (elapsed - first[0]), 1)


def _say(cfg: ScoreConfig, msg: str) -> None:
    if cfg.progress:
        print(f"[lensscan] {msg}", file=sys.stderr, flush=True)
