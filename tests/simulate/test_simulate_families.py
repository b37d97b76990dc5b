"""Rendering families, paired non-lenses and the guard that the classes differ only by lensing."""

from __future__ import annotations

import zlib
from dataclasses import replace

import numpy as np
import pytest
from scipy.stats import ks_2samp, kstest

from lensscan.simulate import kinds as K
from lensscan.simulate import noise as N
from lensscan.simulate.galaxies import counted_mag, span
from lensscan.simulate.population import (
    ALL_FAMILIES,
    FAMILY_COLUMNS,
    Population,
    Rendering,
    SurveyConditions,
    preset,
)
from lensscan.simulate.psf import PSF, psf_kernel
from lensscan.simulate.render import Band, Canvas, mag_to_flux
from lensscan.simulate.survey import SurveySpec, object_kinds, partners, render_range

BROAD_COND, BROAD = preset("broad")


def _only(choice: str, family: str) -> Population:
    """The broad population with one family of ``choice`` and the hsc family of the others."""
    return replace(BROAD, rendering=replace(Rendering(), **{choice: {family: 1.0}}))


@pytest.mark.parametrize(("choice", "family"),
                         [(c, f) for c, names in ALL_FAMILIES.items() for f in names])
def test_every_family_renders_and_is_recorded(choice, family):
    kind = "lens" if choice in ("source", "mass", "deflector") else "elliptical"
    img, truth = K.render_object(kind, np.random.default_rng(1), _only(choice, family),
                                 BROAD_COND)
    assert img.shape == (3, 64, 64) and img.dtype == np.float32 and np.isfinite(img).all()
    assert truth[f"{choice}_family"] == family
    assert set(FAMILY_COLUMNS) <= set(truth)
    if kind == "lens":
        assert truth["n_images"] >= 2 and truth["magnification"] > 1


def _fwhm(kernel: np.ndarray, pixel: float) -> float:
    """FWHM from the area above half maximum (pixels -> arcsec)."""
    return 2 * np.sqrt((kernel >= kernel.max() / 2).sum() / np.pi) * pixel


@pytest.mark.parametrize("family", ALL_FAMILIES["psf"])
def test_psf_kernels_are_normalised_with_the_asked_fwhm(family):
    cond = SurveyConditions(size=128, supersample=4, psf_size=41, pixel_scale=0.05)
    psf = PSF(family, 0.8, beta=3.0, q=0.9, phi=0.3, wing_ratio=2.5, wing_frac=0.15)
    kern = psf_kernel(psf, cond)
    assert kern.sum() == pytest.approx(1.0)
    assert _fwhm(kern, cond.pixel_scale) == pytest.approx(0.8, rel=0.12)
    # a point source drawn anywhere carries the kernel's light
    cv = Canvas(cond)
    assert cv.star(0.1, -0.2, psf).sum() == pytest.approx(1.0, rel=0.02)


@pytest.mark.parametrize("family", ALL_FAMILIES["psf"])
def test_extended_light_gets_the_wings_point_sources_get(family):
    """The broad preset's kernels hold each pixel's share of the PSF's whole light, out to
    where at most ``psf_tail`` of it is left: a galaxy gets the wings a star gets, where a kernel
    cut at ``psf_size`` and renormalised put them into its core (up to 14% of the light for a
    wide double Gaussian in 1.5" seeing)."""
    cond = replace(BROAD_COND, size=48)
    psf = PSF(family, 1.5, beta=2.5, q=0.7, phi=0.3, wing_ratio=3.2, wing_frac=0.3)
    kern = psf_kernel(psf, cond)
    half = kern.shape[0] // 2
    assert kern.shape[0] >= cond.psf_size and kern.sum() <= 1.0
    # all but psf_tail of the light, or every pixel a point of the cutout reaches
    assert kern.sum() >= 1 - cond.psf_tail or kern.shape[0] == 2 * cond.size - 1
    if family == "double_gaussian":  # its wing reaches far beyond psf_size
        assert kern.shape[0] > cond.psf_size
    if family == "elliptical":  # sheared either way (q above 1 is the other axis)
        for q in (0.4, 2.5):
            sheared = PSF("elliptical", 0.7, beta=3.0, q=q, phi=0.3)
            assert psf_kernel(sheared, cond).sum() >= 1 - cond.psf_tail
    c, pix = cond.size // 2, cond.pixel_scale  # a star on the centre of pixel (c, c)
    star = Canvas(cond).star((c - (cond.size - 1) / 2) * pix, (c - (cond.size - 1) / 2) * pix, psf)
    lo, hi = max(c - half, 0), min(c + half + 1, cond.size)
    np.testing.assert_allclose(star[lo:hi, lo:hi],
                               kern[lo - c + half:hi - c + half, lo - c + half:hi - c + half],
                               rtol=1e-6, atol=1e-12)


