"""Leave-one-family-out robustness matrix: one member per held-out rendering family.

Local Ray::

    python jobs/robustness.py --train data/train --val data/val --test data/pool --out runs/matrix

Each member trains without one family (``--exclude <choice>_family=<family>``) and is scored on
that family's test rows, next to a reference member trained on every family with the same recipe.
Rerunning the same command keeps finished members; the matrix is written to ``OUT/matrix.json``
and printed as Markdown.
"""

from __future__ import annotations

import argparse

from lensscan.train.robustness import families, markdown, robustness_matrix


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", required=True, help="URL of labelled training shards (broad)")
    ap.add_argument("--val", required=True, help="URL of labelled validation shards")
    ap.add_argument("--test", required=True, help="URL of labelled test shards (broad)")
    ap.add_argument("--out", required=True, help="URL of the folder of matrix members")
    ap.add_argument("--choices", nargs="*", help="only these choices (psf, noise, ...)")
    ap.add_argument("--reference-only", action="store_true",
                    help="train and keep only the member trained on every family")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--steps-per-epoch", type=int, default=250)
    ap.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    ap.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    a = ap.parse_args(argv)
    pairs = [] if a.reference_only else families(a.choices)
    cells = robustness_matrix(a.train, a.val, a.test, a.out, pairs,
                              epochs=a.epochs, steps_per_epoch=a.steps_per_epoch, lr=a.lr,
                              precision=a.precision)
    print(markdown(cells))


if __name__ == "__main__":
    main()
