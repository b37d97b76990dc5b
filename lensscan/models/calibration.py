"""Probabilities a survey can use: the ensemble logit mapped to P(lens) at a chosen prevalence.

The map is fitted on labelled validation rows (Platt scaling: a logistic regression of the label
on the ensemble logit ``z``), so that ``sigmoid(a z + b)`` is the probability of a lens *at the
validation set's own class ratio* ``pi_val``. A survey's prevalence ``pi`` is far lower (about
1e-4 for galaxy-scale lenses), and Bayes' rule moves the odds by the ratio of the prior odds:

    log odds(lens | z, pi) = a z + b + logit(pi) - logit(pi_val)

which assumes only that the cutouts of each class look alike in the validation set and in the
survey (the class-conditional densities are the same; only their mix differs).

Pure numpy: the scoring driver and the query never import torch. The parameters live in the
model card (``ModelCard.calibration``, :meth:`Calibration.to_dict`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

#: Prevalence of lenses p_lens is calibrated to when neither --prior nor the card names one:
#: about one galaxy-scale lens per 10,000 galaxies in ground-based surveys.
DEFAULT_PRIOR = 1e-4
METHOD = "platt"


def logit(p: float | np.ndarray) -> float | np.ndarray:
    """log(p / (1 - p))."""
    return np.log(p) - np.log1p(-p)


def sigmoid(t: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-t)), without overflow and accurate far into both tails, in ``t``'s float
    type (NaN stays NaN)."""
    t = np.asarray(t)
    with np.errstate(invalid="ignore"):  # NaN rows (quarantined) stay NaN, silently
        return np.exp(-np.logaddexp(np.zeros((), t.dtype), -t))


def check_prior(prior: float, what: str = "--prior") -> float:
    """``prior`` as a float in (0, 1), or a ValueError naming ``what``."""
    p = float(prior)
    if not 0.0 < p < 1.0:
        raise ValueError(f"{what} {prior!r}: a prevalence must lie strictly between 0 and 1 "
                         "(e.g. 1e-4: one lens per 10,000 objects)")
    return p


@dataclass(frozen=True)
class Calibration:
    """A Platt map from the ensemble logit to P(lens), and the class ratio it was fitted at."""

    a: float  # slope on the ensemble logit
    b: float  # intercept
    val_prevalence: float  # lens fraction of the rows it was fitted on (pi_val)
    prior: float = DEFAULT_PRIOR  # prevalence scoring uses when --prior is not given
    method: str = METHOD  # "platt": sigmoid(a * logit + b)
    n_val: int = 0  # validation rows the fit used
    n_val_lenses: int = 0  # of which lenses
    fitted_on: str | None = None  # URL of the validation data

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibration:
        """Read a card's ``calibration``; a ValueError when it is not one this version knows."""
        if d.get("method") != METHOD:
            raise ValueError(f"calibration method {d.get('method')!r} is not {METHOD!r}")
        for key in ("a", "b", "val_prevalence", "prior"):  # a card is untrusted
            if isinstance(d.get(key), bool) or not isinstance(d.get(key), int | float):
                raise ValueError(f"calibration {key}={d.get(key)!r}: not a number")
        known = set(cls.__dataclass_fields__)
        cal = cls(**{k: v for k, v in d.items() if k in known})
        check_prior(cal.val_prevalence, "calibration val_prevalence")
        check_prior(cal.prior, "calibration prior")
        if not (np.isfinite(cal.a) and np.isfinite(cal.b)):
            raise ValueError(f"calibration a={cal.a!r}, b={cal.b!r}: not finite")
        return cal

    def log_odds(self, z: np.ndarray, prior: float | None = None) -> np.ndarray:
        """log odds of a lens (float64) given the ensemble logits ``z`` at prevalence
        ``prior`` (default: :attr:`prior`)."""
        pi = self.prior if prior is None else check_prior(prior)
        shift = logit(pi) - logit(self.val_prevalence)
        return self.a * np.asarray(z, np.float64) + self.b + shift

    def p_lens(self, z: np.ndarray, prior: float | None = None) -> np.ndarray:
        """P(lens | logit z) at prevalence ``prior``, float32 (NaN where z is NaN)."""
        return sigmoid(self.log_odds(z, prior)).astype(np.float32)


def fit_platt(z: np.ndarray, y: np.ndarray, iters: int = 100,
              tol: float = 1e-10) -> tuple[float, float]:
    """Slope and intercept of ``P(y=1 | z) = sigmoid(a z + b)`` by maximum likelihood.

    Newton's method on the log-loss with Platt's (1999) targets, ``(N+ + 1) / (N+ + 2)`` for
    lenses and ``1 / (N- + 2)`` for non-lenses instead of 1 and 0, which keeps the fit finite
    when the validation rows are separable and shifts it by O(1/N) otherwise.

    Parameters
    ----------
    z : ndarray, shape (N,)
        Ensemble logits of the validation rows.
    y : ndarray, shape (N,)
        1 for lens, 0 for non-lens; both classes must occur.
    """
    z = np.asarray(z, np.float64)
    y = np.asarray(y).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0 or len(z) != len(y):
        raise ValueError(f"calibration needs lenses and non-lenses with one logit each (got "
                         f"{n_pos} lenses, {n_neg} non-lenses, {len(z)} logits)")
    t = np.where(y, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    x = np.stack([z, np.ones_like(z)], axis=1)  # (N, 2)
    w = np.array([1.0, logit(n_pos / len(z))])
    loss = _log_loss(x @ w, t)
    for _ in range(iters):
        p = sigmoid(x @ w)
        grad = x.T @ (p - t)
        hess = (x * (p * (1 - p))[:, None]).T @ x + 1e-12 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        k, new = 1.0, _log_loss(x @ (w - step), t)
        while new > loss and k > 1e-8:  # backtrack: Newton may overshoot far from the optimum
            k /= 2
            new = _log_loss(x @ (w - k * step), t)
        if new > loss:
            break
        w, done, loss = w - k * step, loss - new < tol * max(1.0, abs(loss)), new
        if done:
            break
    return float(w[0]), float(w[1])


def _log_loss(t_hat: np.ndarray, t: np.ndarray) -> float:
    """Mean cross-entropy of targets ``t`` under logits ``t_hat``."""
    return float(np.mean(np.logaddexp(0, t_hat) - t * t_hat))


def calibrate(z: np.ndarray, y: np.ndarray, prior: float = DEFAULT_PRIOR,
              fitted_on: str | None = None) -> Calibration:
    """Fit a :class:`Calibration` on validation logits ``z`` and labels ``y``."""
    y = np.asarray(y).astype(bool)
    a, b = fit_platt(z, y)
    if not (np.isfinite(a) and np.isfinite(b)):  # never written into a card: scoring refuses it
        raise ValueError(f"{fitted_on or 'calibration'}: the fit of p_lens did not converge (a="
                         f"{a}, b={b}); the model's logits on this data are not usable")
    return Calibration(a=a, b=b, val_prevalence=float(y.mean()), prior=check_prior(prior),
                       n_val=int(len(y)), n_val_lenses=int(y.sum()), fitted_on=fitted_on)


def from_card(card: Any) -> Calibration | None:
    """The calibration of a card (a :class:`lensscan.modelcard.ModelCard` or its dict), or None
    when it has none."""
    d = card.get("calibration") if isinstance(card, dict) else card.calibration
    return Calibration.from_dict(d) if d else None