def test_double_gaussian_has_wider_wings_than_a_gaussian():
    cond = SurveyConditions(psf_size=41)
    gauss = psf_kernel(PSF("gaussian", 0.7), cond)
    double = psf_kernel(PSF("double_gaussian", 0.7, wing_ratio=3.0, wing_frac=0.2), cond)
    r = np.hypot(*np.mgrid[-20:21, -20:21])
    assert double[r > 8].sum() > 10 * gauss[r > 8].sum()


def _bands(sigma: float = 0.05) -> list[Band]:
    return [Band(0.7, 3.0, sigma, 800.0) for _ in range(3)]


def _corr(x: np.ndarray) -> float:
    return float(np.corrcoef(x[:, :-1].ravel(), x[:, 1:].ravel())[0, 1])


@pytest.mark.parametrize("family", ALL_FAMILIES["noise"])
def test_noise_families_keep_the_sky_noise(family):
    rend = replace(Rendering(), corr_pixel_sigma=(1.0, 1.0))
    clean = np.zeros((3, 128, 128))
    noisy = N.observe(np.random.default_rng(0), clean, _bands(), rend, noise=family)
    assert noisy[1].std() == pytest.approx(0.05, rel=0.05)
    if family == "correlated":
        assert _corr(noisy[1]) > 0.2  # neighbouring pixels share noise
    else:
        assert abs(_corr(noisy[1])) < 0.05


def test_backgrounds_leave_halos_and_planes():
    rend = replace(Rendering(), oversub_frac=(0.5, 0.5), gradient_sigma=(3.0, 3.0),
                   pedestal_sigma=0.0)
    yy, xx = np.mgrid[:64, :64]
    galaxy = 50.0 * np.exp(-((xx - 31.5) ** 2 + (yy - 31.5) ** 2) / 20.0)
    clean = np.stack([galaxy] * 3)
    rng = np.random.default_rng(0)
    halo = N.observe(rng, clean, _bands(1e-6), rend, background="oversub")
    ring = (np.hypot(xx - 31.5, yy - 31.5) > 10) & (np.hypot(xx - 31.5, yy - 31.5) < 18)
    assert halo[1][ring].mean() < -0.05  # a dark halo around the bright galaxy
    flat = N.observe(rng, np.zeros((3, 64, 64)), _bands(1.0), rend, background="gradient")
    rows = flat[1].mean(axis=1)
    cols = flat[1].mean(axis=0)
    assert max(np.ptp(rows), np.ptp(cols)) > 1.5  # a plane of ~3 sigma across the cutout


def test_paired_nonlens_is_its_lens_without_the_source():
    pop = replace(BROAD, nonlens_mix={"paired": 1.0},
                  rendering=replace(BROAD.rendering, noise={"white": 1.0},
                                    background={"flat": 1.0}))
    spec = SurveySpec(2, 2, seed=4, population=pop, conditions=BROAD_COND)
    kinds = object_kinds(spec)
    batch = render_range(spec, kinds, 0, 4)
    pair = partners(kinds)
    for j in np.flatnonzero(kinds == "paired"):
        i = pair[j]
        assert kinds[i] == "lens" and batch["paired_with"][j] == batch["object_id"][i]
        assert batch["label"][j] == 0 and np.isnan(batch["theta_e"][j])
        for col in ("central_mag_r", "deflector_reff", "deflector_n", "deflector_g_r",
                    "seeing_i", "sky_sigma_r"):
            assert batch[col][j] == batch[col][i], col
        for col in ("psf_family", "noise_family", "background_family", "neighbours_family",
                    "deflector_family"):
            assert batch[col][j] == batch[col][i], col
        # the same noise stream: the lens minus its twin is the lensed source's light, and
        # almost nothing elsewhere
        diff = (batch["image"][i] - batch["image"][j]).astype(np.float64)
        lensed = mag_to_flux(batch["source_mag_r"][i]) * batch["magnification"][i]
        assert diff[1].sum() == pytest.approx(lensed, rel=0.1)
        assert np.median(np.abs(diff[1])) < 0.05 * batch["sky_sigma_r"][i]


