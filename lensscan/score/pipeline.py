"""Score a survey: plan -> stream -> commit -> manifest.

:mod:`~lensscan.score.plan` lists the input, claims the output for the run and finds the units
left; :mod:`~lensscan.score.stream` reads them in Ray Data tasks, scores them in ensemble actors
and commits each unit's Parquet part atomically once all its rows are in;
:mod:`~lensscan.score.finish` commits the rest (rejected shards, duplicates, candidates) and
:mod:`~lensscan.score.manifest` writes the manifest last. The run holds the output's lease (one
writer at a time) and records its fingerprint there; a rerun of the same run skips committed
units, so an interrupted run ends with every input row exactly once, and a different run into
the same output is refused unless ``overwrite``. On Ray, the driver reads the model's cards,
never its weights (the actors load and check those); the local engine
(:mod:`~lensscan.score.inprocess`) loads them in this process.
"""

from __future__ import annotations

import fnmatch
import time
from dataclasses import replace

from lensscan import modelcard
from lensscan.config import GLOB_CHARS, ScoreConfig
from lensscan.errors import ModelError
from lensscan.io import storage
from lensscan.models import calibration
from lensscan.score import fingerprint, inprocess
from lensscan.score.commit import check_top, committed_units
from lensscan.score.finish import commit_run
from lensscan.score.lease import Lease
from lensscan.score.manifest import build_manifest, now, write_manifest
from lensscan.score.plan import plan_run
from lensscan.score.progress import Progress
from lensscan.score.stream import stream_units


def score_survey(cfg: ScoreConfig) -> dict:
    """Score every row under ``cfg.input`` into ``cfg.output``; returns the manifest.

    Raises
    ------
    OutputError
        When another run holds the output's lease, or the output holds another run and
        ``cfg.overwrite`` is not set.
    ValueError
        When ``cfg.prior`` is given for a model without calibration, or is not in (0, 1); for
        the options :func:`check_cut` refuses; for an unknown engine, or options of Ray's
        actors with ``--engine local``.
    NothingReadableError
        When no input row could be read (every shard unreadable); no manifest is written.
    StorageError
        When storage fails under the run (a rerun resumes it).
    ModelError
        When the model's cards (or, in the actors, its weights) are unusable.
    """
    started, t0 = now(), time.time()
    check_cut(cfg)
    model_url = modelcard.resolve(cfg.model)
    info = modelcard.model_info(model_url)  # the cards only: the actors load the weights
    threshold = float(cfg.threshold if cfg.threshold is not None else info.threshold)
    cal, prior = scoring_prior(cfg.model, info, cfg.prior)
    prior_from = "--prior" if cfg.prior is not None else "model card"
    cfg = replace(cfg, prior=prior)  # the actors calibrate p_lens to the resolved prior
    columns = output_columns(info.member_names)
    local = inprocess.use_local(cfg)  # the options checked before the output is touched
    with (storage.removed_if_left_empty(cfg.output), Lease(cfg.output) as lease,
          Progress(enabled=cfg.progress) as progress):
        progress.begin("listing the input" if local else "listing the input, starting Ray")
        plan = plan_run(cfg, info, threshold, columns, progress.say)
        try:
            streamed = stream_units(cfg, model_url, info.preprocessing, plan.todo,
                                    plan.survey.ids_as_strings, columns, t0, progress,
                                    plan.local, guard=lease.check,  # parts: while ours
                                    committed=plan.done)
        except ModelError:
            release_unused(cfg.output)
            raise
        # the catalog and the manifest are written by the lease's holder only
        counts = commit_run(cfg, plan, threshold, columns, guard=lease.check)
        manifest = build_manifest(cfg, info, plan, streamed, counts, started, t0, cal,
                                  prior_from)
        lease.check()
        write_manifest(cfg, manifest)
    return manifest


def check_cut(cfg: ScoreConfig) -> None:
    """Refuse a candidate cut that cannot select anything meaningful, before the output is
    touched.

    Raises
    ------
    ValueError
        For a threshold outside [0, 1], a ``top`` that is negative or beyond int64,
        ``rows_per_unit`` or ``batch_size`` under 1, or an output inside the folder its input
        reads.
    """
    if cfg.threshold is not None and not 0 <= cfg.threshold <= 1:
        raise ValueError(f"--threshold {cfg.threshold}: must be a score from 0 to 1")
    check_top(cfg.top)
    if cfg.rows_per_unit < 1:
        raise ValueError(f"--rows-per-unit {cfg.rows_per_unit}: must be 1 or more")
    if cfg.batch_size is not None and cfg.batch_size < 1:
        raise ValueError(f"--batch-size {cfg.batch_size}: must be 1 or more")
    folder = input_folder(cfg.input)
    if folder is not None and storage.inside(cfg.output, folder):
        raise ValueError(f"{cfg.output}: the output lies inside the input {cfg.input}, whose "
                         "shards would then include the output's own files; write it elsewhere")
    check_apart(cfg.input, cfg.output, folder)


def check_apart(url: str, out: str, folder: str | None) -> None:
    """Refuse an input among the files the run writes (``OUT/scores``: ``--overwrite`` would
    delete the survey) or a glob of the output's folder that matches them (the run's own
    ``candidates.parquet`` scored as a shard); ``folder`` is :func:`input_folder`'s."""
    where = folder if folder is not None else url[:url.rfind("/")] if "/" in url else "."
    for name in fingerprint.OUTPUTS:
        if storage.inside(where, storage.join(out, name)):
            raise ValueError(f"{url}: the input lies inside {storage.join(out, name)}, which the "
                             "run writes (and --overwrite removes); move the shards elsewhere")
    if folder is None and storage.inside(where, out) and storage.inside(out, where):
        pattern = url[url.rfind("/") + 1:]
        mine = [n for n in fingerprint.OUTPUTS if fnmatch.fnmatchcase(n, pattern)]
        if mine:
            raise ValueError(f"{url}: the glob matches the output's own {mine[0]} in {out}; "
                             "write the output to another folder")


def release_unused(out: str) -> None:
    """A run whose weights failed to load before any unit was committed leaves nothing of its
    own: the output is not left claimed for it (another model may score into it at once)."""
    if not committed_units(out):
        fingerprint.clear(out)


def input_folder(url: str) -> str | None:
    """The folder whose files the input URL can match: the URL itself, or for a glob whose
    pattern reaches into folders (``data/**``, ``data/*/*.parquet``) its fixed part; None for
    a glob of one folder's files, which never matches a folder beside them
    (``data/*.parquet``)."""
    if GLOB_CHARS.isdisjoint(url):
        return url
    head = url[:min(url.index(c) for c in GLOB_CHARS if c in url)]
    if "/" not in url[len(head):] and "**" not in url:
        return None
    return head.rsplit("/", 1)[0] if "/" in head else "."


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
