"""Commands that score: ``score`` (also ``jobs/score_survey.py``) and ``bench``."""

from __future__ import annotations

import argparse
import json
import sys

from lensscan.cli.options import add_options, from_args, number
from lensscan.config import ScoreConfig


def score(a: argparse.Namespace) -> None:
    """Score the survey the parsed options (:class:`~lensscan.config.ScoreConfig`'s) name and
    report it: unreadable shards on stderr, counts and p_lens's expectation on stdout."""
    from lensscan.errors import RESUME_HINT, RunInterruptedError, printable
    from lensscan.score.pipeline import score_survey

    cfg = from_args(ScoreConfig, a)
    try:
        m = score_survey(cfg)
    except KeyboardInterrupt:  # committed units are whole files; the rest is redone
        raise RunInterruptedError(f"{cfg.output}: the units committed so far are kept; "
                                  f"{RESUME_HINT}") from None
    bad = m["unreadable_shards"]
    for e in bad[:5]:
        print(printable(f"lensscan score: unreadable shard {e['shard']}: {e['reason']}"),
              file=sys.stderr)
    if len(bad) > 5:
        print(f"lensscan score: ... and {len(bad) - 5} more unreadable shards, see "
              f"{cfg.output}/_quarantine.json", file=sys.stderr)
    c = m["counts"]
    print(f"scored {c['rows_scored']} of {c['rows_read']} rows ({c['rows_quarantined']} "
          f"quarantined, {c['shards_unreadable']} unreadable shards), {c['candidates']} "
          f"candidates, {m['throughput_rows_per_s']} rows/s -> {cfg.output}")
    p = m["p_lens"]
    if p["calibrated"]:
        e = p["candidates"]
        purity = f" (expected purity {e['expected_purity']:.3g})" if e["n"] else ""
        print(f"p_lens at prior {p['prior']:g}: {e['expected_lenses']:.3g} +- "
              f"{e['expected_lenses_sd']:.2g} real lenses expected among the {e['n']} "
              f"candidates{purity}, {p['scored']['expected_lenses']:.3g} among all "
              f"{p['scored']['n']} scored rows")


def _bench(a) -> None:
    from lensscan.bench import read_speed, report, run_bench

    if a.read_only:
        import tempfile

        print(json.dumps(read_speed(a.n, tempfile.mkdtemp(prefix="lensscan-read-"), a.cold)))
        return
    res = run_bench(n=a.n, model=a.model, batch=a.batch_size, plain_n=a.plain_n, s3=not a.no_s3,
                    scaling=a.scaling, pairs=a.pairs, cold=not a.no_cold_start)
    print(json.dumps(res) if a.json else report(res))


def add_score(sub) -> None:
    """``lensscan score IN OUT``: its options are :class:`~lensscan.config.ScoreConfig`'s."""
    p = sub.add_parser("score", help="score shards with an ensemble into OUT")
    add_options(p, ScoreConfig, positional=["input", "output"])
    p.set_defaults(fn=score)


def add_bench(sub) -> None:
    """``lensscan bench``: throughput and memory of scoring."""
    p = sub.add_parser("bench", help="throughput and memory of scoring, printed as ratios")
    p.add_argument("--n", type=number(int, low=1), default=20000, help="cutouts to score")
    p.add_argument("--model", default="default")
    p.add_argument("--batch-size", type=number(int, low=1),
                   help="cutouts per model call (default: 512 on CPU, 8192 on a GPU)")
    p.add_argument("--plain-n", type=number(int, low=1), default=2000,
                   help="files for the plain loop")
    p.add_argument("--pairs", type=number(int, low=1), default=3,
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
