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
from support import deflector_ks_pvalues, fourthrender, scored_layout, top_level_imports

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


def _div_curl(alpha, x, y, h=1e-4):
    """Divergence and curl of a deflection field alpha(x, y) by central differences."""
    (axp, ayp), (axm, aym) = alpha(x + h, y), alpha(x - h, y)
    (bxp, byp), (bxm, bym) = alpha(x, y + h), alpha(x, y - h)
    return (axp - axm + byp - bym) / (2 * h), (ayp - aym - (bxp - bxm)) / (2 * h)


def _epl_kappa(x, y, te, q, pa, gamma):
    xr, yr = np.cos(pa) * x + np.sin(pa) * y, -np.sin(pa) * x + np.cos(pa) * y
    return (3 - gamma) / 2 * (te * np.sqrt(q) / np.hypot(q * xr, yr)) ** (gamma - 1)


@pytest.fixture
def grid():
    x, y = np.meshgrid(np.linspace(-2.5, 2.5, 26), np.linspace(-2.5, 2.5, 26))
    keep = np.hypot(x, y) > 0.3
    return x[keep], y[keep]


def test_an_elliptical_power_law_is_the_gradient_its_convergence_asks_for(grid):
    """div alpha = 2 kappa and curl alpha = 0 (a potential's gradient, of the stated
    convergence); point-symmetric and homogeneous of degree 2 - gamma, which rules out the
    harmonic fields (a constant, a shear) that div and curl cannot see."""
    x, y = grid
    te, q, pa, gamma = 1.1, 0.6, 0.4, 2.2

    def alpha(u, v):
        return fourthrender.deflection(u, v, te, q=q, pa=pa, gamma=gamma)

    div, curl = _div_curl(alpha, x, y)
    kappa = _epl_kappa(x, y, te, q, pa, gamma)
    np.testing.assert_allclose(div, 2 * kappa, rtol=1e-4)
    assert np.abs(curl).max() < 1e-4 * kappa.max()
    ax, ay = alpha(x, y)
    bx, by = alpha(-x, -y)
    np.testing.assert_allclose((bx, by), (-ax, -ay), atol=1e-10)
    cx, cy = alpha(2 * x, 2 * y)
    np.testing.assert_allclose((cx, cy), (2 ** (2 - gamma) * ax, 2 ** (2 - gamma) * ay),
                               rtol=1e-8)


def test_a_full_lens_adds_shear_multipoles_and_subhaloes_as_potentials(grid):
    """The deflection of shear, m = 3, 4 multipoles and an SIS subhalo on top of the power law:
    still curl-free, with div alpha = 2 x (power law's kappa + multipoles' am cos(m (phi -
    phi_m)) / 2r + subhalo's b / 2r), shear adding none."""
    x, y = grid
    lens = dict(te=1.2, q=0.7, pa=0.3, gamma=2.0, x0=0.0, y0=0.0, g1=0.04, g2=-0.03,
                multipoles=[(3, 0.01, 0.2), (4, 0.015, 0.9)], subhalos=[(0.06, 1.05, 0.35)])
    keep = np.hypot(x - 1.05, y - 0.35) > 0.2
    x, y = x[keep], y[keep]
    div, curl = _div_curl(lambda u, v: fourthrender.lens_deflection(u, v, lens), x, y)
    r, phi = np.hypot(x, y), np.arctan2(y, x)
    kappa = _epl_kappa(x, y, 1.2, 0.7, 0.3, 2.0)
    kappa += sum(am * np.cos(m * (phi - pm)) / (2 * r) for m, am, pm in lens["multipoles"])
    kappa += 0.06 / (2 * np.hypot(x - 1.05, y - 0.35))
    np.testing.assert_allclose(div, 2 * kappa, rtol=1e-4, atol=1e-6)
    assert np.abs(curl).max() < 1e-4 * kappa.max()


@pytest.mark.parametrize("label", [0, 1])
def test_same_seed_same_bytes(label):
    a, ta = fourthrender.make_object(2, label, 5)
    b, tb = fourthrender.make_object(2, label, 5)
    assert a.shape == (3, 64, 64) and np.isfinite(a).all()
    assert a.tobytes() == b.tobytes() and ta == tb
    assert ta["kind"] == ("lens" if label else fourthrender.nonlens_kind(2, 5))


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """150 lenses and 1,500 non-lenses of the fourth renderer, scored by the bundled model."""
    root = tmp_path_factory.mktemp("fourth")
    frame, manifest = scored_layout(fourthrender.write_layout, root, 150, 1500, seed=7)
    return frame, manifest["threshold"]


def test_its_lenses_and_ellipticals_differ_only_by_lensing(scored):
    for column, p in deflector_ks_pvalues(scored[0]).items():
        assert p > 1e-3, (column, p)


def test_bundled_model_on_the_fourth_renderer(scored):
    """Floors under what the bundled model scored on this seed: AUC 0.917 and recall 0.40 at
    FPR 1e-2 for round 21, 0.920 and 0.40 for round 23, 0.928 and 0.41 for round 31 (on seeds 1
    and 2 of 3,300: AUC 0.919 and 0.945 for round 23, 0.925 and 0.944 for round 31). A
    regression guard, far from issue 12's aim."""
    scored, threshold = scored
    y, s = scored["label"].to_numpy(), scored["score"].to_numpy()
    auc, recall = roc_auc(y, s), recall_at_fpr(y, s, 1e-2)
    top = scored[scored["score"] >= np.quantile(scored.loc[scored["label"] == 0, "score"], 0.99)]
    print(f"AUC {auc:.4f}, recall at FPR 1e-2 {recall:.3f}, top 1%:",
          top["kind"].value_counts().to_dict())
    assert auc >= 0.9
    assert recall >= 0.3
    # its ellipticals, drawn as its deflectors are, are not what the model ranks high. Issue
    # 12's failure was faint, compact ones (r 21-23, R_eff under 0.6") above the threshold.
    # Round 23 ranked no elliptical in the top 1% here; round 31, trained from scratch, ranks 3
    # of these 15 non-lenses there, all bright and large (r 18.7-20.1, R_eff 1.5"-2.2", scores
    # 0.58-0.71, under its threshold)
    ellipticals = scored[scored["kind"] == "elliptical"]
    assert (ellipticals["score"] > threshold).mean() <= 0.002
    high = top[top["kind"] == "elliptical"]
    assert len(high) <= 3  # tight: round 31's count (its CPU scores are deterministic)
    assert not ((high["r_mag"] > 21) | (high["reff_arcsec"] < 0.6)).any(), high
