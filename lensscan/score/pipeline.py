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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime

import ray
import ray.data
from ray.data import ActorPoolStrategy, ExecutionResources, TaskPoolStrategy

from lensscan import __version__, modelcard, runtime
from lensscan.config import ScoreConfig
from lensscan.data.stream import ReadUnits, SurveyPlan, plan_survey, unit_key, units_to_items
from lensscan.errors import NothingReadableError
from lensscan.io import storage
from lensscan.io.shards import Unit, read_unit, split_first
from lensscan.models import calibration
from lensscan.score import commit, expected, fingerprint
from lensscan.score.actor import ScoringActor
from lensscan.score.collect import Collector
from lensscan.score.lease import Lease

READ_CPUS = 0.25  # CPUs reserved per read task
MAX_CPU_ACTORS = 8  # CPU-only clusters: at most this many scoring actors by default
MIN_STORE_MB = 256  # smallest default object-store budget of a scoring run
CPU_BATCH, GPU_BATCH = 512, 8192  # default cutouts per model call
#: Cutouts/s one GPU actor can take, measured (README, "Benchmarks"): the ensemble alone on one
#: H200, fp16 and channels-last, batch 8192 (237,800/s). With the measured decode rate of a read
#: task it sets how many reads feed the GPUs.
GPU_ACTOR_RATE = 240_000
GPU_TASKS_IN_FLIGHT = 4  # inputs queued at a GPU actor (fetched while it computes)
GPU_CALLS = 2  # calls running at once in a GPU actor (one's copies overlap another's kernels)
FIRST_UNIT_ROWS = 256  # the first unit is cut into units this big: a first commit in seconds


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def resources(cfg: ScoreConfig, blocks: int | None = None, read_rate: float | None = None,
              cpus: float | None = None, gpus: float | None = None) -> dict:
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
        free = max(1, math.floor(cpus - actors * cpa))  # decode-only reads are CPU-bound
        need = math.ceil(actors * GPU_ACTOR_RATE / read_rate) if read_rate else free
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
    return {"actors": actors, "gpus_per_actor": gpa, "cpus_per_actor": cpa, "threads": threads,
            "read_tasks": reads,
            "batch_size": cfg.batch_size or (GPU_BATCH if gpa > 0 else CPU_BATCH)}


def store_budget(cfg: ScoreConfig, res: dict, block_rows: int, row_bytes: int) -> int:
    """Bytes of Ray's object store the run may fill with blocks in flight.

    Ray Data's default is a share of the whole object store (gigabytes), which a long run fills
    and whose touched shared-memory pages then stay resident: memory grew with the survey size.
    The blocks the stages need at once are one per read task and what each actor holds (two
    batches on CPU: the one being scored and the next; on a GPU the tasks queued at it); that
    many plus two spare keeps every actor fed. ``row_bytes``: one decoded cutout."""
    if cfg.object_store_mb:
        return int(cfg.object_store_mb * 2**20)
    block = block_rows * row_bytes
    per_actor = GPU_TASKS_IN_FLIGHT if res["gpus_per_actor"] > 0 else 2
    held = res["actors"] * per_actor * max(block, res["batch_size"] * row_bytes)
    return max(MIN_STORE_MB * 2**20, (res["read_tasks"] + 2) * block + held)


