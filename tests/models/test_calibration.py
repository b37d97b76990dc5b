"""p_lens: Platt scaling on the ensemble logit and Bayes' rule to a survey's prevalence, checked
on simulated logits whose true posterior is known."""

from __future__ import annotations

import numpy as np
import pytest

from lensscan.models import calibration as C
from lensscan.score.expected import summary


def _draw(rng: np.random.Generator, n: int, pi: float) -> tuple[np.ndarray, np.ndarray]:
    """Logits of ``n`` objects at lens fraction ``pi``: N(+2.5, 1.5) for lenses, N(-2.5, 1.5)
    for the rest (equal widths: the true log odds are linear in the logit)."""
    y = rng.random(n) < pi
    return np.where(y, rng.normal(2.5, 1.5, n), rng.normal(-2.5, 1.5, n)), y


def test_platt_fit_recovers_a_known_logistic_relation():
    rng = np.random.default_rng(0)
    z = rng.normal(0.0, 2.0, 20_000)
    y = rng.random(z.size) < C.sigmoid(1.7 * z - 0.8)
    a, b = C.fit_platt(z, y)
    assert a == pytest.approx(1.7, abs=0.1) and b == pytest.approx(-0.8, abs=0.1)  # 4 sigma
    cal = C.calibrate(z, y, prior=1e-3, fitted_on="mem://val")
    assert (cal.a, cal.b) == (a, b) and cal.val_prevalence == pytest.approx(y.mean())
    assert (cal.n_val, cal.n_val_lenses, cal.prior) == (20_000, int(y.sum()), 1e-3)
    # at the validation prevalence p_lens is the fitted map itself
    np.testing.assert_allclose(cal.p_lens(z[:50], cal.val_prevalence),
                               C.sigmoid(a * z[:50] + b), rtol=1e-6)


def test_prior_correction_gives_the_true_fraction_at_the_survey_prevalence():
    """Fitted at 1 lens in 5, moved to 1 in 1,000: summed over a simulated survey at that
    prevalence, p_lens counts its lenses, overall and in the top 300 (Poisson tolerance)."""
    rng = np.random.default_rng(1)
    cal = C.calibrate(*_draw(rng, 100_000, 0.2), prior=1e-3)
    assert cal.val_prevalence == pytest.approx(0.2, abs=0.01)
    z, y = _draw(rng, 400_000, 1e-3)
    p = cal.p_lens(z).astype(np.float64)
    assert p.dtype == np.float64 and cal.p_lens(z).dtype == np.float32
    assert abs(p.sum() - y.sum()) < 4 * np.sqrt(y.sum())
    top = np.argsort(-z)[:300]
    s = summary(p[top])
    assert abs(s["expected_lenses"] - y[top].sum()) < 4 * s["expected_lenses_sd"] + 1
    assert s["expected_purity"] == pytest.approx(s["expected_lenses"] / 300)
    # left at the validation prevalence it would promise ~35 times the lenses there are
    assert cal.p_lens(z, cal.val_prevalence).sum() > 20 * y.sum()
    # the true posterior at 1e-3 for these Gaussians: log odds 20 z / 9 + logit(1e-3)
    truth = C.sigmoid(20 * z / 9 + C.logit(1e-3))
    assert np.abs(p - truth).max() < 0.03


def test_separable_data_gives_a_finite_fit_and_one_class_is_refused():
    a, b = C.fit_platt(np.array([-2.0, -1.0, 1.0, 2.0]), np.array([0, 0, 1, 1]))
    assert np.isfinite([a, b]).all() and a > 0
    with pytest.raises(ValueError, match="lenses and non-lenses"):
        C.fit_platt(np.zeros(5), np.zeros(5))


def test_card_round_trip_and_bad_values_refused():
    cal = C.Calibration(a=1.1, b=-0.3, val_prevalence=0.09, prior=1e-4, n_val=11, n_val_lenses=1)
    assert C.from_card({"calibration": cal.to_dict()}) == cal
    assert C.from_card({}) is None
    with pytest.raises(ValueError, match="method"):
        C.Calibration.from_dict({**cal.to_dict(), "method": "isotonic"})
    with pytest.raises(ValueError, match="between 0 and 1"):
        C.Calibration.from_dict({**cal.to_dict(), "val_prevalence": 0.0})
    for bad in (0.0, 1.0, -1e-4, 2.0):
        with pytest.raises(ValueError, match="--prior"):
            cal.p_lens(np.zeros(2), bad)
    # the sigmoid is exact far into both tails and keeps NaN
    out = C.sigmoid(np.array([-800.0, -30.0, 0.0, 30.0, 800.0, np.nan]))
    np.testing.assert_allclose(out[:5], [0.0, 9.357622968840175e-14, 0.5, 1.0, 1.0],
                               rtol=1e-12)
    assert np.isnan(out[5])


