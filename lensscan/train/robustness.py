"""Leave-one-family-out robustness: does a model find lenses drawn by a renderer it never saw?

For every rendering family (:data:`~lensscan.simulate.population.ALL_FAMILIES`), one member is
trained with that family's rows left out of training and validation (``exclude``), then scored on
the test rows of that family only (plus the rows where the choice does not apply, e.g. the
non-lenses for a source family). A reference member trained on every family with the same recipe
is scored on the same rows: the gap between the two is what the held-out renderer costs.

Run it with ``python jobs/robustness.py --train T --val V --test P --out DIR`` (see the README).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from lensscan import modelcard
from lensscan.data.preprocess import Preprocessing
from lensscan.io import storage
from lensscan.simulate.population import ALL_FAMILIES, FAMILY_COLUMNS
from lensscan.train.ensemble import member_config
from lensscan.train.metrics import average_precision, recall_at_fpr, roc_auc
from lensscan.train.predict import member_scores
from lensscan.train.trainer import dataset, train

#: The recipe of every member of the matrix: the bundled ensemble's first member, from scratch.
MATRIX_MEMBER: dict[str, Any] = {"arch": "resnet", "seed": 0, "loss": "focal"}
REFERENCE = "all_families"


@dataclass(frozen=True)
class Cell:
    """One held-out family's figures on its own test rows."""

    choice: str
    family: str
    lenses: int
    nonlenses: int
    auc: float
    ap: float
    recall_1e3: float
    ref_auc: float
    ref_ap: float
    ref_recall_1e3: float


def _metrics(y: np.ndarray, s: np.ndarray) -> tuple[float, float, float]:
    return roc_auc(y, s), average_precision(y, s), recall_at_fpr(y, s, 1e-3)


def family_scores(model_url: str, test: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """Labels, scores and family columns of the test rows, scored by one model."""
    loaded = modelcard.load_model(model_url)
    ds = dataset(test, Preprocessing.from_dict(loaded.preprocessing), "model",
                 keep_extra=("label", *FAMILY_COLUMNS))
    y, s, extra = member_scores(loaded.module, ds, extra=FAMILY_COLUMNS)
    return y, s[:, 0], extra


def held_out_rows(extra: dict, choice: str, family: str) -> np.ndarray:
    """Test rows of ``family`` plus those where ``choice`` does not apply."""
    col = np.asarray(extra[f"{choice}_family"]).astype(str)
    return (col == family) | (col == "none")


def families(choices: list[str] | None = None) -> list[tuple[str, str]]:
    """Every (choice, family) pair, optionally for some choices only."""
    return [(c, f) for c, names in ALL_FAMILIES.items() if not choices or c in choices
            for f in names]


def _member(name: str, train_url: str, val: str, out: str, exclude: list[str],
            common: dict) -> str:
    url = storage.join(out, name)
    if storage.exists(storage.join(url, "card.json")):
        print(f"[lensscan] {name}: already trained, kept", flush=True)
        return url
    t0 = time.time()
    train(member_config(name, train_url, val, out, exclude=exclude,
                        **{**common, **MATRIX_MEMBER}), progress=False)
    print(f"[lensscan] {name}: trained in {time.time() - t0:.0f}s", flush=True)
    return url


def robustness_matrix(train_url: str, val: str, test: str, out: str,
                      pairs: list[tuple[str, str]] | None = None, **common: Any) -> list[Cell]:
    """Train the reference and one member per held-out family (``pairs``; default every family,
    ``[]`` the reference alone) into ``out``; score each on its test rows; write
    ``out/matrix.json``. Finished members are kept, so a rerun resumes."""
    pairs = families() if pairs is None else pairs
    ref_url = _member(REFERENCE, train_url, val, out, [], common)
    y_ref, s_ref, extra = family_scores(ref_url, test)
    cells = []
    for choice, family in pairs:
        url = _member(f"without_{choice}_{family}", train_url, val, out,
                      [f"{choice}_family={family}"], common)
        y, s, ex = family_scores(url, test)
        rows, ref_rows = held_out_rows(ex, choice, family), held_out_rows(extra, choice, family)
        cell = Cell(choice, family, int(y[rows].sum()), int((y[rows] == 0).sum()),
                    *_metrics(y[rows], s[rows]), *_metrics(y_ref[ref_rows], s_ref[ref_rows]))
        cells.append(cell)
        print(f"[lensscan] without {choice}={family}: AUC {cell.auc:.4f} "
              f"(all families {cell.ref_auc:.4f}), recall@1e-3 {cell.recall_1e3:.3f} "
              f"({cell.ref_recall_1e3:.3f})", flush=True)
        storage.write_bytes_atomic(storage.join(out, "matrix.json"), json.dumps(
            [c.__dict__ for c in cells], indent=2).encode())
    return cells


def markdown(cells: list[Cell]) -> str:
    """The matrix as a Markdown table."""
    lines = ["| held-out family | lenses | non-lenses | AUC | AP | recall @ FPR 1e-3 | "
             "trained on all: AUC | AP | recall @ FPR 1e-3 |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for c in cells:
        lines.append(f"| {c.choice}: {c.family} | {c.lenses} | {c.nonlenses} | {c.auc:.4f} | "
                     f"{c.ap:.3f} | {c.recall_1e3:.3f} | {c.ref_auc:.4f} | {c.ref_ap:.3f} | "
                     f"{c.ref_recall_1e3:.3f} |")
    return "\n".join(lines) + "\n"