def _read_plan(units, rows_per_unit: int) -> tuple[int, int]:
    """Read tasks for ``units`` (about ``rows_per_unit`` rows each), and one task's rows."""
    mean_rows = max(1, sum(u.rows for u in units) // max(1, len(units)))
    per_task = max(1, rows_per_unit // mean_rows)
    return max(1, math.ceil(len(units) / per_task)), per_task * mean_rows


def half_pixels(units) -> bool:
    """True when every unit's pixels are stored float16: they then travel as float16 (half the
    bytes) to the actors, which compute in float32."""
    return bool(units) and all(u.dtype == "float16" for u in units)


def build_dataset(units, cfg: ScoreConfig, preprocessing: dict, model_url: str, res: dict,
                  ids_as_strings: bool = False):
    """The streaming Ray Data plan (nothing runs until it is iterated): read tasks decode,
    actors preprocess and score."""
    blocks, _ = _read_plan(units, cfg.rows_per_unit)
    gpu = res["gpus_per_actor"] > 0
    ds = ray.data.from_items(units_to_items(units), override_num_blocks=blocks)
    # from_items splits the units evenly, so a block may hold fewer than planned per task; a
    # batch_size above a block's size would make Ray Data bundle blocks into fewer, larger tasks
    read = ReadUnits(preprocessing, "raw", ids_as_strings=ids_as_strings,
                     half=half_pixels(units), block_rows=res["batch_size"])
    ds = ds.map_batches(read, batch_size=len(units) // blocks, num_cpus=READ_CPUS,
                        compute=TaskPoolStrategy(size=res["read_tasks"]))
    pool = ActorPoolStrategy(size=res["actors"], **(
        {"max_tasks_in_flight_per_actor": GPU_TASKS_IN_FLIGHT,
         "max_concurrent_calls_per_actor": GPU_CALLS, "enable_true_multi_threading": True}
        if gpu else {}))
    ds = ds.map_batches(
        ScoringActor,
        fn_constructor_kwargs={"model_url": model_url, "preprocessing": preprocessing,
                               "threads": res["threads"], "tta": cfg.tta,
                               "precision": cfg.precision, "compile": cfg.compile,
                               "prior": cfg.prior},
        batch_size=res["batch_size"],
        num_gpus=res["gpus_per_actor"],
        num_cpus=res["cpus_per_actor"],
        compute=pool,
    )  # Ray Data restarts dead actors and retries their batches by default
    # per dataset, not Ray-wide: the cap holds for this run only
    ds.context.execution_options.resource_limits = ExecutionResources.for_limits(
        object_store_memory=res["object_store_bytes"])
    # a read block is one actor batch (Ray Data would merge a task's output up to 128 MB): the
    # first unit's batches go to every actor at once, and it is committed sooner
    ds.context.target_max_block_size = res["batch_size"] * res["row_bytes"]
    return ds


def read_rate(unit: Unit) -> float:
    """Decode rate of one read task (cutouts/s), measured on the first unit to score."""
    t = time.perf_counter()
    rows = len(read_unit(unit, half=unit.dtype == "float16")["object_id"])
    return rows / max(time.perf_counter() - t, 1e-6)


def plan_while_ray_starts(cfg: ScoreConfig) -> tuple[SurveyPlan, dict]:
    """List the input (a wrong URL fails at once), then read the shards' footers in threads
    while Ray starts; returns the plan and the seconds each took."""
    t = time.perf_counter()
    stamps = storage.shard_stamps(cfg.input)
    timing = {"list_s": time.perf_counter() - t}
    with ThreadPoolExecutor(1) as pool:
        planned = pool.submit(_timed, plan_survey, cfg.input, cfg.rows_per_unit, 8, stamps)
        t = time.perf_counter()
        if stamps:
            runtime.ensure_ray()
        timing["ray_s"] = time.perf_counter() - t
        survey, timing["plan_s"] = planned.result()
    return survey, {k: round(v, 3) for k, v in timing.items()}


def _timed(fn, *args):
    t = time.perf_counter()
    return fn(*args), time.perf_counter() - t


def score_survey(cfg: ScoreConfig) -> dict:
    """Score every row under ``cfg.input`` into ``cfg.output``; returns the manifest.

    Raises
    ------
    OutputError
        When another run holds the output's lease, or the output holds another run and
        ``cfg.overwrite`` is not set.
    ValueError
        When ``cfg.prior`` is given for a model without calibration, or is not in (0, 1).
    NothingReadableError
        When no input row could be read (every shard unreadable); no manifest is written.
    StorageError
        When storage fails under the run (a rerun resumes it).
    """
    started, t0 = _now(), time.time()
    model_url = modelcard.resolve(cfg.model)
    info = modelcard.model_info(model_url)  # cards and weight checksums; the actors load it
    threshold = cfg.threshold if cfg.threshold is not None else info.threshold
    cal, prior = scoring_prior(cfg.model, info, cfg.prior)
    prior_from = "--prior" if cfg.prior is not None else "model card"
    cfg = replace(cfg, prior=prior)  # the actors calibrate p_lens to the resolved prior
    order = output_columns(info.member_names)
    with Lease(cfg.output):
        survey, startup = plan_while_ray_starts(cfg)
        survey.units = split_first(survey.units, FIRST_UNIT_ROWS)
        rec = fingerprint.RunRecord(
            input=cfg.input, model_checksum=info.checksum,
            threshold=None if cfg.top is not None else float(threshold), top=cfg.top,
            preprocessing=info.preprocessing, rows_per_unit=cfg.rows_per_unit,
            tta=cfg.tta, precision=cfg.precision, first_unit_rows=FIRST_UNIT_ROWS,
            prior=prior, columns=order,
            shards=survey.stamps)
        if fingerprint.claim(cfg.output, rec, cfg.overwrite):
            _say(cfg, f"--overwrite: cleared the earlier output in {cfg.output}")
        # the output is about to change: it is no longer complete
        storage.remove(storage.join(cfg.output, commit.MANIFEST))
        manifest = _score(cfg, info, model_url, survey, float(threshold), order, t0)
        manifest["startup"] = {**startup, **manifest.get("startup", {})}
        manifest.update(started=started, fingerprint=rec.fingerprint,
                        threshold=rec.threshold, top=cfg.top, prior=prior,
                        p_lens=_p_lens_report(cal, prior, prior_from,
                                              manifest.pop("expected")))
        commit.write_json(storage.join(cfg.output, commit.MANIFEST), manifest)
    return manifest


def output_columns(members: list[str]) -> list[str]:
    """The scores' columns, in order: the contract's, then the additions of issue 15."""
    return ["object_id", "ra", "dec", "score", *[f"score_{n}" for n in members], "shard",
            "row", "status", "logit", "member_spread", "p_lens"]


def scoring_prior(model: str, info: modelcard.ModelInfo, prior: float | None
                  ) -> tuple[calibration.Calibration | None, float | None]:
    """The model's calibration and the prevalence ``p_lens`` is calibrated to: ``prior`` when
    given, else the card's; (None, None) for a model without calibration.

    Raises
    ------
    ValueError
        When ``prior`` is given for a model without calibration, or is not in (0, 1).
    """
    try:
        cal = calibration.from_card(info.card)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{model}: the card's calibration is unusable ({exc})") from None
    if cal is None:
        if prior is not None:
            raise ValueError(f"--prior {prior:g}: model {model} has no calibration, so p_lens "
                             "cannot be computed; add one (lensscan calibrate MODEL VAL) or "
                             "score without --prior")
        return None, None
    return cal, (calibration.check_prior(prior) if prior is not None else cal.prior)


def _p_lens_report(cal: calibration.Calibration | None, prior: float | None, prior_from: str,
                   expect: dict | None) -> dict:
    """The manifest's ``p_lens`` entry: the calibration and prior used and what the ranked
    list holds in expectation, or why ``p_lens`` is null."""
    if cal is None:
        return {"calibrated": False,
                "reason": "the model card has no calibration, so p_lens is null; add one from "
                          "validation data with lensscan calibrate MODEL VAL"}
    return {"calibrated": True, "prior": prior, "prior_from": prior_from,
            "calibration": cal.to_dict(), **(expect or {})}


def _rejected_units(survey: SurveyPlan) -> dict[str, tuple[Unit, str]]:
    """Shards rejected at planning whose footer gave a row count, as whole-shard units."""
    out = {}
    for err in survey.rejected:
        if err.rows:
            unit = Unit(err.url, "rejected", 0, int(err.rows))
            out[unit_key(unit)] = (unit, err.reason)
    return out


def _stream(cfg: ScoreConfig, info, model_url: str, todo: list[Unit], survey: SurveyPlan,
            collector: Collector, t0: float) -> dict:
    """Score ``todo`` through Ray Data into ``collector``; returns the resources used."""
    runtime.ensure_ray()
    blocks, task_rows = _read_plan(todo, cfg.rows_per_unit)
    rate = read_rate(max(todo[:8], key=lambda u: u.rows)) if runtime.cluster_gpus() >= 1 \
        else None
    res = resources(cfg, blocks=blocks, read_rate=rate)
    if rate:
        res["read_rate_per_task"] = round(rate, 1)
    res["row_bytes"] = 3 * 64 * 64 * (2 if half_pixels(todo) else 4)  # a decoded cutout
    res["object_store_bytes"] = store_budget(cfg, res, min(task_rows, res["batch_size"]),
                                             res["row_bytes"])
    ds = build_dataset(todo, cfg, info.preprocessing, model_url, res, survey.ids_as_strings)
    collector.run(ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=2),
                  t0, sum(u.rows for u in todo), lambda msg: _say(cfg, msg))
    return {**res, "devices": dict(sorted(collector.devices.items()))}


def _score(cfg: ScoreConfig, info, model_url: str, survey: SurveyPlan, threshold: float,
           order: list[str], t0: float) -> dict:
    """Commit what is not committed yet, then finalize; returns the manifest (less its
    start, fingerprint and cut, with the ``expected`` lenses of the ranked list when
    ``cfg.prior`` is set)."""
    keys = {unit_key(u): u for u in survey.units}
    rejected = _rejected_units(survey)
    done = commit.committed_units(cfg.output) & (set(keys) | set(rejected))
    for key, (unit, reason) in rejected.items():
        if key not in done:
            commit.write_rejected(cfg.output, key, unit.url, unit.rows, reason, order,
                                  survey.ids_as_strings)
    todo = [u for k, u in keys.items() if k not in done]
    _say(cfg, f"{len(keys)} units, {len(done & set(keys))} already committed, "
              f"{sum(u.rows for u in todo)} rows to score"
              + (" (ids as strings: the shards mix integer and string ids)"
                 if survey.ids_as_strings else ""))
    collector = Collector(cfg.output, keys, order)
    res = _stream(cfg, info, model_url, todo, survey, collector, t0) if todo else None
    unreadable = [{"shard": e.url, "reason": e.reason, "rows": e.rows} for e in survey.rejected]
    if unreadable:
        commit.write_json(storage.join(cfg.output, commit.QUARANTINE), {"shards": unreadable})
    parts = sorted(set(keys) | set(rejected))
    counts = commit.finalize(cfg.output, parts, threshold, cfg.top)
    if counts["rows_read"] - counts["rows_unreadable"] == 0:
        raise NothingReadableError(_nothing_read(cfg, survey, counts))
    expect = (expected.expected_lenses(cfg.output, parts, counts["candidates"])
              if cfg.prior is not None else None)
    elapsed, scored = time.time() - t0, collector.scored
    first = collector.first_commit
    return {
        "lensscan_version": __version__,
        "input": cfg.input,
        "output": cfg.output,
        "model": {"url": cfg.model, "name": info.card.get("name"),
                  "checksum": info.checksum, "members": info.member_names,
                  "tta": cfg.tta},
        "ids_as_strings": survey.ids_as_strings,
        "counts": {**counts, "shards_unreadable": len(survey.rejected),
                   "rows_scored_this_run": scored},
        "unreadable_shards": unreadable,
        "finished": _now(),
        "seconds": round(elapsed, 3),
        "throughput_rows_per_s": round(scored / elapsed, 1) if elapsed > 0 else None,
        # start-up (Ray, planning, actor start, the first unit) and the rate once rows flow
        "seconds_to_first_commit": round(first[0], 3) if first else None,
        "steady_rows_per_s": _steady(first, scored, elapsed),
        "resources": res,
        "expected": expect,
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
