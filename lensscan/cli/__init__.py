"""The ``lensscan`` command line: parse arguments, build a config, call one library function.

Each module registers a group of commands: :mod:`~lensscan.cli.data` (demo, simulate, mosaic,
import-npy), :mod:`~lensscan.cli.training` (train, evaluate, calibrate),
:mod:`~lensscan.cli.scoring` (score, bench), :mod:`~lensscan.cli.catalog` (query, gallery) and
:mod:`~lensscan.cli.survey` (cutout, inject). Options that are settings of a config dataclass are
generated from it (:mod:`~lensscan.cli.options`); :func:`~lensscan.cli.exits.run_command` turns
errors into one line and an exit status.
"""

from __future__ import annotations

import argparse

from lensscan import __version__
from lensscan.cli import catalog, data, scoring, survey, training
from lensscan.cli.exits import run_command

#: The commands, in the order ``lensscan --help`` lists them.
COMMANDS = (data.add_demo, data.add_simulate, data.add_mosaic, data.add_import_npy,
            training.add_train, training.add_evaluate, scoring.add_score,
            training.add_calibrate, catalog.add_query, catalog.add_gallery, scoring.add_bench,
            survey.add_cutout, survey.add_inject)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="lensscan", description="Find strong lenses in cutouts.")
    ap.add_argument("--version", action="version", version=f"lensscan {__version__}")
    sub = ap.add_subparsers(dest="cmd", required=True)
    for add in COMMANDS:
        add(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status: 0 done, 2 refused or bad input (one line
    naming the file or URL), 3 storage failed under the run (rerun the same command)."""
    args = parser().parse_args(argv)
    return run_command(args.cmd, args.fn, args)
