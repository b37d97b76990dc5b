"""Leave-one-family-out robustness matrix: one member per held-out rendering family.

Local Ray::

    python jobs/robustness.py --train data/train --val data/val --tests data/families \
        --out runs/matrix --make-tests --init runs/round4/resnet_s0 --init-saw-hsc

``--make-tests`` first writes the missing test sets: one HSC Wide survey per family, in which that
family renders every object. Each member trains without one family (``--exclude
<choice>_family=<family>``) and is scored on that family's set, next to a reference member
trained on every family with the same recipe. Rerunning the same command keeps finished members
and test sets; the matrix is written to ``OUT/matrix.json`` and printed as Markdown. The members'
options (``--init``, ``--epochs``, ...) are generated from :class:`lensscan.config.TrainConfig`; the
schedule's defaults are the matrix's (:data:`lensscan.train.robustness.MATRIX_SCHEDULE`).
"""

from __future__ import annotations

import argparse
import sys

from lensscan.cli.exits import run_command
from lensscan.cli.options import add_options, number, values
from lensscan.config import MAX_ROWS, TrainConfig
from lensscan.io import storage
from lensscan.simulate.population import ALL_FAMILIES
from lensscan.train.robustness import (
    COMPLETE,
    MATRIX_SCHEDULE,
    families,
    hsc_families,
    make_test_sets,
    markdown,
    robustness_matrix,
    test_set_url,
)

#: The settings of :class:`~lensscan.config.TrainConfig` that the job gives every member.
MEMBER_OPTIONS = ("init", "epochs", "steps_per_epoch", "lr", "precision")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", required=True, help="URL of labelled training shards (broad)")
    ap.add_argument("--val", required=True, help="URL of labelled validation shards")
    ap.add_argument("--tests", required=True, help="URL of the per-family test sets")
    ap.add_argument("--out", required=True, help="URL of the folder of matrix members")
    ap.add_argument("--choices", nargs="*", choices=sorted(ALL_FAMILIES), metavar="CHOICE",
                    help="only these choices (psf, noise, ...)")
    ap.add_argument("--reference-only", action="store_true",
                    help="train and keep only the member trained on every family")
    ap.add_argument("--make-tests", action="store_true", help="write missing test sets first")
    ap.add_argument("--test-lenses", type=number(int, low=1, high=MAX_ROWS), default=200)
    ap.add_argument("--test-nonlenses", type=number(int, low=1, high=MAX_ROWS), default=5000)
    ap.add_argument("--test-seed", type=number(int, low=0), default=30)
    add_options(ap, TrainConfig, only=MEMBER_OPTIONS, defaults=MATRIX_SCHEDULE,
                why="the matrix's schedule")
    ap.add_argument("--init-saw-hsc", action="store_true",
                    help="the --init weights were trained on the hsc preset's families")
    ap.add_argument("--background-jitter", type=number(float, low=0), default=None,
                    metavar="SIGMA", help="train with a smooth residual background of up to this "
                    "many sky sigma (lensscan.data.augment.Augment.background_jitter; default "
                    "its default)")
    return ap.parse_args(argv)


def run(a: argparse.Namespace) -> None:
    pairs = [] if a.reference_only else families(a.choices)
    if a.make_tests:
        make_test_sets(a.tests, pairs, a.test_lenses, a.test_nonlenses, a.test_seed)
    missing = [test_set_url(a.tests, c, f) for c, f in pairs
               if not storage.exists(storage.join(test_set_url(a.tests, c, f), COMPLETE))]
    if missing:  # before hours of training, not after
        raise ValueError(f"{missing[0]}: no complete test set ({len(missing)} of {len(pairs)} "
                         "missing); give --make-tests to write them")
    cells = robustness_matrix(a.train, a.val, a.tests, a.out, pairs,
                              init_saw=hsc_families() if a.init_saw_hsc else None,
                              **values(TrainConfig, a, MEMBER_OPTIONS),
                              **({} if a.background_jitter is None else
                                 {"augment": {"background_jitter": a.background_jitter}}))
    print(markdown(cells))


def main(argv: list[str] | None = None) -> int:
    """Train and score the matrix; returns the exit status (2: refused, one line on stderr)."""
    return run_command("robustness", run, parse(argv))


if __name__ == "__main__":
    sys.exit(main())
