"""Combine trained members into a validation-weighted ensemble folder."""

from __future__ import annotations

import numpy as np
import torch

from lensscan import modelcard
from lensscan.config import TrainConfig
from lensscan.data.preprocess import Preprocessing
from lensscan.io import storage
from lensscan.models import calibration
from lensscan.models.ensemble import Ensemble
from lensscan.train.metrics import choose_threshold, summary
from lensscan.train.predict import member_scores, require_both_classes
from lensscan.train.trainer import FOLD_RULE, dataset


def fit_weights(logits: np.ndarray, y: np.ndarray, l2: float = 1e-3,
                steps: int = 300) -> tuple[np.ndarray, float]:
    """Non-negative member weights and a bias minimising the validation log-loss.

    Parameters
    ----------
    logits : ndarray, shape (N, M)
        Member logits on validation rows.
    y : ndarray, shape (N,)
        1 for lens, 0 for non-lens.
    """
    x = torch.from_numpy(np.asarray(logits, np.float64))
    t = torch.from_numpy(np.asarray(y, np.float64))
    raw = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([raw, bias], lr=0.5, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        w = torch.nn.functional.softplus(raw)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(x @ w + bias, t)
        loss = loss + l2 * (w**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    w = torch.nn.functional.softplus(raw).detach().numpy()
    return w, float(bias.detach())


def build_ensemble(out: str, member_urls: list[str], val: str, prior_ratio: float = 100.0,
                   labels: dict[str, int] | None = None, fold: bool | None = None,
                   prior: float = calibration.DEFAULT_PRIOR) -> modelcard.ModelCard:
    """Fit weights on ``val`` for the members (folders under ``out``); write the ensemble card.

    ``labels`` (graders' labels by object_id) keep only the graded rows of ``val``, labelled
    so; ``fold=True`` keeps only its validation fold (object_id hash), as training leaves it.
    Labelled validation data (no ``labels``) also gives the card its ``calibration``
    (:mod:`lensscan.models.calibration`), with ``prior`` as the prevalence scoring defaults
    to; graded rows do not: they were picked by score, so their class ratio is not one Bayes'
    rule can move from (``lensscan calibrate`` adds one later from a labelled set)."""
    members, cards = [], []
    for url in member_urls:
        model, card = modelcard.load_member(url)
        members.append(model)
        cards.append(card)
    pre = cards[0].preprocessing
    if any(c.preprocessing != pre for c in cards):
        raise ValueError("all members of an ensemble must share one preprocessing")
    ds = dataset(val, Preprocessing.from_dict(pre), "model", fold=fold, labels=labels)
    probe = Ensemble(members, [1.0] * len(members), output_logits=True)
    rows: dict = {}
    y, s, _ = member_scores(probe.eval(), ds, rows=rows)
    require_both_classes(y, rows, val, "fitting the ensemble")
    member_z = s[:, 1:]  # (N, M) member logits
    member_p = np.clip(calibration.sigmoid(member_z), 1e-7, 1 - 1e-7)
    logits = np.log(member_p / (1 - member_p))  # clipped at about +-16 for the weights' fit
    w, b = fit_weights(logits, y)
    # the threshold, metrics and calibration from the ensemble's score as scoring computes it:
    # of the unclipped member logits (a saturated member would otherwise move rows across it)
    z = member_z @ w + b
    score = calibration.sigmoid(z)
    threshold = choose_threshold(y, score, prior_ratio)
    member_s = calibration.sigmoid(member_z)  # unclipped: no ties at the top
    per_member = {c.name: summary(y, member_s[:, i], choose_threshold(y, member_s[:, i],
                                                                          prior_ratio))
                  for i, c in enumerate(cards)}
    card = modelcard.ModelCard(
        name=storage.join(out).rstrip("/").split("/")[-1],
        bands=["g", "r", "i"],
        input=cards[0].input,
        preprocessing=pre,
        members=tuple(modelcard.Member(c.name, _rel(out, u), float(wi))
                      for c, u, wi in zip(cards, member_urls, w, strict=True)),
        bias=b,
        combine="sigmoid(sum_i weight_i * logit_i + bias)",
        threshold=threshold,
        threshold_rule=f"max lens F1 on validation re-weighted to {prior_ratio:g} "
                       "non-lenses per lens",
        metrics={"validation": summary(y, score, threshold), "validation_members": per_member},
        training_data={"validation": val, **({"graded_rows_only": True} if labels else {}),
                       **({"validation_fold": FOLD_RULE} if fold else {})},
        # the ensemble logit as scoring computes it: unclipped member logits
        calibration=calibration.calibrate(z, y, prior, val).to_dict()
        if labels is None else None,
    )
    return modelcard.save_ensemble(out, card)


def _rel(root: str, url: str) -> str:
    root = root.rstrip("/") + "/"
    if not url.startswith(root):
        raise ValueError(f"member {url} must live inside the ensemble folder {root}")
    return url[len(root):]


def member_config(name: str, data: str, val: str, out: str, **kw) -> TrainConfig:
    """Training config of a member saved under ``out/name``."""
    return TrainConfig(data=data, val=val, out=storage.join(out, name), name=name, **kw)
