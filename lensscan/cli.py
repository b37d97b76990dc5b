"""The ``lensscan`` command line: parse arguments, build a config, call one library function."""

from __future__ import annotations

import argparse
import json
import sys
import warnings

from lensscan import __version__
from lensscan.cli_survey import add_survey_commands
from lensscan.errors import LensscanError, StorageError

#: Exit statuses (README, "Exit status").
EXIT_OK, EXIT_REFUSED, EXIT_STORAGE = 0, 2, 3


def _demo(a) -> None:
    from lensscan.demo import run_demo

    run_demo(a.workdir, lenses=a.lenses, nonlenses=a.nonlenses, model=a.model,
             gallery=not a.no_gallery)


def _simulate(a) -> None:
    from lensscan.io.shards import claim_survey_folder
    from lensscan.simulate.population import preset, with_families
    from lensscan.simulate.survey import SurveySpec, simulate_survey

    removed = claim_survey_folder(a.out, a.overwrite)
    if removed:
        print(f"--overwrite: removed {removed} shards of the earlier survey in {a.out}",
              file=sys.stderr)
    conditions, population = preset(a.preset)
    population = with_families(population, a.family or [])
    spec = SurveySpec(a.lenses, a.nonlenses, seed=a.seed, test_fraction=a.test_fraction,
                      population=population, conditions=conditions)
    print(json.dumps(simulate_survey(a.out, spec, a.format, a.shard_size, a.workers)))


def _mosaic(a) -> None:
    from lensscan.simulate.mosaic import kind_mosaic

    print(kind_mosaic(a.out, per_kind=a.per_kind, seed=a.seed))


def _import_npy(a) -> None:
    from lensscan.io.npy import import_npy

    def warn(err) -> None:
        print(f"skipped {err}", file=sys.stderr)

    print(json.dumps(import_npy(a.src, a.out, a.shard_size, on_error=warn if a.skip_bad else None)))


def _train(a) -> None:
    from lensscan.config import TrainConfig
    from lensscan.models import list_models
    from lensscan.train.trainer import train

    if a.arch not in list_models():  # before Ray starts: a typo costs nothing
        raise ValueError(f"--arch {a.arch!r}: unknown architecture; choose one of "
                         f"{', '.join(list_models())}")

    cfg = TrainConfig(data=a.data, out=a.out, val=a.val, arch=a.arch, epochs=a.epochs,
                      steps_per_epoch=a.steps_per_epoch, batch_size=a.batch_size, lr=a.lr,
                      loss=a.loss, seed=a.seed, workers=a.workers, gpu=a.gpu,
                      storage=a.storage, max_rows=a.max_rows, name=a.name,
                      patience=a.patience, init=a.init, precision=a.precision,
                      exclude=a.exclude or [], labels=a.labels or [], grade_c=a.grade_c,
                      keep_labels=a.keep_labels, lr_batch=a.lr_batch)
    card = train(cfg)
    if "grades" in card.training:
        from lensscan.data.grades import describe

        print(describe(card.training["grades"]))
    print(json.dumps(card.metrics["validation"], indent=2))


def _evaluate(a) -> None:
    from lensscan.train.evaluate import evaluate

    also = dict(item.split("=", 1) for item in a.also)
    report = evaluate(a.model, a.data, a.out, also=also, tta=a.tta)
    e = report["ensemble"]
    print(json.dumps({k: e[k] for k in ("roc_auc", "average_precision", "recall_at_fpr_1e-3",
                                        "precision", "recall", "f1")}, indent=2))


def _calibrate(a) -> None:
    from lensscan.train.calibrate import calibrate_model

    print(json.dumps(calibrate_model(a.model, a.val, a.prior), indent=2))


