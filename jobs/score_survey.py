"""Score a survey's cutouts with the ensemble and write scores, candidates and a manifest.

Local Ray (a laptop)::

    python jobs/score_survey.py --input lensscan-demo/survey --output lensscan-demo/run

A running cluster::

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/score_survey.py --input s3://survey/cutouts/ --output s3://survey/lenses/run1/

Takes the same options as ``lensscan score`` (both are generated from
:class:`lensscan.config.ScoreConfig`; its positionals are ``--input`` and ``--output`` here),
scores through the same code and reports the same lines. Rerun the same command after an
interruption: the committed units are kept and the rest is scored. Exit status 0 when done, 2
when refused (bad input, another run in the output without ``--overwrite``, a live writer), 3 when
storage failed (rerun to resume); the reason is one line on stderr. Under ``ray job submit``
secrets reach the job through the nodes' own credential chain (instance profile, service
account), never ``--runtime-env-json``: Ray logs runtime envs on every node. Settings that are
not secret (``AWS_ENDPOINT_URL``, a region) may go in its ``env_vars``; the driver adds no
environment of its own.
"""

from __future__ import annotations

import argparse
import sys

from lensscan.cli.exits import run_command
from lensscan.cli.options import add_options
from lensscan.cli.scoring import score
from lensscan.config import ScoreConfig


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_options(ap, ScoreConfig)  # --input and --output: required options
    return ap


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    return parser().parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Score as ``lensscan score`` does; returns its exit status."""
    return run_command("score", score, parse(argv))


if __name__ == "__main__":
    sys.exit(main())
