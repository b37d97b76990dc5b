"""The simulator's physics, determinism and formats."""

from __future__ import annotations

import numpy as np
import pytest
from lenstronomy.LensModel.Solver.lens_equation_solver import LensEquationSolver

from lensscan.io.npy import import_npy
from lensscan.io.shards import read_shard
from lensscan.io.storage import list_shards
from lensscan.simulate import kinds as K
from lensscan.simulate import lensing as L
from lensscan.simulate.population import Population, SurveyConditions
from lensscan.simulate.render import Canvas, lens_model, mag_to_flux
from lensscan.simulate.survey import SurveySpec, simulate_survey


def test_lensed_flux_equals_point_magnification():
    """A compact source's lensed flux is its unlensed flux times the sum of |mu| of its images."""
    cond = SurveyConditions(supersample=8)
    cv = Canvas(cond)
    kw = [dict(theta_E=1.2, e1=0.08, e2=-0.03, s_scale=0.03, center_x=0.0, center_y=0.0),
          dict(gamma1=0.03, gamma2=0.01, ra_0=0.0, dec_0=0.0)]
    for sx, sy in [(0.5, 0.3), (0.7, -0.2), (0.3, 0.4), (0.02, 0.01)]:  # doubles and a quad
        cv.components.clear()
        unit = cv.sersic(np.ones(3), 0.03, 1.0, 1.0, 0.0, sx, sy, coords=cv.ray_shoot(kw))
        xs, ys = LensEquationSolver(lens_model()).image_position_from_source(sx, sy, kw)
        mu = np.abs(lens_model().magnification(xs, ys, kw)).sum()
        assert len(xs) >= 2
        assert unit.sum() == pytest.approx(mu, rel=0.03), (sx, sy, len(xs))


def _lens_parts(seed):
    rng = np.random.default_rng(seed)
    cond, pop = SurveyConditions(), Population()
    cv = Canvas(cond)
    truth = L.draw_lens(rng, pop, cv, None)
    first, end = int(truth["source_first"]), int(truth["source_end"])
    deflector = cv.components[0]
    source = cv.components[first:end]
    return truth, deflector, source, cond


def test_lenses_are_multiply_imaged_with_arcs_near_theta_e():
    multiple, near = 0, 0
    for seed in range(40):
        truth, _, source, cond = _lens_parts(seed)
        multiple += truth["n_images"] >= 2
        img = sum(unit * flux[1] for unit, flux in source)
        yy, xx = (np.mgrid[:cond.size, :cond.size] - (cond.size - 1) / 2) * cond.pixel_scale
        r = np.hypot(xx, yy)
        ring = (r > 0.5 * truth["theta_e"]) & (r < 2.0 * truth["theta_e"])
        near += img[ring].sum() > 0.6 * img.sum()  # most lensed light around theta_E
        assert truth["magnification"] > 1.5, (seed, truth["magnification"])
    assert multiple == 40, multiple  # a lens images its source at least twice, by definition
    assert near >= 36, near  # the arcs sit around the Einstein radius, outside the core


def test_near_caustic_lenses_stay_near_the_caustics():
    """The hard-case share is drawn near the caustics and redrawn there until multiply imaged:
    a miss must not fall back to the easy inner range."""
    rng = np.random.default_rng(0)
    kw = [dict(theta_E=1.2, e1=0.1, e2=0.0, s_scale=0.03, center_x=0.0, center_y=0.0),
          dict(gamma1=0.02, gamma2=0.0, ra_0=0.0, dec_0=0.0)]
    for frac, (lo, hi) in [(1.0, (0.55, 0.9)), (0.0, (0.0, 0.7))]:
        pop = Population(near_caustic_frac=frac)
        for _ in range(15):
            sx, sy, n = L.multiply_imaged_source(rng, pop, kw, 1.2, 0.0, 0.0)
            beta = np.hypot(sx, sy) / 1.2
            assert n >= 2 and lo <= beta <= hi, (frac, beta, n)


def test_source_is_bluer_than_deflector():
    for seed in range(20):
        _, (d_unit, d_flux), source, _ = _lens_parts(seed)
        s_flux = sum(flux * unit.sum() for unit, flux in source)
        d_gr = -2.5 * np.log10(d_flux[0] / d_flux[1])
        s_gr = -2.5 * np.log10(s_flux[0] / s_flux[1])
        d_ri = -2.5 * np.log10(d_flux[1] / d_flux[2])
        assert s_gr < d_gr - 0.5, (seed, s_gr, d_gr)
        assert 0.3 < d_ri < 0.7


