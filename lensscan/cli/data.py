"""Commands that make data to try lensscan on: ``demo``, ``simulate``, ``mosaic`` and
``import-npy``."""

from __future__ import annotations

import json
import sys

from lensscan.cli.options import number
from lensscan.config import MAX_ROWS
from lensscan.errors import printable


def _demo(a) -> None:
    from lensscan.demo import run_demo

    run_demo(a.workdir, lenses=a.lenses, nonlenses=a.nonlenses, model=a.model,
             gallery=not a.no_gallery)


def _simulate(a) -> None:
    from lensscan.io.shards import claim_survey_folder
    from lensscan.simulate.population import preset, with_families, with_theta_e
    from lensscan.simulate.survey import SurveySpec, check_size, simulate_survey

    # every option checked before --overwrite removes the survey this one would replace
    conditions, population = preset(a.preset)
    population = with_theta_e(with_families(population, a.family or []), a.theta_e)
    spec = SurveySpec(a.lenses, a.nonlenses, seed=a.seed, test_fraction=a.test_fraction,
                      population=population, conditions=conditions)
    check_size(spec.total, a.shard_size)
    removed = claim_survey_folder(a.out, a.overwrite)
    if removed:
        print(f"--overwrite: removed {removed} shards of the earlier survey in {a.out}",
              file=sys.stderr)
    print(json.dumps(simulate_survey(a.out, spec, a.format, a.shard_size, a.workers)))


def _mosaic(a) -> None:
    from lensscan.simulate.mosaic import kind_mosaic

    print(kind_mosaic(a.out, per_kind=a.per_kind, seed=a.seed))


def _import_npy(a) -> None:
    from lensscan.io.npy import import_npy
    from lensscan.io.shards import claim_survey_folder
    from lensscan.io.storage import inside

    if inside(a.src, a.out):
        raise ValueError(f"{a.src}: the input lies inside OUT {a.out}, whose shards "
                         "(--overwrite removes them) would include it; pick another OUT")
    removed = claim_survey_folder(a.out, a.overwrite)
    if removed:
        print(f"--overwrite: removed {removed} shards of the earlier import in {a.out}",
              file=sys.stderr)

    def warn(err) -> None:  # on a line of its own, not after the progress bar's
        from tqdm import tqdm

        tqdm.write(printable(f"skipped {err}"), file=sys.stderr)

    def note(line: str) -> None:
        print(printable(f"import-npy: {line}"), file=sys.stderr)

    print(json.dumps(import_npy(a.src, a.out, a.shard_size, on_error=warn if a.skip_bad else None,
                                on_note=note)))


def add_demo(sub) -> None:
    """``lensscan demo``: the whole loop on a small simulated survey."""
    p = sub.add_parser("demo", help="simulate a small survey, score it, query, gallery")
    p.add_argument("--workdir", default="lensscan-demo")
    p.add_argument("--lenses", type=number(int, low=0, high=MAX_ROWS), default=30)
    p.add_argument("--nonlenses", type=number(int, low=0, high=MAX_ROWS), default=2970)
    p.add_argument("--model", default="default")
    p.add_argument("--no-gallery", action="store_true")
    p.set_defaults(fn=_demo)


def add_simulate(sub) -> None:
    """``lensscan simulate``: a mock survey with known truth."""
    p = sub.add_parser("simulate", help="write a mock survey with known truth")
    p.add_argument("out")
    p.add_argument("--lenses", type=number(int, low=0, high=MAX_ROWS), required=True)
    p.add_argument("--nonlenses", type=number(int, low=0, high=MAX_ROWS), required=True)
    p.add_argument("--seed", type=number(int, low=0), default=0)
    p.add_argument("--format", choices=["parquet", "fits", "npy"], default="parquet")
    p.add_argument("--shard-size", type=number(int, low=1), default=1000)
    p.add_argument("--test-fraction", type=number(float, low=0, high=1), default=0.2)
    p.add_argument("--preset", choices=["hsc", "broad"], default="hsc",
                   help="survey conditions and population: HSC Wide (default) or the broader "
                        "training prior")
    p.add_argument("--family", action="append", metavar="CHOICE=FAMILY",
                   help="render every object's CHOICE (psf, noise, background, neighbours, "
                        "source, deflector, mass) with FAMILY only; repeatable")
    p.add_argument("--theta-e", metavar="LO,HI",
                   help="draw every Einstein radius (and the deflector it sizes, lens or not) "
                        "log-uniform in LO..HI arcsec instead of the preset's range")
    p.add_argument("--workers", type=number(int, low=1), help="processes (default: all cores)")
    p.add_argument("--overwrite", action="store_true",
                   help="OUT already holds shards: remove them first instead of refusing")
    p.set_defaults(fn=_simulate)


def add_mosaic(sub) -> None:
    """``lensscan mosaic``: a PNG of every simulated object kind."""
    p = sub.add_parser("mosaic", help="PNG mosaic of every simulated object kind")
    p.add_argument("out")
    p.add_argument("--per-kind", type=number(int, low=1, high=100), default=8)
    p.add_argument("--seed", type=number(int, low=0), default=0)
    p.set_defaults(fn=_mosaic)


def add_import_npy(sub) -> None:
    """``lensscan import-npy``: DeepLense's layout of .npy files as Parquet shards."""
    p = sub.add_parser("import-npy", help="DeepLense .npy layout -> Parquet shards")
    p.add_argument("src")
    p.add_argument("out")
    p.add_argument("--shard-size", type=number(int, low=1), default=4096)
    p.add_argument("--skip-bad", action="store_true", help="report unreadable files and go on")
    p.add_argument("--overwrite", action="store_true",
                   help="OUT holds shards: remove them first instead of refusing")
    p.set_defaults(fn=_import_npy)