def _score(a) -> None:
    from lensscan.config import ScoreConfig
    from lensscan.score.pipeline import score_survey

    cfg = ScoreConfig(input=a.input, output=a.output, model=a.model, threshold=a.threshold,
                      top=a.top, batch_size=a.batch_size, actors=a.actors,
                      rows_per_unit=a.rows_per_unit, read_tasks=a.read_tasks,
                      object_store_mb=a.object_store_mb, overwrite=a.overwrite,
                      tta=a.tta, precision=a.precision, compile=a.compile, prior=a.prior)
    m = score_survey(cfg)
    bad = m["unreadable_shards"]
    for e in bad[:5]:
        print(f"lensscan score: unreadable shard {e['shard']}: {e['reason']}", file=sys.stderr)
    if len(bad) > 5:
        print(f"lensscan score: ... and {len(bad) - 5} more unreadable shards, see "
              f"{a.output}/_quarantine.json", file=sys.stderr)
    c = m["counts"]
    print(f"scored {c['rows_scored']} of {c['rows_read']} rows ({c['rows_quarantined']} "
          f"quarantined, {c['shards_unreadable']} unreadable shards), {c['candidates']} "
          f"candidates, {m['throughput_rows_per_s']} rows/s -> {a.output}")
    p = m["p_lens"]
    if p["calibrated"]:
        e = p["candidates"]
        purity = f" (expected purity {e['expected_purity']:.3g})" if e["n"] else ""
        print(f"p_lens at prior {p['prior']:g}: {e['expected_lenses']:.3g} +- "
              f"{e['expected_lenses_sd']:.2g} real lenses expected among the {e['n']} "
              f"candidates{purity}, {p['scored']['expected_lenses']:.3g} among all "
              f"{p['scored']['n']} scored rows")


def _query(a) -> None:
    from lensscan.catalog import formats
    from lensscan.catalog.provenance import provenance
    from lensscan.catalog.query import Cone, expected_in, query, run_prior

    if a.truth:
        from lensscan.catalog.truth import read_truth, recovery

        table, summary = recovery(a.out, read_truth(a.truth, a.truth_cols), top=a.top,
                                  radius_arcsec=a.match_radius)
        print(json.dumps(summary), file=sys.stderr)
    else:
        cone = Cone(*a.cone) if a.cone else None
        columns = [c.strip() for c in a.columns.split(",")] if a.columns else None
        table = query(a.out, top=a.top, min_score=a.min_score, cone=cone, where=a.where,
                      columns=columns, candidates=a.candidates)
        summary = expected_in(table, run_prior(a.out))
        if summary is not None:
            print(json.dumps({"expected": summary}), file=sys.stderr)
    formats.write(formats.with_names(table, a.name_prefix), a.format, a.output,
                  provenance(a.out))


def _gallery(a) -> None:
    from lensscan.catalog.gallery import write_gallery

    print(write_gallery(a.out_dir, a.out, top=a.top, min_score=a.min_score, viewer=a.viewer))


def _bench(a) -> None:
    from lensscan.bench import read_speed, report, run_bench

    if a.read_only:
        import tempfile

        print(json.dumps(read_speed(a.n, tempfile.mkdtemp(prefix="lensscan-read-"), a.cold)))
        return
    res = run_bench(n=a.n, model=a.model, batch=a.batch_size, plain_n=a.plain_n, s3=not a.no_s3,
                    scaling=a.scaling, pairs=a.pairs, cold=not a.no_cold_start)
    print(json.dumps(res) if a.json else report(res))


