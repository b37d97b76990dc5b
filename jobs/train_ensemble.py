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

Rerunning the same command after an interruption keeps finished members and resumes the member
in progress from its last checkpoint.
"""

from __future__ import annotations

import argparse
import json

from lensscan.calibration import DEFAULT_PRIOR, check_prior
from lensscan.train.recipes import BASELINE_MEMBER, DEFAULT_MEMBERS, train_ensemble


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", required=True, help="URL of labelled training shards")
    ap.add_argument("--val", help="URL of labelled validation shards (with --labels: default "
                    "the graded rows of a tenth of --train, by object_id hash)")
    ap.add_argument("--labels", action="append", metavar="GRADES_CSV",
                    help="graders' CSVs: train on the graded rows of --train with these labels; "
                         "repeatable (grades are averaged)")
    ap.add_argument("--grade-c", choices=["drop", "lens", "nonlens"], default="drop",
                    help="objects graded C on average: left out (default), lens or non-lens")
    ap.add_argument("--refit-only", action="store_true",
                    help="keep the members of --init-from and refit only the ensemble weights")
    ap.add_argument("--out", required=True, help="URL of the ensemble folder to write")
    ap.add_argument("--prior", type=float, default=DEFAULT_PRIOR, metavar="P",
                    help="prevalence of lenses that scoring calibrates p_lens to by default "
                         "(stored in the card's calibration, fitted on --val; default %(default)g)")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--steps-per-epoch", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    ap.add_argument("--init-from", metavar="ENSEMBLE",
                    help="start each member from its namesake in this ensemble ('default': "
                         "the bundled one) (fine-tuning)")
    ap.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto",
                    help="bf16: bfloat16 autocast; fp32: full precision; auto (default): bf16 "
                         "where the device computes it natively, else fp32")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--gpu", action="store_true")
    ap.add_argument("--baseline", action="store_true",
                    help="train the original project's CNN recipe instead of the ensemble")
    a = ap.parse_args(argv)
    if not a.val and not a.labels:
        ap.error("--val is required without --labels")
    members = BASELINE_MEMBER if a.baseline else DEFAULT_MEMBERS
    card = train_ensemble(a.train, a.val, a.out, members, init_from=a.init_from,
                          refit_only=a.refit_only, lr=a.lr, epochs=a.epochs,
                          steps_per_epoch=a.steps_per_epoch, batch_size=a.batch_size,
                          workers=a.workers, gpu=a.gpu, precision=a.precision,
                          labels=a.labels or [], grade_c=a.grade_c,
                          prior=check_prior(a.prior))
    print(json.dumps(card.metrics["validation"], indent=2))


if __name__ == "__main__":
    main()
