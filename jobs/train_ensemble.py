"""Train the members of an ensemble with Ray Train and fit their weights on validation data.

Local Ray::

    python jobs/train_ensemble.py --train data/train --val data/val --out models/ens

On a cluster::

    ray job submit --working-dir . -- python jobs/train_ensemble.py \
        --train s3://bucket/sims/train/ --val s3://bucket/sims/val/ \
        --out s3://bucket/models/ens1/ --workers 4 --gpu

Fine-tuning on graded candidates (the gallery's CSVs), starting from the bundled ensemble; the
weights are refitted on the graded validation fold::

    python jobs/train_ensemble.py --train survey/ --labels alice.csv --labels bob.csv \
        --init-from default --out models/ens-graded --lr 3e-4 --epochs 4

``--refit-only`` keeps the members of ``--init-from`` as they are and refits only the weights
(and, with ``--val``, the calibration of p_lens). To add a calibration to an ensemble without
touching its weights, use ``lensscan calibrate MODEL VAL``.

The members' options (``--epochs``, ``--lr``, ``--labels``, ...) are generated from
:class:`lensscan.config.TrainConfig`, as ``lensscan train``'s are; the schedule's defaults are the
ensemble's (:data:`lensscan.train.recipes.ENSEMBLE_SCHEDULE`: 8 epochs of 200 steps).

Rerunning the same command after an interruption keeps finished members and resumes the member
in progress from its last checkpoint.
"""

from __future__ import annotations

import argparse
import json
import sys

from lensscan.cli.exits import run_command
from lensscan.cli.options import add_options, values
from lensscan.config import TrainConfig
from lensscan.models.calibration import DEFAULT_PRIOR, check_prior
from lensscan.train.recipes import (
    BASELINE_MEMBER,
    DEFAULT_MEMBERS,
    ENSEMBLE_SCHEDULE,
    train_ensemble,
)

#: The settings of :class:`~lensscan.config.TrainConfig` that the job gives every member (the
#: others are the recipe's or the ensemble's).
MEMBER_OPTIONS = ("labels", "grade_c", "epochs", "steps_per_epoch", "batch_size", "lr",
                  "precision", "workers", "gpu")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", required=True, help="URL of labelled training shards")
    ap.add_argument("--val", help="URL of labelled validation shards (with --labels: default "
                    "the graded rows of a tenth of --train, by object_id hash)")
    ap.add_argument("--out", required=True, help="URL of the ensemble folder to write")
    add_options(ap, TrainConfig, only=MEMBER_OPTIONS, defaults=ENSEMBLE_SCHEDULE,
                why="the ensemble's schedule")
    ap.add_argument("--refit-only", action="store_true",
                    help="keep the members of --init-from and refit only the ensemble weights")
    ap.add_argument("--prior", type=float, default=DEFAULT_PRIOR, metavar="P",
                    help="prevalence of lenses that scoring calibrates p_lens to by default "
                         "(stored in the card's calibration, fitted on --val; default %(default)g)")
    ap.add_argument("--init-from", metavar="ENSEMBLE",
                    help="start each member from its namesake in this ensemble ('default': "
                         "the bundled one) (fine-tuning)")
    ap.add_argument("--baseline", action="store_true",
                    help="train the original project's CNN recipe instead of the ensemble")
    ap.add_argument("--residual", action="store_true",
                    help="members also see each band less its annulus medians (the galaxy's "
                         "round part; lensscan.models.residual); members of --init-from without "
                         "them start with those weights at zero")
    a = ap.parse_args(argv)
    if not a.val and not a.labels:
        ap.error("--val is required without --labels")
    if a.residual and (a.baseline or a.refit_only):
        ap.error("--residual trains the ensemble's members: not with --baseline (the original "
                 "CNN) or --refit-only (which trains nothing)")
    return a


def with_residual(members: dict[str, dict]) -> dict[str, dict]:
    """The recipe ``members`` with the residual input channels in every member."""
    return {name: {**spec, "arch_kwargs": {**spec.get("arch_kwargs", {}), "residual": True}}
            for name, spec in members.items()}


def run(a: argparse.Namespace) -> None:
    members = BASELINE_MEMBER if a.baseline else DEFAULT_MEMBERS
    if a.residual:
        members = with_residual(members)
    card = train_ensemble(a.train, a.val, a.out, members, init_from=a.init_from,
                          refit_only=a.refit_only, prior=check_prior(a.prior),
                          **values(TrainConfig, a, MEMBER_OPTIONS))
    print(json.dumps(card.metrics["validation"], indent=2))


def main(argv: list[str] | None = None) -> int:
    """Train and fit as above; returns the exit status (2: refused, one line on stderr)."""
    return run_command("train_ensemble", run, parse(argv))


if __name__ == "__main__":
    sys.exit(main())
