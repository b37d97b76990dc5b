"""Fitting an ensemble's weights (``lensscan.train.ensemble``), without Ray: the validation stream
is replaced by a list of in-memory batches."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from support import make_batch

from lensscan import modelcard
from lensscan.data.preprocess import Preprocessing, preprocess
from lensscan.io.batch import OK
from lensscan.train import ensemble as E
from lensscan.train.trainer import FOLD_RULE


def _log_loss(z: np.ndarray, y: np.ndarray) -> float:
    """Mean binary cross-entropy of logits ``z`` (N,) against labels ``y`` (N,)."""
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def _labels(z: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return (rng.random(len(z)) < 1 / (1 + np.exp(-z))).astype(np.float64)


def test_fit_weights_recovers_the_true_weights():
    """Labels drawn from ``sigmoid(X @ w + b)`` with known ``w`` and ``b``: the fit finds them,
    a member that carries no information gets (almost) no weight."""
    rng = np.random.default_rng(0)
    x = rng.normal(0.0, 2.0, (40_000, 3))  # (N, M) member logits, independent
    w_true, b_true = np.array([1.5, 0.5, 0.0]), -0.7
    y = _labels(x @ w_true + b_true, rng)
    w, b = E.fit_weights(x, y)
    assert w.shape == (3,) and (w >= 0).all()
    np.testing.assert_allclose(w, w_true, atol=0.06)
    assert b == pytest.approx(b_true, abs=0.06)


def test_fit_weights_beats_every_member_and_is_never_negative():
    """Members are noisy copies of the true logit (one of them with its sign flipped): the fit
    scores better than any member alone, and gives the misleading one no negative weight."""
    rng = np.random.default_rng(1)
    z = rng.normal(-1.0, 2.0, 20_000)  # the true logit
    y = _labels(z, rng)
    x = np.stack([z + rng.normal(0, 1.0, z.shape), z + rng.normal(0, 2.0, z.shape),
                  -z + rng.normal(0, 0.5, z.shape)], axis=1)  # (N, 3)
    w, b = E.fit_weights(x, y)
    assert (w >= 0).all() and w[2] < 0.02  # the flipped member cannot be used
    assert w[0] > w[1] > w[2]  # the less noisy member counts more
    fitted = _log_loss(x @ w + b, y)
    for m in range(3):
        assert fitted < _log_loss(x[:, m], y) - 0.01
    assert fitted < _log_loss(x[:, :2].mean(axis=1), y)  # and beats a plain average


class _Batches:
    """The part of a Ray dataset that :func:`lensscan.train.predict.member_scores` uses."""

    def __init__(self, batch: dict[str, np.ndarray]) -> None:
        self.batch = batch

    def iter_batches(self, batch_size: int, batch_format: str):
        n = len(self.batch["label"])
        for i in range(0, n, 64):  # several batches, whatever batch_size asks
            yield {k: v[i:i + 64] for k, v in self.batch.items()}


@pytest.fixture
def members(tiny_model, tmp_path):
    """Two member folders (the tiny model's) under an ensemble folder, as training leaves them,
    and validation rows: preprocessed images, labels that follow member m0's logit."""
    out = str(tmp_path / "ens")
    shutil.copytree(tiny_model, out)
    for m in ("m0", "m1"):  # as training writes it
        modelcard.update_card(f"{out}/{m}", input={"shape": [3, 64, 64], "dtype": "float32"})
    pre = Preprocessing()
    images = preprocess(make_batch(256, seed=3)["image"], pre)
    m0, _ = modelcard.load_member(f"{out}/m0")
    with torch.inference_mode():
        z0 = m0.eval()(torch.from_numpy(images)).reshape(-1).numpy()
    label = (z0 > np.quantile(z0, 0.7)).astype(np.int8)  # the top 30% of m0's logits
    status = np.array([OK] * 250 + ["unreadable"] * 6, dtype=object)
    batch = {"image": images, "label": label, "status": status}
    return out, [f"{out}/m0", f"{out}/m1"], batch


def test_build_ensemble_writes_the_fitted_card(members, monkeypatch):
    out, urls, batch = members
    seen = {}

    def fake_dataset(url, pre, stage, fold=None, labels=None):
        seen.update(url=url, pre=pre, stage=stage, fold=fold, labels=labels)
        return _Batches(batch)

    monkeypatch.setattr(E, "dataset", fake_dataset)
    card = E.build_ensemble(out, urls, "s3://val/", prior_ratio=20.0)
    assert seen == {"url": "s3://val/", "pre": Preprocessing(), "stage": "model", "fold": None,
                    "labels": None}

    # the weights are fit_weights' on the member logits of the ok rows
    models = [modelcard.load_member(u)[0].eval() for u in urls]
    ok = batch["status"] == OK
    x = torch.from_numpy(batch["image"][ok])
    with torch.inference_mode():
        z = np.stack([m(x).reshape(-1).numpy() for m in models], axis=1).astype(np.float64)
    y = batch["label"][ok]
    w, b = E.fit_weights(z, y)
    got = np.array([m.weight for m in card.members])
    np.testing.assert_allclose(got, w, rtol=1e-4, atol=1e-6)
    assert card.bias == pytest.approx(b, rel=1e-4, abs=1e-6)
    assert got[0] > got[1]  # the labels follow m0
    assert [(m.name, m.path) for m in card.members] == [("m0", "m0"), ("m1", "m1")]
    assert card.name == "ens" and card.preprocessing == Preprocessing().to_dict()
    v = card.metrics["validation"]
    assert (v["n_lenses"], v["n_nonlenses"]) == (int(y.sum()), int((1 - y).sum()))
    assert v["roc_auc"] >= card.metrics["validation_members"]["m1"]["roc_auc"]
    assert 0.0 < card.threshold < 1.0 and "20 non-lenses" in card.threshold_rule
    assert card.calibration is not None  # labelled validation data: calibrated too

    # the folder loads back as the ensemble whose scores the card describes
    loaded = modelcard.load_model(out)
    with torch.inference_mode():
        score, _ = loaded.module(x)
    np.testing.assert_allclose(score.numpy(), 1 / (1 + np.exp(-(z @ w + b))), rtol=1e-4,
                               atol=1e-6)


def test_build_ensemble_with_graded_rows_has_no_calibration(members, monkeypatch):
    out, urls, batch = members
    monkeypatch.setattr(E, "dataset", lambda *a, **k: _Batches(batch))
    card = E.build_ensemble(out, urls, "val", labels={1: 1}, fold=True)
    assert card.calibration is None and "calibration" not in card.to_dict()
    assert card.training_data == {"validation": "val", "graded_rows_only": True,
                                     "validation_fold": FOLD_RULE}


def test_build_ensemble_refuses_validation_of_one_class_or_none(members, monkeypatch):
    """A refit on a few grades could see one class: weights of about 0, a threshold near 0
    (every object a candidate) and AUC 0 were written without a word; no rows at all gave an
    IndexError."""
    out, urls, batch = members
    before = Path(out, "card.json").read_bytes()
    one = {**batch, "label": np.zeros_like(batch["label"])}
    monkeypatch.setattr(E, "dataset", lambda *a, **k: _Batches(one))
    with pytest.raises(ValueError, match=r"^val: fitting the ensemble needs labelled lenses "
                                         r"and non-lenses: 0 lenses, 250 non-lenses among 256 "
                                         r"rows read"):
        E.build_ensemble(out, urls, "val")
    empty = {k: v[:0] for k, v in batch.items()}
    monkeypatch.setattr(E, "dataset", lambda *a, **k: _Batches(empty))
    with pytest.raises(ValueError, match="0 lenses, 0 non-lenses among 0 rows read"):
        E.build_ensemble(out, urls, "val")
    assert Path(out, "card.json").read_bytes() == before  # no card written


def test_build_ensemble_refuses_mixed_preprocessing_and_outside_members(members, tmp_path):
    out, urls, _ = members
    modelcard.update_card(urls[1], preprocessing=Preprocessing(crop=40).to_dict())
    with pytest.raises(ValueError, match="share one preprocessing"):
        E.build_ensemble(out, urls, "val")
    with pytest.raises(ValueError, match="inside the ensemble folder"):
        E._rel(str(tmp_path / "other"), urls[0])
    assert E._rel(out + "/", urls[0]) == "m0"