def _ensemble_logits(model: str, survey: str) -> tuple[np.ndarray, np.ndarray]:
    """Ensemble logits and labels of every row of ``survey``, by the model called directly."""
    import glob

    import torch

    from lensscan import modelcard
    from lensscan.data.preprocess import Preprocessing, preprocess
    from lensscan.io.parquet import read_parquet

    loaded = modelcard.load_model(model)
    loaded.module.output_logits = True
    pre = Preprocessing.from_dict(loaded.preprocessing)
    z, y = [], []
    for url in sorted(glob.glob(f"{survey}/*.parquet")):
        b = read_parquet(url)
        with torch.inference_mode():
            z.append(loaded.module(torch.from_numpy(preprocess(b["image"], pre)))[0].numpy())
        y.append(b["label"])
    return np.concatenate(z), np.concatenate(y)


def test_calibrate_fits_the_ensemble_logits_of_labelled_rows(ray_local, tiny_model, sim_survey,
                                                             tmp_path):
    """``lensscan calibrate MODEL VAL`` writes Platt's fit on the model's own logits into the
    card, weights untouched (the checksum changes: the card is part of it)."""
    import shutil

    from lensscan import modelcard
    from lensscan.cli import main

    model = str(tmp_path / "model")
    shutil.copytree(tiny_model, model)
    before = modelcard.model_info(model).checksum
    assert main(["calibrate", model, sim_survey, "--prior", "2e-4"]) == 0
    cal = C.from_card(modelcard.read_card(model))
    assert (cal.prior, cal.n_val, cal.n_val_lenses, cal.fitted_on) == (2e-4, 60, 12, sim_survey)
    assert cal.val_prevalence == pytest.approx(0.2)
    assert modelcard.model_info(model).checksum != before
    a, b = C.fit_platt(*_ensemble_logits(model, sim_survey))
    assert (cal.a, cal.b) == pytest.approx((a, b), rel=1e-3, abs=1e-5)


def test_calibrate_says_what_it_left_out_or_counted_twice(ray_local, tiny_model, tmp_path,
                                                         capsys):
    """Found by probing: a validation set joined with itself counted every row twice, and rows
    without a label were left out, both without a word."""
    import shutil

    from support import make_batch

    from lensscan.cli import main
    from lensscan.io.parquet import write_parquet

    model = str(tmp_path / "model")
    shutil.copytree(tiny_model, model)
    batch = make_batch(20, seed=4)
    batch["label"][:] = np.arange(20) % 2
    batch["label"][0] = -1
    write_parquet(str(tmp_path / "v" / "a.parquet"), batch)
    write_parquet(str(tmp_path / "v" / "b.parquet"), batch)  # the same rows again
    assert main(["calibrate", model, str(tmp_path / "v")]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert any("2 of the 40 rows read have no label" in line for line in err), err
    assert any("19 of the 38 rows used repeat an earlier row's object id" in line
               for line in err), err
    assert len(err) == 2, err  # and nothing of Ray's log


def test_ensemble_fit_writes_a_calibration_of_the_scoring_logit(ray_local, tiny_model,
                                                               sim_survey, tmp_path):
    """Fitting an ensemble's weights on labelled validation data also calibrates it, on the
    logit scoring will compute (unclipped member logits, the fitted weights and bias)."""
    import shutil

    from lensscan import modelcard
    from lensscan.train.ensemble import build_ensemble

    out = str(tmp_path / "ens")
    shutil.copytree(tiny_model, out)
    for m in ("m0", "m1"):  # as training writes it
        modelcard.update_card(f"{out}/{m}", input={"shape": [3, 64, 64], "dtype": "float32"})
    card = build_ensemble(out, [f"{out}/m0", f"{out}/m1"], sim_survey, prior=5e-4)
    cal = C.Calibration.from_dict(card.calibration)
    assert (cal.prior, cal.n_val, cal.n_val_lenses) == (5e-4, 60, 12)
    a, b = C.fit_platt(*_ensemble_logits(out, sim_survey))
    assert (cal.a, cal.b) == pytest.approx((a, b), rel=1e-3, abs=1e-5)


def test_calibration_imports_without_torch():
    """The scoring driver and the query read p_lens's calibration without importing torch."""
    import subprocess
    import sys

    code = ("import sys, lensscan.models.calibration\n"
            "print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "False"


def test_a_fit_that_does_not_converge_is_refused_not_written():
    """Logits of a diverged model fitted to a = b = NaN, written into the card: every later
    score was refused until the card was fixed by hand."""
    import warnings

    from lensscan.models import calibration as cal

    with warnings.catch_warnings(), pytest.raises(ValueError, match="did not converge"):
        warnings.simplefilter("ignore", RuntimeWarning)
        cal.calibrate(np.array([np.inf, -np.inf, 1.0, 2.0]), np.array([1, 0, 1, 0]), 1e-4, "v")