def test_noise_matches_configured_depth():
    clean, truth = K.render_object("blank", np.random.default_rng(3), noiseless=True)
    noisy, truth2 = K.render_object("blank", np.random.default_rng(3))
    assert truth.keys() == truth2.keys()
    assert all(truth[k] == truth2[k] or np.isnan(truth[k]) and np.isnan(truth2[k]) for k in truth)
    resid = (noisy - clean)[1]
    faint = clean[1] < 0.1 * truth["sky_sigma_r"]
    assert resid[faint].std() == pytest.approx(truth["sky_sigma_r"], rel=0.05)
    # expected HSC Wide r-band sky noise for ~0.6-1.1" seeing at depth 26.1 +- 0.3
    assert 0.03 < truth["sky_sigma_r"] < 0.12


def test_brightness_in_linear_flux_with_zero_point():
    cv = Canvas(SurveyConditions())
    unit = cv.sersic(mag_to_flux(np.array([21.0, 20.0, 19.5])), 0.5, 1.0, 1.0, 0.0, 0.0, 0.0)
    assert unit.sum() == pytest.approx(1.0, rel=0.02)
    assert mag_to_flux(27.0) == pytest.approx(1.0)


@pytest.mark.parametrize("kind", K.NONLENS_KINDS)
def test_every_nonlens_kind_renders(kind):
    img, truth = K.render_object(kind, np.random.default_rng(0))
    assert img.shape == (3, 64, 64) and img.dtype == np.float32 and np.isfinite(img).all()
    assert np.isnan(truth["theta_e"])


def test_same_seed_same_bytes_any_process_count(tmp_path):
    spec = SurveySpec(3, 9, seed=5)
    simulate_survey(str(tmp_path / "a"), spec, shard_size=4, workers=1, progress=False)
    simulate_survey(str(tmp_path / "b"), spec, shard_size=4, workers=2, progress=False)
    simulate_survey(str(tmp_path / "c"), spec, shard_size=12, workers=1, progress=False)
    a = [p.read_bytes() for p in sorted((tmp_path / "a").iterdir())]
    b = [p.read_bytes() for p in sorted((tmp_path / "b").iterdir())]
    assert a == b
    ia = np.concatenate([read_shard(u)["image"] for u in list_shards(str(tmp_path / "a"))])
    ic = read_shard(list_shards(str(tmp_path / "c"))[0])["image"]
    np.testing.assert_array_equal(ia, ic)
    other = SurveySpec(3, 9, seed=6)
    simulate_survey(str(tmp_path / "d"), other, shard_size=12, workers=1, progress=False)
    assert not np.array_equal(read_shard(list_shards(str(tmp_path / "d"))[0])["image"], ic)


def test_truth_columns_and_labels(sim_survey):
    rows = [read_shard(u) for u in list_shards(sim_survey)]
    label = np.concatenate([r["label"] for r in rows])
    kind = np.concatenate([r["kind"] for r in rows])
    theta = np.concatenate([r["theta_e"] for r in rows])
    assert label.sum() == 12 and len(label) == 60
    assert ((kind == "lens") == (label == 1)).all()
    assert np.isfinite(theta[label == 1]).all() and np.isnan(theta[label == 0]).all()
    assert (np.concatenate([r["status"] for r in rows]) == "ok").all()


def test_npy_format_is_importable(tmp_path):
    simulate_survey(str(tmp_path / "npy"), SurveySpec(4, 8, seed=1, test_fraction=0.5),
                    fmt="npy", workers=1, progress=False)
    counts = import_npy(str(tmp_path / "npy"), str(tmp_path / "pq"), progress=False)
    assert counts["files"] == 12
    assert counts.get("train_lenses", 0) + counts.get("test_lenses", 0) == 4


def test_fits_format(tmp_path):
    simulate_survey(str(tmp_path / "f"), SurveySpec(2, 3, seed=1), fmt="fits", workers=1,
                    progress=False)
    got = read_shard(list_shards(str(tmp_path / "f"))[0])
    assert got["image"].shape == (5, 3, 64, 64) and got["label"].sum() == 2


def test_mosaic_png(tmp_path):
    from lensscan.simulate.mosaic import kind_mosaic

    path = kind_mosaic(str(tmp_path / "m.png"), per_kind=2, kinds=("lens", "ring"))
    with open(path, "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
