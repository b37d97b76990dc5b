"""The survey workflow's commands: ``cutout`` and ``inject``. Their options are
:class:`~lensscan.config.CutoutConfig`'s and :class:`~lensscan.config.InjectConfig`'s."""

from __future__ import annotations

import json
import sys

from lensscan.cli.options import add_options, from_args
from lensscan.config import CutoutConfig, InjectConfig
from lensscan.errors import printable


def _cutout(a) -> None:
    from lensscan.data.cutout import cutout_survey

    summary = cutout_survey(from_args(CutoutConfig, a), progress=False)
    if summary["off_sky"]:
        print(printable(f"lensscan cutout: {summary['off_sky']}"), file=sys.stderr)
    for line in summary["unreadable_tiles"]:
        print(printable(f"lensscan cutout: unreadable tile {line}"), file=sys.stderr)
    print(json.dumps({k: summary[k] for k in ("counts", "tiles", "seconds")}))


def _inject(a) -> None:
    from lensscan.simulate.trainset import inject_survey

    summary = inject_survey(from_args(InjectConfig, a), progress=False)
    print(json.dumps({k: summary[k] for k in ("counts", "seconds")}))


def add_cutout(sub) -> None:
    """``lensscan cutout``: cutouts of catalogue objects from coadd images."""
    p = sub.add_parser("cutout", help="cutouts of catalogue objects from coadd images -> shards")
    add_options(p, CutoutConfig, positional=["catalog", "images"])
    p.set_defaults(fn=_cutout)


def add_inject(sub) -> None:
    """``lensscan inject``: lensed sources painted onto the survey's own galaxies."""
    p = sub.add_parser("inject", help="training set from the survey: lenses painted on real hosts")
    add_options(p, InjectConfig, positional=["survey"])
    p.set_defaults(fn=_inject)