def add_score_args(p: argparse.ArgumentParser) -> None:
    """Arguments shared by ``lensscan score`` and ``jobs/score_survey.py``."""
    p.add_argument("--model", default="default", help="model folder URL or 'default'")
    cut = p.add_mutually_exclusive_group()
    cut.add_argument("--threshold", type=float, help="candidate score cut (default: model's)")
    cut.add_argument("--top", type=int, help="keep the N best as candidates")
    p.add_argument("--batch-size", type=int,
                   help="cutouts per model call (default: 512 on CPU, 8192 on a GPU)")
    p.add_argument("--actors", type=int,
                   help="scoring actors (default: one per GPU, else one per CPU, at most 8)")
    p.add_argument("--rows-per-unit", type=int, default=2048,
                   help="rows per work unit, the commit granularity")
    p.add_argument("--read-tasks", type=int,
                   help="concurrent read/preprocess tasks (default: 4 per CPU the actors leave)")
    p.add_argument("--object-store-mb", type=float,
                   help="object-store memory for blocks in flight (default: sized from the "
                        "read tasks, actors and block size)")
    p.add_argument("--tta", action="store_true",
                   help="test-time augmentation: average every member over the 8 flips and "
                        "rotations of each cutout (8x the model's cost)")
    p.add_argument("--precision", choices=["auto", "fp32", "fp16", "bf16"], default="auto",
                   help="autocast of the model: auto is fp16 on GPUs and fp32 on CPU")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the ensemble on GPU actors (compiled once per node and "
                        "cached; pays on long runs, when the GPU is the bottleneck)")
    p.add_argument("--prior", type=float, metavar="P",
                   help="prevalence of lenses (e.g. 1e-4) that p_lens is calibrated to (default: "
                        "the model card's calibration prior); refused for a model without "
                        "calibration")
    p.add_argument("--overwrite", action="store_true",
                   help="the output holds another run (other input, model, cut or prior): clear "
                        "it and score anew instead of refusing")


def _add_train(sub) -> None:
    """``lensscan train``: one member with Ray Train, from labels or grades."""
    p = sub.add_parser("train", help="train one model with Ray Train")
    p.add_argument("data")
    p.add_argument("--out", required=True)
    p.add_argument("--val")
    p.add_argument("--arch", default="resnet")
    p.add_argument("--name")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--steps-per-epoch", type=int)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--lr-batch", type=int, metavar="B",
                   help="the batch size --lr is tuned for: the peak learning rate is scaled by "
                        "sqrt(batch-size / B) (larger GPU batches, e.g. --batch-size 512 "
                        "--lr-batch 128)")
    p.add_argument("--loss", choices=["focal", "bce"], default="focal")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--gpu", action="store_true")
    p.add_argument("--storage", help="checkpoint root URL (default: OUT/_train)")
    p.add_argument("--max-rows", type=int)
    p.add_argument("--patience", type=int, default=4,
                   help="stop after this many epochs without a better validation AUC "
                        "(counted from the schedule's second half)")
    p.add_argument("--init", metavar="MODEL",
                   help="start from this trained member's weights (fine-tuning, fresh schedule); "
                        "'default' or an ensemble: its member of the same --arch")
    p.add_argument("--labels", action="append", metavar="GRADES_CSV",
                   help="graders' CSVs (object_id,grade[,grader,time,score]): train on the graded "
                        "rows of DATA with A/B -> lens, 'not a lens' -> non-lens (grades of "
                        "several CSVs averaged); repeatable")
    p.add_argument("--grade-c", choices=["drop", "lens", "nonlens"], default="drop",
                   help="objects graded C on average: left out (default), lens or non-lens")
    p.add_argument("--keep-labels", action="store_true",
                   help="with --labels: rows nobody graded keep their own label column (e.g. "
                        "lensscan inject's lenses and negatives) instead of being left out; a "
                        "grade overrides a row's label")
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto",
                   help="bf16: bfloat16 autocast; fp32: full precision; auto (default): bf16 "
                        "where the device computes it natively, else fp32")
    p.add_argument("--exclude", action="append", metavar="COLUMN=VALUE",
                   help="leave rows with this column value out of training and validation "
                        "(e.g. psf_family=gaussian to hold a rendering family out); repeatable")
    p.set_defaults(fn=_train)


def _add_calibrate(sub) -> None:
    """``lensscan calibrate``: fit the map from the ensemble logit to p_lens."""
    from lensscan.calibration import DEFAULT_PRIOR

    p = sub.add_parser("calibrate", help="fit p_lens's calibration on labelled validation data "
                                         "and write it into the model's card")
    p.add_argument("model", help="model folder URL or 'default' (its card is rewritten)")
    p.add_argument("val", help="labelled validation shards, drawn as the survey's objects are")
    p.add_argument("--prior", type=float, default=DEFAULT_PRIOR, metavar="P",
                   help="prevalence of lenses that scoring calibrates p_lens to by default "
                        "(default %(default)g)")
    p.set_defaults(fn=_calibrate)


