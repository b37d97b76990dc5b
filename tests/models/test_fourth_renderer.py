"""The bundled model on a fourth renderer, written blind (``support.fourthrender``).

``support.thirdrender`` has been used to diagnose the model (its rings, its faint arcs), so its
figures flatter the model more each round. ``support.fourthrender`` was written later by
another author shown only the output format and what to vary, never lensscan's code, README or
the other renderers: deflectors from a velocity-dispersion function through Faber-Jackson and
a size-luminosity relation, Einstein radii from redshifts, power-law masses deflected by the
Tessore & Metcalf series, sources from number counts, Moffat / double-Gaussian / Kolmogorov
PSFs, resampled-coadd noise, cosmic rays and bad columns. These tests keep it apart from
lensscan, check its lensing and its deflector population, and hold the bundled ensemble to
floors on its images, scored as an outside set is (the DeepLense ``.npy`` layout through
``import-npy``)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from support import fourthrender, scored_layout, top_level_imports

from lensscan.train.metrics import recall_at_fpr, roc_auc


def test_fourth_renderer_shares_no_code_with_lensscan():
    assert top_level_imports(fourthrender) <= {"__future__", "argparse", "csv", "math", "sys",
                                               "time", "pathlib", "numpy", "scipy"}


def test_an_isothermal_sphere_deflects_by_its_einstein_radius():
    x, y = np.meshgrid(np.linspace(-4, 4, 81), np.linspace(-4, 4, 81))
    r = np.hypot(x, y)
    ax, ay = fourthrender.deflection(x, y, 1.3)
    keep = r > 0.05
    np.testing.assert_allclose(np.hypot(ax, ay)[keep], 1.3, rtol=1e-6)
    np.testing.assert_allclose((ax * x + ay * y)[keep] / r[keep], 1.3, rtol=1e-6)


def test_an_elliptical_power_law_is_a_gradient_of_twice_its_convergence():
    """div alpha = 2 kappa and curl alpha = 0 by finite differences, off the centre."""
    te, q, pa, gamma, h = 1.1, 0.6, 0.4, 2.2, 1e-4
    x, y = np.meshgrid(np.linspace(-2.5, 2.5, 26), np.linspace(-2.5, 2.5, 26))
    x, y = x[np.hypot(x, y) > 0.3], y[np.hypot(x, y) > 0.3]

    def alpha(dx, dy):
        return fourthrender.deflection(x + dx, y + dy, te, q=q, pa=pa, gamma=gamma)

    (axp, ayp), (axm, aym) = alpha(h, 0), alpha(-h, 0)
    (bxp, byp), (bxm, bym) = alpha(0, h), alpha(0, -h)
    div = (axp - axm + byp - bym) / (2 * h)
    curl = (ayp - aym - (bxp - bxm)) / (2 * h)
    xr = np.cos(pa) * x + np.sin(pa) * y
    yr = -np.sin(pa) * x + np.cos(pa) * y
    b = te * np.sqrt(q)
    kappa = (3 - gamma) / 2 * (b / np.hypot(q * xr, yr)) ** (gamma - 1)
    np.testing.assert_allclose(div, 2 * kappa, rtol=1e-4)
    assert np.abs(curl).max() < 1e-4 * kappa.max()


def test_same_seed_same_bytes():
    a, ta = fourthrender.make_object(2, 0, 5, fourthrender.nonlens_kind(2, 5))
    b, tb = fourthrender.make_object(2, 0, 5, fourthrender.nonlens_kind(2, 5))
    assert a.shape == (3, 64, 64) and np.isfinite(a).all()
    assert a.tobytes() == b.tobytes() and ta == tb


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """150 lenses and 1,500 non-lenses of the fourth renderer, scored by the bundled model."""
    root = tmp_path_factory.mktemp("fourth")
    frame, _ = scored_layout(fourthrender.write_layout, root, 150, 1500, seed=7)
    return frame


def test_its_lenses_and_ellipticals_differ_only_by_lensing(scored):
    lenses = scored[scored["label"] == 1]
    ellipticals = scored[scored["kind"] == "elliptical"]
    for column in ("r_mag", "reff_arcsec", "sersic_n", "g_r"):
        p = stats.ks_2samp(lenses[column], ellipticals[column]).pvalue
        assert p > 1e-3, (column, p)


def test_bundled_model_on_the_fourth_renderer(scored):
    """Floors under what the bundled model scored on this seed: AUC 0.917 and recall 0.40 at
    FPR 1e-2 for round 21, 0.920 and 0.40 for round 23 (on seeds 1 and 2 of 3,300: AUC 0.919 and
    0.945). A regression guard, far from issue 12's aim."""
    y, s = scored["label"].to_numpy(), scored["score"].to_numpy()
    auc, recall = roc_auc(y, s), recall_at_fpr(y, s, 1e-2)
    top = scored[scored["score"] >= np.quantile(scored.loc[scored["label"] == 0, "score"], 0.99)]
    print(f"AUC {auc:.4f}, recall at FPR 1e-2 {recall:.3f}, top 1%:",
          top["kind"].value_counts().to_dict())
    assert auc >= 0.9
    assert recall >= 0.3
    # its ellipticals, drawn as its deflectors are, are not what the model ranks high
    assert (top["kind"] == "elliptical").sum() <= 2