def test_each_lens_is_paired_at_most_once_and_a_pair_shares_its_split():
    """At 1 lens in 16 with paired non-lenses a fifth of the rest, paired slots outnumbered
    lenses: several were byte-identical copies of one scene, split between train and test."""
    spec = SurveySpec(2, 30, seed=3, population=BROAD, conditions=BROAD_COND, test_fraction=0.5)
    kinds = object_kinds(spec)
    pair = partners(kinds)
    paired = np.flatnonzero(kinds == "paired")
    assert 0 < len(paired) <= 2 and len(set(pair[paired])) == len(paired)
    assert (kinds == "elliptical").sum() >= 1
    batch = render_range(spec, kinds, 0, spec.total)
    for j in paired:
        assert batch["split"][j] == batch["split"][pair[j]]
    flat = batch["image"].reshape(spec.total, -1)
    assert len({row.tobytes() for row in flat}) == spec.total  # no two cutouts alike


def _deflectors(kind: str, n: int) -> dict[str, np.ndarray]:
    """Deflector truth of ``n`` objects of ``kind`` drawn by the real renderer on a small
    canvas (the truth does not depend on the canvas). Seeded per kind by a stable digest
    (``hash`` of a string changes with every process)."""
    cond = replace(BROAD_COND, size=24, supersample=1, psf_size=9)
    cols = ("central_mag_r", "deflector_reff", "deflector_n", "deflector_g_r")
    out = {c: np.empty(n) for c in cols}
    stream = zlib.crc32(kind.encode()) % 1000
    for i in range(n):
        _, truth = K.render_object(kind, np.random.default_rng([77, stream, i]), BROAD, cond,
                                   noiseless=True)
        for c in cols:
            out[c][i] = truth.get(c, np.nan)
    return out


@pytest.mark.slow
def test_lenses_and_nonlens_ellipticals_share_one_deflector_population():
    """Two-sample tests on the deflector's magnitude, size, Sersic index and colour: lenses,
    isolated ellipticals, paired non-lenses and the hosts of rings and mergers must be
    indistinguishable by the deflector."""
    lens, ell, paired = (_deflectors(k, 300) for k in ("lens", "elliptical", "paired"))
    hosts = []  # rings and mergers around a galaxy of the deflector population
    for kind, share, n in (("ring", BROAD.ring_host_deflector, 500),
                           ("merger", BROAD.merger_host_deflector, 600)):
        drawn = _deflectors(kind, n)
        hosted = np.isfinite(drawn["deflector_reff"])
        assert abs(hosted.mean() - share) < 0.1, kind
        hosts.append({c: v[hosted] for c, v in drawn.items()})
    for col in lens:
        for other in (ell, paired, *hosts):
            assert ks_2samp(lens[col], other[col]).pvalue > 1e-3, col
    # the test has power: a deflector population 0.7 mag brighter or 30% larger would fail it
    assert ks_2samp(lens["central_mag_r"] - 0.7, ell["central_mag_r"]).pvalue < 1e-3
    assert ks_2samp(lens["deflector_reff"] * 1.3, ell["deflector_reff"]).pvalue < 1e-3
    # and the population is broad: faint, compact and large deflectors included
    mag, reff = np.concatenate([lens["central_mag_r"], ell["central_mag_r"]]), lens[
        "deflector_reff"]
    assert mag.min() < 18.0 and mag.max() > 23.0
    assert reff.min() < 0.4 and reff.max() > 2.5