def _add_query(sub) -> None:
    """``lensscan query``: DuckDB over a scoring output, in any format."""
    p = sub.add_parser("query", help="query scoring output")
    p.add_argument("out")
    p.add_argument("--top", type=int)
    p.add_argument("--min-score", type=float)
    p.add_argument("--cone", type=float, nargs=3, metavar=("RA", "DEC", "RADIUS_ARCSEC"))
    p.add_argument("--where", help="one boolean SQL expression over the output's columns, e.g. "
                   "\"ra BETWEEN 150 AND 151 AND score_m0 > 0.5\" (no statements or subqueries)")
    p.add_argument("--candidates", action="store_true", help="query candidates.parquet only")
    p.add_argument("--columns", metavar="A,B,...",
                   help="columns to return, e.g. object_id,ra,dec,score,logit,member_spread,"
                        "p_lens (default: the contract's, member scores and p_lens)")
    p.add_argument("--truth", help="known lenses (CSV/Parquet/FITS/VOTable, or the gallery's "
                   "grades CSV): report each one's rank and the recall/purity in --top")
    p.add_argument("--match-radius", type=float, metavar="ARCSEC",
                   help="with --truth: cross-match by position instead of object_id")
    p.add_argument("--truth-cols", metavar="ID,RA,DEC",
                   help="with --truth: the table's id, RA and Dec columns (default: common "
                        "names such as object_id/objid, RA/RAJ2000, DEC/DEJ2000)")
    p.add_argument("--format", default="table",
                   choices=["table", "csv", "json", "parquet", "fits", "votable"])
    p.add_argument("--output", "-o", help="write to this file instead of stdout")
    p.add_argument("--name-prefix", default="", metavar="ACRONYM",
                   help="put this before the IAU-style name column, e.g. LENSSCAN -> "
                        "'LENSSCAN J095959.81+021200.3' (default: the bare J name)")
    p.set_defaults(fn=_query)


def _add_gallery(sub) -> None:
    """``lensscan gallery``: the HTML page (or PNG mosaic) of the top candidates."""
    p = sub.add_parser("gallery", help="HTML gallery of the top candidates, with grading")
    p.add_argument("out_dir", metavar="OUT")
    p.add_argument("--out", required=True,
                   help="the HTML page to write (a PNG mosaic if it ends in .png)")
    p.add_argument("--top", type=int, default=100)
    p.add_argument("--min-score", type=float)
    p.add_argument("--viewer", metavar="URL_TEMPLATE",
                   help="link every object to an external image viewer: an http(s) URL with "
                        "{ra} and {dec} (decimal degrees), e.g. "
                        "'https://www.legacysurvey.org/viewer?ra={ra}&dec={dec}&zoom=16'")
    p.set_defaults(fn=_gallery)


def _add_simulate(sub) -> None:
    """``lensscan simulate``: a mock survey with known truth."""
    p = sub.add_parser("simulate", help="write a mock survey with known truth")
    p.add_argument("out")
    p.add_argument("--lenses", type=int, required=True)
    p.add_argument("--nonlenses", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--format", choices=["parquet", "fits", "npy"], default="parquet")
    p.add_argument("--shard-size", type=int, default=1000)
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--preset", choices=["hsc", "broad"], default="hsc",
                   help="survey conditions and population: HSC Wide (default) or the broader "
                        "training prior")
    p.add_argument("--family", action="append", metavar="CHOICE=FAMILY",
                   help="render every object's CHOICE (psf, noise, background, neighbours, "
                        "source, deflector, mass) with FAMILY only; repeatable")
    p.add_argument("--workers", type=int, help="processes (default: all cores)")
    p.add_argument("--overwrite", action="store_true",
                   help="OUT already holds shards: remove them first instead of refusing")
    p.set_defaults(fn=_simulate)


