"""Metrics against independent computations (pairwise AUC, brute-force thresholds)."""

from __future__ import annotations

import numpy as np
import pytest

from lensscan.train import metrics as M


def _data(seed=0, n_pos=60, n_neg=600):
    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(n_pos), np.zeros(n_neg)].astype(int)
    s = np.r_[rng.normal(1.5, 1, n_pos), rng.normal(0, 1, n_neg)]
    s = np.round(s, 1)  # ties on purpose
    return y, s


def test_auc_equals_pairwise_probability():
    y, s = _data()
    pos, neg = s[y == 1], s[y == 0]
    diff = pos[:, None] - neg[None, :]
    expected = ((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size
    assert M.roc_auc(y, s) == pytest.approx(expected, abs=1e-12)


def test_average_precision_brute_force():
    y, s = _data(1)
    thr = np.unique(s)[::-1]
    prev_r, ap = 0.0, 0.0
    for t in thr:
        pred = s >= t
        tp = (pred & (y == 1)).sum()
        p = tp / pred.sum()
        r = tp / (y == 1).sum()
        ap += (r - prev_r) * p
        prev_r = r
    assert M.average_precision(y, s) == pytest.approx(ap, abs=1e-12)


def test_recall_at_fpr_brute_force():
    y, s = _data(2)
    for fpr_max in (1e-2, 1e-1):
        best = 0.0
        for t in np.unique(s):
            pred = s >= t
            if (pred & (y == 0)).sum() / (y == 0).sum() <= fpr_max:
                best = max(best, (pred & (y == 1)).sum() / (y == 1).sum())
        assert M.recall_at_fpr(y, s, fpr_max) == pytest.approx(best)


def test_threshold_maximises_f1_and_prior_reweighting():
    y, s = _data(3)
    t = M.choose_threshold(y, s)
    f1 = lambda th: M.summary(y, s, th)["f1"]  # noqa: E731
    assert all(f1(t) >= f1(o) - 1e-12 for o in np.unique(s))
    # at a rarer prior, false positives cost more: the threshold can only go up
    assert M.choose_threshold(y, s, prior_ratio=100) >= t


def test_summary_confusion_and_top_n():
    y = np.array([1, 0, 1, 0, 0, 1])
    s = np.array([0.9, 0.8, 0.7, 0.2, 0.1, 0.05])
    out = M.summary(y, s, 0.5, top_n=(3,))
    assert out["confusion"] == {"tp": 2, "fp": 1, "fn": 1, "tn": 2}
    assert out["precision"] == pytest.approx(2 / 3) and out["recall"] == pytest.approx(2 / 3)
    assert out["fp_per_lens_top_3"] == pytest.approx(0.5)


def test_metrics_without_both_classes_are_undefined_not_zero():
    """One class gave AUC and AP 0.0 (a robustness cell of a set without lenses read as the
    worst model), and no rows an IndexError."""
    s = np.array([0.9, 0.1, 0.5])
    for y in (np.array([0, 0, 0]), np.array([], int)):
        ss = s[:len(y)]
        assert np.isnan(M.roc_auc(y, ss)) and np.isnan(M.average_precision(y, ss))
        assert np.isnan(M.recall_at_fpr(y, ss, 1e-3))
    assert np.isnan(M.roc_auc(np.array([1, 1, 1]), s))
    assert M.average_precision(np.array([1, 1, 1]), s) == 1.0  # lenses only: all precise
    assert M.roc_auc(np.array([1, 0, 0]), s) == 1.0 and M.roc_auc(np.array([0, 1, 1]), s) == 0.0
