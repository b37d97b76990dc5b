"""Train the members of an ensemble with Ray Train and fit their weights on validation data.

Local Ray::

    python jobs/train_ensemble.py --train data/train --val data/val --out models/ens

On a cluster::

    ray job submit --working-dir . -- python jobs/train_ensemble.py \
        --train s3://bucket/sims/train/ --val s3://bucket/sims/val/ \
        --out s3://bucket/models/ens1/ --workers 4 --gpu

Rerunning the same command after an interruption keeps finished members and resumes the member
in progress from its last checkpoint.
"""

from __future__ import annotations

import argparse
import json

from lensscan.train.recipes import BASELINE_MEMBER, DEFAULT_MEMBERS, train_ensemble


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", required=True, help="URL of labelled training shards")
    ap.add_argument("--val", required=True, help="URL of labelled validation shards")
    ap.add_argument("--out", required=True, help="URL of the ensemble folder to write")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--steps-per-epoch", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    ap.add_argument("--init-from", metavar="ENSEMBLE",
                    help="start each member from its namesake in this ensemble (fine-tuning)")
    ap.add_argument("--precision", choices=["bf16", "fp32"], default="bf16",
                    help="bf16: bfloat16 autocast (CPU and GPU); fp32: full precision")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--gpu", action="store_true")
    ap.add_argument("--baseline", action="store_true",
                    help="train the original project's CNN recipe instead of the ensemble")
    a = ap.parse_args(argv)
    members = BASELINE_MEMBER if a.baseline else DEFAULT_MEMBERS
    card = train_ensemble(a.train, a.val, a.out, members, init_from=a.init_from, lr=a.lr,
                          epochs=a.epochs,
                          steps_per_epoch=a.steps_per_epoch, batch_size=a.batch_size,
                          workers=a.workers, gpu=a.gpu, precision=a.precision)
    print(json.dumps(card["metrics"]["validation"], indent=2))


if __name__ == "__main__":
    main()