def _add_bench(sub) -> None:
    """``lensscan bench``: throughput and memory of scoring."""
    p = sub.add_parser("bench", help="throughput and memory of scoring, printed as ratios")
    p.add_argument("--n", type=int, default=20000, help="cutouts to score")
    p.add_argument("--model", default="default")
    p.add_argument("--batch-size", type=int,
                   help="cutouts per model call (default: 512 on CPU, 8192 on a GPU)")
    p.add_argument("--plain-n", type=int, default=2000, help="files for the plain loop")
    p.add_argument("--pairs", type=int, default=3,
                   help="rounds of model-only and pipeline runs in alternation (ratios: median "
                        "and range)")
    p.add_argument("--no-cold-start", action="store_true",
                   help="skip the first run in a fresh process (Ray start included)")
    p.add_argument("--no-s3", action="store_true", help="skip the S3 (moto) pipeline run")
    p.add_argument("--scaling", action="store_true", help="also score 10x more cutouts")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.add_argument("--read-only", action="store_true",
                   help="only compare Parquet decoding with raw reads of the same bytes")
    p.add_argument("--cold", action="store_true",
                   help="with --read-only: empty the page cache before each pass (root)")
    p.set_defaults(fn=_bench)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="lensscan", description="Find strong lenses in cutouts.")
    ap.add_argument("--version", action="version", version=f"lensscan {__version__}")
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("demo", help="simulate a small survey, score it, query, gallery")
    p.add_argument("--workdir", default="lensscan-demo")
    p.add_argument("--lenses", type=int, default=30)
    p.add_argument("--nonlenses", type=int, default=2970)
    p.add_argument("--model", default="default")
    p.add_argument("--no-gallery", action="store_true")
    p.set_defaults(fn=_demo)

    _add_simulate(sub)

    p = sub.add_parser("mosaic", help="PNG mosaic of every simulated object kind")
    p.add_argument("out")
    p.add_argument("--per-kind", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(fn=_mosaic)

    p = sub.add_parser("import-npy", help="DeepLense .npy layout -> Parquet shards")
    p.add_argument("src")
    p.add_argument("out")
    p.add_argument("--shard-size", type=int, default=4096)
    p.add_argument("--skip-bad", action="store_true", help="report unreadable files and go on")
    p.set_defaults(fn=_import_npy)

    _add_train(sub)

    p = sub.add_parser("evaluate", help="metrics.json and plots of a model on labelled data")
    p.add_argument("model")
    p.add_argument("data")
    p.add_argument("--out", required=True, help="local folder for metrics.json and plots")
    p.add_argument("--also", nargs="*", default=[], metavar="NAME=MODEL",
                   help="other models to compare side by side")
    p.add_argument("--tta", action="store_true",
                   help="average every model over the 8 flips and rotations of each cutout")
    p.set_defaults(fn=_evaluate)

    p = sub.add_parser("score", help="score shards with an ensemble into OUT")
    p.add_argument("input")
    p.add_argument("output")
    add_score_args(p)
    p.set_defaults(fn=_score)

    _add_calibrate(sub)
    _add_query(sub)
    _add_gallery(sub)
    _add_bench(sub)

    add_survey_commands(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status: 0 done, 2 refused or bad input (one line
    naming the file or URL), 3 storage failed under the run (rerun the same command)."""
    args = parser().parse_args(argv)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        try:
            args.fn(args)
            status = EXIT_OK
        except StorageError as exc:
            print(f"lensscan {args.cmd}: error: {exc}", file=sys.stderr)
            status = EXIT_STORAGE
        except (LensscanError, FileNotFoundError, FileExistsError, ValueError, OSError) as exc:
            print(f"lensscan {args.cmd}: error: {exc}", file=sys.stderr)
            status = EXIT_REFUSED
    for w in caught:
        if type(w.message).__name__ == "IncompleteOutputWarning":
            print(f"lensscan {args.cmd}: warning: {w.message}", file=sys.stderr)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    return status


if __name__ == "__main__":
    sys.exit(main())
