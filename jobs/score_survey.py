"""Score a survey's cutouts with the ensemble and write scores, candidates and a manifest.

Local Ray (a laptop)::

    python jobs/score_survey.py --input lensscan-demo/survey --output lensscan-demo/run

A running cluster::

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/score_survey.py --input s3://survey/cutouts/ --output s3://survey/lenses/run1/

Takes the same options as ``lensscan score``. Rerun the same command after an interruption: the
committed units are kept and the rest is scored. Exit status 0 when done, 2 when refused (bad
input, another run in the output without ``--overwrite``, a live writer), 3 when storage failed
(rerun to resume); the reason is one line on stderr. Under ``ray job submit`` credentials reach
the job through the cluster's own chain or ``--runtime-env-json '{"env_vars": {...}}'``; the
driver adds no environment of its own.
"""

from __future__ import annotations

import argparse
import sys

from lensscan.cli import add_score_args, main


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--input", required=True, help="URL of the cutout shards")
    ap.add_argument("--output", required=True, help="URL of the output folder")
    add_score_args(ap)
    return ap.parse_args(argv)


def cli_argv(a: argparse.Namespace) -> list[str]:
    """The ``lensscan score`` arguments of the parsed job options."""
    argv = ["score", a.input, a.output, "--model", a.model, "--rows-per-unit",
            str(a.rows_per_unit), "--precision", a.precision]
    if a.batch_size is not None:
        argv += ["--batch-size", str(a.batch_size)]
    if a.threshold is not None:
        argv += ["--threshold", str(a.threshold)]
    if a.top is not None:
        argv += ["--top", str(a.top)]
    if a.actors is not None:
        argv += ["--actors", str(a.actors)]
    if a.read_tasks is not None:
        argv += ["--read-tasks", str(a.read_tasks)]
    if a.object_store_mb is not None:
        argv += ["--object-store-mb", str(a.object_store_mb)]
    if a.prior is not None:
        argv += ["--prior", repr(a.prior)]
    if a.overwrite:
        argv += ["--overwrite"]
    if a.tta:
        argv += ["--tta"]
    if a.compile:
        argv += ["--compile"]
    return argv


if __name__ == "__main__":
    sys.exit(main(cli_argv(parse())))
