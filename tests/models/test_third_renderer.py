"""The bundled model on a third renderer, written by a separate author (``support.thirdrender``).

``support.otherrender`` was written by lensscan's own authors and may share their blind spots;
``support.thirdrender`` was written by someone shown only the output format and a list of
things to vary (issue 12): power-law masses deflected by FFT, knotty and shapelet sources,
von Karman / Kolmogorov / core-halo PSFs, resampled noise, faint compact ellipticals and small
rings among the non-lenses. These tests keep it apart from lensscan, check its lensing and its
deflector population, and hold the bundled ensemble to floors on its images, scored as an
outside test set is (the DeepLense ``.npy`` layout through ``import-npy``)."""

from __future__ import annotations

import numpy as np
import pytest
from support import deflector_ks_pvalues, scored_layout, thirdrender, top_level_imports

from lensscan.train.metrics import recall_at_fpr, roc_auc


def test_third_renderer_shares_no_code_with_lensscan():
    assert top_level_imports(thirdrender) <= {"__future__", "argparse", "csv", "math", "time",
                                              "collections", "functools", "pathlib", "numpy",
                                              "scipy"}


def test_an_isothermal_sphere_deflects_by_its_einstein_radius():
    lens = {"te": 1.2, "s": 2.0, "q": 0.9999, "pa": 0.0, "a4": 0.0, "sub": False}
    ax, ay = thirdrender.deflect(thirdrender.kappa_map(lens, 0.0, 0.0))
    r = np.hypot(thirdrender.XO, thirdrender.YO)
    ring = (r > 0.5) & (r < 4.0)
    np.testing.assert_allclose(np.hypot(ax, ay)[ring], 1.2, rtol=0.01)
    radial = (ax * thirdrender.XO + ay * thirdrender.YO)[ring] / r[ring]
    np.testing.assert_allclose(radial, 1.2, rtol=0.01)


def test_same_seed_same_bytes():
    a, ta = thirdrender.make_object(2, 0, 5, "ring")
    b, tb = thirdrender.make_object(2, 0, 5, "ring")
    assert a.shape == (3, 64, 64) and np.isfinite(a).all()
    assert a.tobytes() == b.tobytes() and ta == tb


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """100 lenses and 1,000 non-lenses of the third renderer, scored by the bundled model."""
    root = tmp_path_factory.mktemp("third")
    frame, _ = scored_layout(thirdrender.write_layout, root, 100, 1000, seed=7)
    return frame


def test_its_lenses_and_ellipticals_differ_only_by_lensing(scored):
    for column, p in deflector_ks_pvalues(scored).items():
        assert p > 1e-3, (column, p)


def test_bundled_model_on_the_third_renderer(scored):
    """Floors under what the bundled model scored on this seed: AUC 0.958 and recall 0.25 at
    FPR 1e-2 for round 15, 0.960 and 0.36 for round 18 (on seeds 1 and 2 of 3,300: AUC 0.948
    and 0.938, then 0.953 and 0.943). A regression guard, far from issue 12's aim."""
    y, s = scored["label"].to_numpy(), scored["score"].to_numpy()
    auc, recall = roc_auc(y, s), recall_at_fpr(y, s, 1e-2)
    print(f"AUC {auc:.4f}, recall at FPR 1e-2 {recall:.3f}")
    assert auc >= 0.94
    assert recall >= 0.2
    # faint, compact ellipticals (issue 12's first independent set) are not what it ranks high
    top = scored[scored["score"] >= np.quantile(scored.loc[scored["label"] == 0, "score"], 0.99)]
    assert (top["kind"] == "elliptical").sum() <= 2
