"""The commit stage of a scoring run, once the stream has committed its units: the rows of the
shards rejected at planning, the list of unreadable shards, duplicate ids across shards and
the ranked candidates (:func:`lensscan.score.commit.finalize`)."""

from __future__ import annotations

from collections.abc import Callable

from lensscan.config import ScoreConfig
from lensscan.errors import NothingReadableError
from lensscan.io import storage
from lensscan.score import commit
from lensscan.score.plan import RunPlan


def commit_run(cfg: ScoreConfig, plan: RunPlan, threshold: float, columns: list[str],
               guard: Callable[[], None] = lambda: None) -> dict:
    """Commit what the stream does not into ``cfg.output`` and finalize it; returns the counts
    (:func:`lensscan.score.commit.finalize`). ``guard`` is called before each write (it
    raises when the output's lease is lost or about to expire).

    Raises
    ------
    NothingReadableError
        When no input row could be read (every shard unreadable).
    """
    for key, (unit, reason) in plan.rejected.items():
        if key not in plan.done:
            guard()
            commit.write_rejected(cfg.output, key, unit.url, unit.rows, reason, columns,
                                  plan.survey.string_ids)
    counts = commit.finalize(cfg.output, plan.parts, threshold, cfg.top, guard)
    plan.unreadable = unreadable_shards(plan, counts.pop("unreadable_parts"))
    if plan.unreadable:
        guard()
        commit.write_json(storage.join(cfg.output, commit.QUARANTINE),
                          {"shards": plan.unreadable})
    if counts["rows_read"] - counts["rows_unreadable"] == 0:
        raise NothingReadableError(nothing_read(cfg, plan, counts))
    return counts


def unreadable_shards(plan: RunPlan, parts: list[dict] = ()) -> list[dict]:
    """The shards that could not be opened, with their reasons and rows (when known), then
    those of ``parts`` (:func:`lensscan.score.commit.finalize`'s ``unreadable_parts``) that
    opened but whose bytes failed when a unit was read."""
    out = [{"shard": e.url, "reason": e.reason, "rows": e.rows} for e in plan.survey.rejected]
    known = {e["shard"] for e in out}
    return out + [p for p in parts if p["shard"] not in known]


def nothing_read(cfg: ScoreConfig, plan: RunPlan, counts: dict) -> str:
    """The one-line reason of a run that could read no row."""
    bad = plan.unreadable
    if not bad and not counts["rows_read"]:
        return f"{cfg.input}: the shards hold no rows"
    first = "; ".join(f"{e['shard']}: {e['reason']}" for e in bad[:3])
    more = f" (first reasons: {first})" if first else ""
    return (f"{cfg.input}: no row could be read: {len(bad)} of "
            f"{len(plan.survey.stamps)} shards unreadable, {counts['rows_unreadable']} rows "
            f"quarantined{more}; see {storage.join(cfg.output, commit.QUARANTINE)} and "
            f"{storage.join(cfg.output, commit.SCORES)}")
