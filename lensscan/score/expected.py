"""What a survey can expect of its ranked list: the number of real lenses and the purity in the
top N, as sums of the calibrated ``p_lens`` (:mod:`lensscan.models.calibration`).

If each row is a lens with probability ``p_lens``, independently, the number of lenses among N
rows has mean ``sum(p_lens)`` and variance ``sum(p_lens (1 - p_lens))``; the expected purity is
that mean over N. Rows are ranked as in ``candidates.parquet`` (score descending, then
object_id), so the top N here are the catalogue's first N rows.
"""

from __future__ import annotations

import math

import numpy as np

from lensscan import duck
from lensscan.score import commit

#: The list lengths the manifest reports (those up to the rows scored), besides the candidates.
TOP_N = (10, 100, 1000)


def summary(p: np.ndarray) -> dict:
    """Expected lenses (with its standard deviation) and purity of the rows with
    probabilities ``p`` (nulls as NaN are left out)."""
    p = np.asarray(p, np.float64)
    p = p[np.isfinite(p)]
    n, mean = len(p), float(p.sum())
    return {"n": n, "expected_lenses": round(mean, 4),
            "expected_lenses_sd": round(math.sqrt(float((p * (1 - p)).sum())), 4),
            "expected_purity": round(mean / n, 6) if n else None}


def expected_lenses(out: str, keys: list[str], candidates: int) -> dict:
    """Expected lenses and purity in the top N (:data:`TOP_N`, at most the rows scored), in the
    ``candidates`` rows of the catalogue and among every scored row, from the committed parts
    ``keys`` of ``out``."""
    files = [commit.part_url(out, k) for k in keys]
    con = duck.connect(out)
    src = f"read_parquet([{', '.join(duck.sql_path(f) for f in files)}], union_by_name=true)"
    ok = duck.SCORED
    n_ok, total = con.execute(f"SELECT count(*), sum(p_lens) FROM {src} WHERE {ok}").fetchone()
    ns = sorted({n for n in (*TOP_N, candidates) if 0 < n <= n_ok})
    best = con.execute(f"SELECT p_lens FROM {src} WHERE {ok} ORDER BY {duck.RANK_ORDER} "
                       f"LIMIT {int(max(ns, default=0))}").fetchnumpy()["p_lens"]
    p = np.asarray(best, np.float64)  # DuckDB hands NULLs back masked; none are expected
    scored = con.execute(f"SELECT sum(p_lens * (1 - p_lens)) FROM {src} WHERE {ok}").fetchone()
    return {
        "top_n": [summary(p[:n]) for n in ns if n in TOP_N],
        "candidates": summary(p[:candidates]),
        "scored": {"n": int(n_ok), "expected_lenses": round(float(total or 0.0), 4),
                   "expected_lenses_sd": round(math.sqrt(float(scored[0] or 0.0)), 4)},
    }
