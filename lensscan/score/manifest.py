"""The last stage of a scoring run: ``_manifest.json``, whose presence says that the output is
complete (counts, model, timings, resources, the cut, and what ``p_lens`` expects of the
ranked list)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from lensscan import __version__
from lensscan.config import ScoreConfig
from lensscan.io import storage
from lensscan.modelcard import ModelInfo
from lensscan.models import calibration
from lensscan.score import commit, expected
from lensscan.score.arithmetic import committed_arithmetic
from lensscan.score.plan import RunPlan
from lensscan.score.stream import Streamed


def now() -> str:
    """The time, as the manifest writes it (UTC, seconds)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def build_manifest(cfg: ScoreConfig, info: ModelInfo, plan: RunPlan, streamed: Streamed,
                   counts: dict, started: str, t0: float,
                   cal: calibration.Calibration | None, prior_from: str) -> dict:
    """The manifest of a finished run that started at ``started`` (``t0``: ``time.time()``),
    scoring with calibration ``cal`` at the prior ``cfg.prior`` (named by ``prior_from``)."""
    expect = (expected.expected_lenses(cfg.output, plan.parts, counts["candidates"])
              if cfg.prior is not None else None)
    elapsed, done, first = time.time() - t0, streamed.committed, streamed.first_commit
    return {
        "lensscan_version": __version__,
        "input": cfg.input,
        "output": cfg.output,
        "model": {"url": cfg.model, "name": info.card.name, "checksum": info.checksum,
                  "members": info.member_names, "tta": cfg.tta,
                  # what the scores were computed in (fp32, fp16, bf16; one per output)
                  "arithmetic": streamed.arithmetic or arithmetic_of(cfg.output, plan.parts)},
        "ids_as_strings": plan.survey.ids_as_strings,
        "counts": {**counts, "shards_unreadable": len(plan.unreadable),
                   "rows_committed_this_run": done,
                   "rows_scored_this_run": streamed.scored},
        "unreadable_shards": plan.unreadable,
        "finished": now(),
        "seconds": round(elapsed, 3),
        "throughput_rows_per_s": round(done / elapsed, 1) if elapsed > 0 else None,
        # start-up (Ray, planning, actor start, the first unit) and the rate once rows flow
        "seconds_to_first_commit": round(first[0], 3) if first else None,
        "steady_rows_per_s": steady(first, done, elapsed),
        "resources": streamed.resources_report(),
        "startup": plan.startup,
        "started": started,
        "fingerprint": plan.record.fingerprint,
        "threshold": plan.record.threshold,
        "top": cfg.top,
        "prior": cfg.prior,
        "p_lens": p_lens_report(cal, cfg.prior, prior_from, expect),
    }


def arithmetic_of(out: str, parts: list[str]) -> list[str]:
    """What the committed ``parts`` computed in, for a run that scored none itself."""
    done = commit.committed_units(out).intersection(parts)
    return sorted(committed_arithmetic(out, done)) if done else []


def write_manifest(cfg: ScoreConfig, manifest: dict) -> None:
    """Write ``manifest``: the output is complete."""
    commit.write_json(storage.join(cfg.output, commit.MANIFEST), manifest)


def steady(first: tuple[float, int] | None, scored: int, elapsed: float) -> float | None:
    """Rows/s after the first committed unit (None when too few units to tell)."""
    if first is None or scored <= first[1] or elapsed <= first[0]:
        return None
    return round((scored - first[1]) / (elapsed - first[0]), 1)


def p_lens_report(cal: calibration.Calibration | None, prior: float | None, prior_from: str,
                  expect: dict | None) -> dict:
    """The manifest's ``p_lens`` entry: the calibration and prior used and what the ranked
    list holds in expectation, or why ``p_lens`` is null."""
    if cal is None:
        return {"calibrated": False,
                "reason": "the model card has no calibration, so p_lens is null; add one from "
                          "validation data with lensscan calibrate MODEL VAL"}
    return {"calibrated": True, "prior": prior, "prior_from": prior_from,
            "calibration": cal.to_dict(), **(expect or {})}
