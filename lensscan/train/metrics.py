"""Classification metrics for rare positives (numpy only): ROC, PR, recall at low FPR, threshold.

Conventions: ``y`` is 1 for lens and 0 for non-lens, ``s`` is the score (higher = more lens-like).
Ties in ``s`` are handled as one threshold, like scikit-learn.
"""

from __future__ import annotations

import numpy as np


def _curve(y: np.ndarray, s: np.ndarray, w_neg: float = 1.0):
    """Cumulative true and false positives at each distinct threshold, highest first."""
    y = np.asarray(y).astype(bool)
    s = np.asarray(s, dtype=np.float64)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # last index of each distinct score
    tp = np.cumsum(y)[last].astype(float)
    fp = np.cumsum(~y)[last].astype(float) * w_neg
    return tp, fp, s[last]


def roc_curve(y, s) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False- and true-positive rates and thresholds (starting at (0, 0))."""
    tp, fp, thr = _curve(y, s)
    p, n = max(tp[-1], 1.0), max(fp[-1], 1.0)
    return np.r_[0.0, fp / n], np.r_[0.0, tp / p], np.r_[np.inf, thr]


def _has(y, positives: bool = True, negatives: bool = True) -> bool:
    y = np.asarray(y).astype(bool)
    return bool((not positives or y.any()) and (not negatives or (~y).any()))


def roc_auc(y, s) -> float:
    """Area under the ROC curve; NaN without both classes (it is undefined, not 0)."""
    if not _has(y):
        return float("nan")
    fpr, tpr, _ = roc_curve(y, s)
    # the trapezoid rule written out (np.trapezoid is NumPy 2's; NumPy 1.26 is supported)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def pr_curve(y, s, w_neg: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall and thresholds; ``w_neg`` re-weights non-lenses to another prior."""
    tp, fp, thr = _curve(y, s, w_neg)
    precision = tp / np.maximum(tp + fp, 1e-12)
    recall = tp / max(tp[-1], 1.0)
    return precision, recall, thr


def average_precision(y, s) -> float:
    """Average precision: sum over thresholds of (R_k - R_{k-1}) P_k; NaN without lenses."""
    if not _has(y, negatives=False):
        return float("nan")
    precision, recall, _ = pr_curve(y, s)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def recall_at_fpr(y, s, fpr_max: float) -> float:
    """Highest recall reachable with a false-positive rate <= ``fpr_max``; NaN without
    lenses."""
    if not _has(y, negatives=False):
        return float("nan")
    fpr, tpr, _ = roc_curve(y, s)
    ok = fpr <= fpr_max + 1e-12
    return float(tpr[ok].max()) if ok.any() else 0.0


def choose_threshold(y, s, prior_ratio: float | None = None) -> float:
    """Threshold that maximises the lens F1 score.

    Parameters
    ----------
    prior_ratio : float, optional
        Non-lenses per lens expected where the model will run (e.g. 100). Validation non-lenses are
        re-weighted to that ratio, so a threshold chosen on a richer validation set still fits.
    """
    y = np.asarray(y).astype(bool)
    w_neg = 1.0
    if prior_ratio is not None and (~y).sum() and y.sum():
        w_neg = prior_ratio * y.sum() / (~y).sum()
    precision, recall, thr = pr_curve(y, s, w_neg)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return float(thr[int(np.argmax(f1))])


def confusion(y, s, threshold: float) -> dict[str, int]:
    """Counts at ``score >= threshold``."""
    y = np.asarray(y).astype(bool)
    pred = np.asarray(s) >= threshold
    return {"tp": int((pred & y).sum()), "fp": int((pred & ~y).sum()),
            "fn": int((~pred & y).sum()), "tn": int((~pred & ~y).sum())}


def summary(y, s, threshold: float, top_n: tuple[int, ...] = (100, 1000)) -> dict:
    """Every metric of the external contract for one score vector."""
    y = np.asarray(y).astype(bool)
    s = np.asarray(s, dtype=np.float64)
    c = confusion(y, s, threshold)
    precision = c["tp"] / max(c["tp"] + c["fp"], 1)
    recall = c["tp"] / max(c["tp"] + c["fn"], 1)
    out = {
        "n_lenses": int(y.sum()),
        "n_nonlenses": int((~y).sum()),
        "roc_auc": roc_auc(y, s),
        "average_precision": average_precision(y, s),
        "recall_at_fpr_1e-2": recall_at_fpr(y, s, 1e-2),
        "recall_at_fpr_1e-3": recall_at_fpr(y, s, 1e-3),
        "threshold": float(threshold),
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / max(precision + recall, 1e-12),
        "accuracy": (c["tp"] + c["tn"]) / max(len(y), 1),
        "confusion": c,
    }
    order = np.argsort(-s, kind="mergesort")
    for n in top_n:
        top = y[order[:n]]
        out[f"fp_per_lens_top_{n}"] = float((~top).sum() / max(top.sum(), 1))
    return out