def test_hsc_preset_renders_as_before_the_families():
    """The hsc preset (test sets) draws one family per choice and consumes its random streams as
    the simulator did before families existed: the flux of the first objects of a survey made
    with that code (commit a6800ab), same seed."""
    spec = SurveySpec(15, 45, seed=11)
    kinds = object_kinds(spec)
    batch = render_range(spec, kinds, 0, 8)
    assert list(kinds[:8]) == ["companions", "lens", "lens", "edge_on", "ring", "elliptical",
                               "elliptical", "lens"]
    before = [1830.68, 347.026, 2962.03, 1094.09, 1693.0, 314.97, 1438.89, 2726.1]
    np.testing.assert_allclose(batch["image"].sum(axis=(1, 2, 3)), before, rtol=1e-4)
    hsc = Rendering()
    for col in FAMILY_COLUMNS:
        assert set(batch[col]) <= {*getattr(hsc, col[: -len("_family")]), "none"}, col
    # spirals, as drawn before broad spirals got their own bulge, arms and knots (commit e96ea0c)
    assert kinds[35] == kinds[45] == "spiral"
    spirals = [render_range(spec, kinds, i, i + 1)["image"].sum() for i in (35, 45)]
    np.testing.assert_allclose(spirals, [469.8567, 555.07263], rtol=1e-4)


def test_a_fixed_setting_draws_nothing():
    """A range of one value is that value and leaves the random stream as it was, so settings
    that broad varies do not move hsc's draws."""
    a, b = np.random.default_rng(3), np.random.default_rng(3)
    assert span(a, (3.0, 3.0)) == 3.0 and a.random() == b.random()
    assert 1.0 <= span(a, (1.0, 4.0)) <= 4.0 and a.random() != b.random()


def test_star_forming_rings_around_deflector_hosts_are_blue_and_bright():
    """``ring_host_blue``: rings around deflector-population hosts that are star-forming rings
    (blue, knotty, any radius) instead of red rings at the Einstein radius. Every independent
    renderer's ring galaxies were false positives of the bundled model (issue 12)."""
    red = replace(BROAD, ring_host_deflector=1.0, ring_host_blue=0.0, neighbours_mean=0.0)
    blue = replace(red, ring_host_blue=1.0)

    def g_over_r(pop: Population) -> np.ndarray:
        ratios = []
        for i in range(40):
            image, truth = K.render_object("ring", np.random.default_rng([5, i]), pop,
                                           BROAD_COND, noiseless=True)
            assert np.isfinite(truth["deflector_reff"])  # a galaxy of the deflector population
            ratios.append(image[0].sum() / image[1].sum())
        return np.array(ratios)

    assert np.median(g_over_r(blue)) > 1.1 * np.median(g_over_r(red))  # 0.397 against 0.330


def test_resonance_rings_around_deflector_hosts_take_any_radius_and_colour():
    """``ring_host_resonance``: rings round deflector-population hosts of any radius and of any
    colour from blue to red, not only red ones at the host's Einstein radius. Bright, broad
    rings round bright early types were the top false positives of a renderer written apart."""
    red = replace(BROAD, ring_host_deflector=1.0, ring_host_blue=0.0, neighbours_mean=0.0,
                  theta_e=(0.6, 0.6), small_theta_e_frac=0.0, ring_radius=(2.5, 3.0),
                  ring_host_dmag=(-1.0, -1.0), rendering=Rendering())  # rings outshine hosts
    resonance = replace(red, ring_host_resonance=1.0)

    def measure(pop: Population) -> tuple[np.ndarray, np.ndarray]:
        colours, radii = [], []
        for i in range(30):
            image, truth = K.render_object("ring", np.random.default_rng([9, i]), pop,
                                           BROAD_COND, noiseless=True)
            assert np.isfinite(truth["deflector_reff"])  # a galaxy of the deflector population
            light = image[1]
            y, x = np.indices(light.shape) - (light.shape[0] - 1) / 2
            colours.append(image[0].sum() / image[1].sum())
            radii.append(np.sqrt((light * (x**2 + y**2)).sum() / light.sum()))
        return np.array(colours), np.array(radii)

    (red_g, red_r), (res_g, res_r) = measure(red), measure(resonance)
    assert np.median(res_r) > 1.2 * np.median(red_r), (res_r, red_r)  # 14.5 against 8.4 pixels
    assert np.median(res_g) > 1.1 * np.median(red_g), (res_g, red_g)  # 0.420 against 0.275
    assert res_g.max() / res_g.min() > 1.5 * red_g.max() / red_g.min()  # 4.5 against 2.2


