"""The plan of a scoring run: what the input holds (listing, footers), whether the output may
take the run (its fingerprint), and which units are left to score."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from lensscan import runtime
from lensscan.config import LOCAL_MAX_ROWS, ScoreConfig
from lensscan.data.stream import SurveyPlan, plan_survey
from lensscan.io import storage
from lensscan.io.shards import Unit, split_first
from lensscan.modelcard import ModelInfo
from lensscan.score import commit, fingerprint, inprocess
from lensscan.score.actor import WARM_HOOK

FIRST_UNIT_ROWS = 256  # the first unit is cut into units this big: a first commit in seconds


def unit_key(unit: Unit) -> str:
    """Stable name of a unit (its part file's): a hash of its shard URL and its first row."""
    digest = hashlib.sha1(unit.url.encode()).hexdigest()[:16]
    return f"{digest}-{unit.start:010d}"


@dataclass
class RunPlan:
    """What a run will do, before any pixel is read."""

    survey: SurveyPlan
    record: fingerprint.RunRecord  # the run's identity, claimed in the output
    units: dict[str, Unit]  # every readable unit, by key, in shard order
    rejected: dict[str, tuple[Unit, str]]  # shards rejected at planning (rows known), by key
    done: set[str]  # keys of the units (and rejected shards) committed by an earlier try
    startup: dict[str, float]  # seconds spent listing, starting Ray and planning
    local: bool = False  # scored in this process (:mod:`lensscan.score.inprocess`), not on Ray
    #: every shard with unreadable rows ({shard, reason, rows}), set by the commit stage:
    #: those rejected at planning, then those whose bytes failed when a unit was read
    unreadable: list[dict] = field(default_factory=list)

    @property
    def todo(self) -> dict[str, Unit]:
        """The units left to score, by key, in shard order."""
        return {k: u for k, u in self.units.items() if k not in self.done}

    @property
    def parts(self) -> list[str]:
        """Keys of every part the output holds once the run is complete."""
        return sorted(set(self.units) | set(self.rejected))


def plan_run(cfg: ScoreConfig, info: ModelInfo, threshold: float, columns: list[str],
             say: Callable[[str], None]) -> RunPlan:
    """Plan the run into ``cfg.output`` (whose lease the caller holds): list and plan the input
    while Ray starts, claim the output for the run (refused for another run unless
    ``cfg.overwrite``), and find the units committed before. A shard whose headers name other
    bands than the model's is rejected, its rows quarantined.

    Raises
    ------
    OutputError
        When the output holds another run and ``cfg.overwrite`` is not set.
    """
    cluster = runtime.cluster_running()  # before this run starts Ray itself
    survey, startup = plan_while_ray_starts(cfg, cluster, model_bands(info))
    survey.units = split_first(survey.units, FIRST_UNIT_ROWS)
    rec = fingerprint.RunRecord(
        input=cfg.input, model_checksum=info.checksum,
        threshold=None if cfg.top is not None else float(threshold), top=cfg.top,
        preprocessing=info.preprocessing, rows_per_unit=cfg.rows_per_unit,
        tta=cfg.tta, precision=cfg.precision, first_unit_rows=FIRST_UNIT_ROWS,
        prior=cfg.prior, columns=columns, shards=survey.stamps)
    if fingerprint.claim(cfg.output, rec, cfg.overwrite):
        say(f"--overwrite: cleared the earlier output in {cfg.output}")
    # the output is about to change: it is no longer complete
    storage.remove(storage.join(cfg.output, commit.MANIFEST))
    units = {unit_key(u): u for u in survey.units}
    rejected = rejected_units(survey)
    done = commit.committed_units(cfg.output) & (set(units) | set(rejected))
    plan = RunPlan(survey, rec, units, rejected, done, startup)
    rows = sum(u.rows for u in plan.todo.values())
    say(f"{len(units)} units, {len(done & set(units))} already committed, {rows} rows to score"
        + (" (ids as strings: the shards mix integer and string ids)"
           if survey.ids_as_strings else ""))
    # by the rows left to score (an early start of Ray on the shards' bytes does not decide)
    plan.local = inprocess.use_local(cfg, rows, cluster)
    if rows and not plan.local and not runtime.cluster_running():
        say(f"more than {LOCAL_MAX_ROWS:,} rows: starting Ray")
        t = time.perf_counter()
        runtime.ensure_ray(warm_hook=WARM_HOOK)
        startup["ray_s"] = round(startup["ray_s"] + time.perf_counter() - t, 3)
    return plan


def rejected_units(survey: SurveyPlan) -> dict[str, tuple[Unit, str]]:
    """Shards rejected at planning whose footer gave a row count, as whole-shard units."""
    out = {}
    for err in survey.rejected:
        if err.rows:
            unit = Unit(err.url, "rejected", 0, int(err.rows))
            out[unit_key(unit)] = (unit, err.reason)
    return out


def model_bands(info: ModelInfo) -> tuple[str, ...] | None:
    """The bands the model reads, in order (None, no check, for a card that does not say)."""
    return tuple(info.card.bands) if info.card.bands else None


def plan_while_ray_starts(cfg: ScoreConfig, cluster: bool, bands: tuple[str, ...] | None = None
                          ) -> tuple[SurveyPlan, dict[str, float]]:
    """List the input (a wrong URL fails at once), then read the shards' footers in threads
    while Ray starts (``cluster``: Ray was running before the run); returns the plan and the
    seconds each took. Ray starts here only for a first try whose shards' bytes alone show
    more rows than the local engine takes: a resumed run may have few rows left."""
    t = time.perf_counter()
    stamps = storage.shard_stamps(cfg.input)
    timing = {"list_s": time.perf_counter() - t}
    with ThreadPoolExecutor(1) as pool:
        planned = pool.submit(_timed, plan_survey, cfg.input, cfg.rows_per_unit, 8, stamps,
                              bands)
        t = time.perf_counter()
        # a survey that may be scored in this process does not start Ray (plan_run starts it
        # when the footers show more rows than that engine takes)
        if (stamps and not inprocess.use_local(cfg, inprocess.rows_at_least(stamps), cluster)
                and (cluster or not fingerprint.has_output(cfg.output))):
            runtime.ensure_ray(warm_hook=WARM_HOOK)
        timing["ray_s"] = time.perf_counter() - t
        survey, timing["plan_s"] = planned.result()
    return survey, {k: round(v, 3) for k, v in timing.items()}


def _timed(fn, *args):
    t = time.perf_counter()
    return fn(*args), time.perf_counter() - t