def test_ring_knot_brightness_is_a_setting():
    """``ring_knot_dmag``: the knots of star-forming rings up to as bright as the ring."""
    pop = replace(BROAD, ring_host_deflector=1.0, ring_host_blue=1.0, ring_smooth=0.0,
                  neighbours_mean=0.0)
    faint, bright = [], []
    for i in range(20):
        for dmag, out in (((4.0, 4.0), faint), ((0.0, 0.0), bright)):
            image, _ = K.render_object("ring", np.random.default_rng([13, i]),
                                       replace(pop, ring_knot_dmag=dmag), BROAD_COND,
                                       noiseless=True)
            out.append(image.sum())
    assert np.mean(np.array(bright) > np.array(faint)) > 0.5  # where a ring has knots


def test_ring_axis_ratio_sets_how_flat_rings_are_seen():
    """``ring_axis_ratio``: rings seen at any inclination. Lensing hardly makes a ring flatter
    than its lens, so flattened rings teach the model a cue every renderer shares."""
    bright = replace(BROAD, ring_host_deflector=0.0, ring_smooth=1.0, ring_mag_r=(16.5, 16.5),
                     ring_radius=(1.5, 2.5), neighbours_mean=0.0)

    def axis_ratios(q: tuple[float, float]) -> np.ndarray:
        out = []
        for i in range(12):
            image, _ = K.render_object("ring", np.random.default_rng([7, i]),
                                       replace(bright, ring_axis_ratio=q), BROAD_COND,
                                       noiseless=True)
            light = np.clip(image.sum(axis=0), 0, None)  # over-subtracted backgrounds
            y, x = np.indices(light.shape)
            w = light / light.sum()
            mx, my = (w * x).sum(), (w * y).sum()
            cov = np.cov(np.stack([x.ravel() - mx, y.ravel() - my]), aweights=w.ravel())
            lo, hi = np.linalg.eigvalsh(cov)
            out.append(np.sqrt(lo / hi))
        return np.array(out)

    flat, round_ = axis_ratios((0.2, 0.3)), axis_ratios((0.95, 1.0))
    assert np.median(flat) < 0.5 < 0.85 < np.median(round_), (flat, round_)


def test_source_magnitudes_follow_galaxy_counts():
    """``source_mag_counts``: lensed sources as faint galaxies are counted, dN/dm ~ 10**(a m),
    so most arcs lie magnitudes under their deflector (the independent renderers' lenses and the
    sky's); at 0 the draw is the uniform one it always was, on the same random stream."""
    lo, hi, a = 20.5, 26.0, 0.33
    rng = np.random.default_rng(3)
    mags = np.array([counted_mag(rng, (lo, hi), a) for _ in range(4000)])

    def cdf(m):
        return (10 ** (a * (np.asarray(m) - lo)) - 1) / (10 ** (a * (hi - lo)) - 1)

    assert kstest(mags, cdf).pvalue > 0.01
    assert kstest(mags, "uniform", args=(lo, hi - lo)).pvalue < 1e-6
    r1, r2 = np.random.default_rng(4), np.random.default_rng(4)
    assert counted_mag(r1, (lo, hi), 0.0) == r2.uniform(lo, hi)
    counted_mag(r1, (lo, hi), a), r2.uniform()  # one draw whatever the slope
    assert r1.bit_generator.state == r2.bit_generator.state
    bright = [counted_mag(rng, (lo, hi), -a) for _ in range(400)]  # falling counts
    assert np.median(bright) < (lo + hi) / 2 < np.median(mags)

    def contrast(pop: Population) -> float:
        """Median of the lensed source's r magnitude minus its deflector's."""
        out = []
        for i in range(16):
            _, t = K.render_object("lens", np.random.default_rng([9, i]), pop, BROAD_COND,
                                   noiseless=True)
            out.append(t["source_mag_r"] - 2.5 * np.log10(t["magnification"])
                       - t["central_mag_r"])
        return float(np.median(out))

    quiet = replace(BROAD, neighbours_mean=0.0)
    assert contrast(replace(quiet, source_mag_counts=a)) > contrast(quiet) + 0.5
