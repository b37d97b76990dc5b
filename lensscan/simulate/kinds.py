"""One function per object kind: lenses and the contaminants that fool lens finders.

Each ``_draw_<kind>`` adds components to a :class:`Canvas` and returns truth values;
:func:`render_object` observes the canvas (PSF, noise) and returns the cutout with its truth.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from lenstronomy.LensModel.Solver.lens_equation_solver import LensEquationSolver

from lensscan.simulate.population import Population, SurveyConditions
from lensscan.simulate.render import (
    Band,
    Canvas,
    add_noise,
    draw_bands,
    lens_model,
    mag_to_flux,
)

Truth = dict[str, float]


def _colour_fluxes(mag_r: float, g_r: float, r_i: float) -> np.ndarray:
    """g, r, i fluxes from an r magnitude and two colours."""
    return mag_to_flux(np.array([mag_r + g_r, mag_r, mag_r - r_i]))


def _red(rng: np.random.Generator, pop: Population, mag_r: float) -> np.ndarray:
    return _colour_fluxes(mag_r, rng.uniform(*pop.red_g_r), rng.uniform(*pop.red_r_i))


def _blue(rng: np.random.Generator, pop: Population, mag_r: float) -> np.ndarray:
    return _colour_fluxes(mag_r, rng.uniform(*pop.blue_g_r), rng.uniform(*pop.blue_r_i))


def _draw_theta_e(rng: np.random.Generator, pop: Population) -> float:
    lo, hi = pop.small_theta_e if rng.random() < pop.small_theta_e_frac else pop.theta_e
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _deflector(rng, pop: Population, cv: Canvas, cx: float, cy: float, theta_e: float) -> dict:
    """An early-type galaxy sized and lit like a deflector of Einstein radius ``theta_e``."""
    reff = float(np.clip(theta_e * rng.uniform(*pop.reff_over_theta_e), 0.35, 3.5))
    mag_i = rng.uniform(*pop.deflector_mag_i) - 2.5 * np.log10(theta_e)
    g_r, r_i = rng.uniform(*pop.red_g_r), rng.uniform(*pop.red_r_i)
    q, phi = rng.uniform(*pop.deflector_q), rng.uniform(0, np.pi)
    mag_r = mag_i + r_i
    cv.sersic(_colour_fluxes(mag_r, g_r, r_i), reff, rng.uniform(*pop.deflector_n), q, phi, cx, cy)
    return dict(q=q, phi=phi, mag_r=mag_r)


def _sersic_galaxy(rng, pop, cv, cx, cy, mag_r, blue: bool, reff=(0.15, 0.8), q=(0.3, 1.0)):
    flux = _blue(rng, pop, mag_r) if blue else _red(rng, pop, mag_r)
    cv.sersic(flux, rng.uniform(*reff), rng.uniform(0.7, 4.0), rng.uniform(*q),
              rng.uniform(0, np.pi), cx, cy)


def _neighbours(rng, pop: Population, cv: Canvas) -> None:
    """Random faint field galaxies anywhere outside the central 1.5 arcsec."""
    half = cv.cond.size * cv.cond.pixel_scale / 2
    for _ in range(rng.poisson(pop.neighbours_mean)):
        while True:
            x, y = rng.uniform(-half, half, 2)
            if np.hypot(x, y) > 1.5:
                break
        _sersic_galaxy(rng, pop, cv, x, y, rng.uniform(*pop.neighbour_mag_r), rng.random() < 0.5)


def _centre(rng, pop: Population, cv: Canvas) -> tuple[float, float]:
    j = pop.center_jitter_pix * cv.cond.pixel_scale
    return float(rng.uniform(-j, j)), float(rng.uniform(-j, j))


def _bright_images(kw_lens, sx: float, sy: float, theta_e: float) -> int:
    """Images of the point (sx, sy) brighter than |mu| = 0.1 (the demagnified core image is not
    counted)."""
    xs, ys = LensEquationSolver(lens_model()).image_position_from_source(
        sx, sy, kw_lens, min_distance=theta_e / 15, search_window=4 * theta_e,
        precision_limit=1e-8, num_iter_max=50)
    mu = lens_model().magnification(xs, ys, kw_lens) if len(xs) else np.zeros(0)
    return int((np.abs(mu) >= 0.1).sum())


def _multiply_imaged_source(rng, pop: Population, kw_lens, theta_e: float, cx: float,
                            cy: float) -> tuple[float, float, int]:
    """A source centre that the lens images at least twice: a lens by definition. Most sources
    are drawn well inside the caustics (favouring high magnification); ``near_caustic_frac`` of
    the lenses are drawn near the caustics instead (one bright arc and a faint counter-image: the
    hard cases), redrawing in that range until the source is multiply imaged. A source outside
    the caustics is a singly imaged blue companion, which the simulator makes as the
    ``companions`` non-lens kind."""
    near = rng.random() < pop.near_caustic_frac
    lo, hi = pop.near_caustic_beta if near else (0.0, pop.inner_beta)
    for _ in range(pop.source_draws):
        beta = theta_e * rng.uniform(lo, hi)
        ang = rng.uniform(0, 2 * np.pi)
        sx, sy = cx + beta * np.cos(ang), cy + beta * np.sin(ang)
        n = _bright_images(kw_lens, sx, sy, theta_e)
        if n >= 2:
            return sx, sy, n
    sx, sy = cx + 0.05 * theta_e, cy
    return sx, sy, _bright_images(kw_lens, sx, sy, theta_e)


def _draw_lens(rng, pop: Population, cv: Canvas, bands: list[Band]) -> Truth:
    cx, cy = _centre(rng, pop, cv)
    theta_e = _draw_theta_e(rng, pop)
    d = _deflector(rng, pop, cv, cx, cy, theta_e)
    q_m = float(np.clip(d["q"] + rng.normal(0, pop.mass_q_scatter), 0.4, 1.0))
    phi_m = d["phi"] + np.deg2rad(rng.normal(0, pop.mass_angle_scatter_deg))
    e = (1 - q_m) / (1 + q_m)
    gamma, phi_g = rng.uniform(*pop.shear), rng.uniform(0, np.pi)
    kw_lens = [
        dict(theta_E=theta_e, e1=e * np.cos(2 * phi_m), e2=e * np.sin(2 * phi_m),
             s_scale=pop.core_radius, center_x=cx, center_y=cy),
        dict(gamma1=gamma * np.cos(2 * phi_g), gamma2=gamma * np.sin(2 * phi_g), ra_0=cx, dec_0=cy),
    ]
    sx, sy, n_images = _multiply_imaged_source(rng, pop, kw_lens, theta_e, cx, cy)
    bx, by = cv.ray_shoot(kw_lens)
    mag_r = rng.uniform(*pop.source_mag_r)
    g_r, r_i = rng.uniform(*pop.blue_g_r), rng.uniform(*pop.blue_r_i)
    n_clumps = rng.integers(pop.clumps[0], pop.clumps[1] + 1)
    clump_frac = rng.uniform(*pop.clump_flux_frac) if n_clumps else 0.0
    reff = rng.uniform(*pop.source_reff)
    first = len(cv.components)
    body = _colour_fluxes(mag_r, g_r, r_i) * (1 - clump_frac)
    cv.sersic(body, reff, rng.uniform(*pop.source_n), rng.uniform(*pop.source_q),
              rng.uniform(0, np.pi), sx, sy, coords=(bx, by))
    for _ in range(n_clumps):
        ox, oy = rng.normal(0, reff, 2)
        flux = _colour_fluxes(mag_r, g_r - rng.uniform(0, 0.3), r_i) * clump_frac / n_clumps
        cv.sersic(flux, rng.uniform(*pop.clump_reff), 1.0, 1.0, 0.0, sx + ox, sy + oy,
                  coords=(bx, by))
    source = cv.components[first:]
    lensed_r = sum(unit.sum() * flux[1] for unit, flux in source)
    unlensed_r = mag_to_flux(mag_r)
    return dict(theta_e=theta_e, source_mag_r=mag_r, magnification=float(lensed_r / unlensed_r),
                n_images=float(n_images), central_mag_r=d["mag_r"],
                source_first=float(first),
                source_end=float(len(cv.components)))


def _draw_elliptical(rng, pop, cv, bands) -> Truth:
    cx, cy = _centre(rng, pop, cv)
    d = _deflector(rng, pop, cv, cx, cy, _draw_theta_e(rng, pop))
    return dict(central_mag_r=d["mag_r"])


def _polar(cv: Canvas, cx, cy, q, phi) -> tuple[np.ndarray, np.ndarray]:
    """Elliptical radius and angle of every sub-pixel around (cx, cy)."""
    dx, dy = cv.x - cx, cv.y - cy
    c, s = np.cos(phi), np.sin(phi)
    u, v = c * dx + s * dy, (-s * dx + c * dy) / q
    return np.hypot(u, v), np.arctan2(v, u)


def _on_ellipse(cx, cy, rad, ang, q, phi) -> tuple[float, float]:
    """Sky position of angle ``ang`` at semi-major radius ``rad`` on an ellipse (q, phi)."""
    u, v = rad * np.cos(ang), rad * np.sin(ang) * q
    return cx + np.cos(phi) * u - np.sin(phi) * v, cy + np.sin(phi) * u + np.cos(phi) * v


def _draw_spiral(rng, pop, cv, bands) -> Truth:
    cx, cy = _centre(rng, pop, cv)
    mag_r = rng.uniform(*pop.spiral_mag_r)
    reff, q, phi = rng.uniform(*pop.spiral_reff), rng.uniform(0.35, 1.0), rng.uniform(0, np.pi)
    bulge_frac = rng.uniform(0.1, 0.5)
    cv.sersic(_red(rng, pop, mag_r) * bulge_frac, reff * rng.uniform(0.15, 0.35),
              rng.uniform(2.5, 4.0), min(1.0, q + 0.2), phi, cx, cy)
    r, th = _polar(cv, cx, cy, q, phi)
    h = reff / 1.678
    m = rng.integers(*pop.spiral_arms, endpoint=True)
    pitch = np.deg2rad(rng.uniform(12, 30))
    phase = rng.uniform(0, 2 * np.pi)
    wave = np.cos(m * (th - np.log(np.maximum(r, 1e-3) / h) / np.tan(pitch)) + phase)
    disk = np.exp(-r / h)
    arms = disk * np.clip(wave, 0, None) ** 3
    disk_flux = _colour_fluxes(mag_r, rng.uniform(0.3, 0.8), rng.uniform(0.1, 0.4))
    cv.custom(disk, disk_flux * (1 - bulge_frac) * 0.55)
    cv.custom(arms, _blue(rng, pop, mag_r) * (1 - bulge_frac) * 0.45)
    for _ in range(rng.integers(2, 9)):  # blue star-forming knots along the arms
        rad = h * rng.uniform(0.8, 3.0)
        ang = (np.log(rad / h) / np.tan(pitch) - phase + 2 * np.pi * rng.integers(m)) / m
        kx, ky = _on_ellipse(cx, cy, rad, ang, q, phi)
        _sersic_galaxy(rng, pop, cv, kx, ky, mag_r + rng.uniform(2.5, 4.5), True,
                       reff=(0.03, 0.1), q=(0.7, 1.0))
    return dict(central_mag_r=mag_r)


def _draw_ring(rng, pop, cv, bands) -> Truth:
    cx, cy = _centre(rng, pop, cv)
    radius = rng.uniform(*pop.ring_radius)
    core_mag = rng.uniform(19.5, 22.0)
    _sersic_galaxy(rng, pop, cv, cx, cy, core_mag, rng.random() < 0.3,
                   reff=(0.2, max(0.25, radius * 0.5)), q=(0.6, 1.0))
    q, phi = rng.uniform(0.55, 1.0), rng.uniform(0, np.pi)
    r, th = _polar(cv, cx, cy, q, phi)
    width = rng.uniform(*pop.ring_width)
    ring = np.exp(-0.5 * ((r - radius) / width) ** 2)
    ring *= 1 + rng.uniform(0, 0.8) * np.cos(th - rng.uniform(0, 2 * np.pi))  # lopsided
    mag_r = rng.uniform(*pop.ring_mag_r)
    cv.custom(ring, _blue(rng, pop, mag_r))
    for _ in range(rng.integers(0, 6)):  # knots on the ring
        ang = rng.uniform(0, 2 * np.pi)
        kx, ky = _on_ellipse(cx, cy, radius, ang, q, phi)
        _sersic_galaxy(rng, pop, cv, kx, ky, mag_r + rng.uniform(1.0, 2.5), True,
                       reff=(0.03, 0.1), q=(0.6, 1.0))
    return dict(central_mag_r=core_mag)


def _draw_merger(rng, pop, cv, bands) -> Truth:
    cx, cy = _centre(rng, pop, cv)
    sep, ang = rng.uniform(*pop.merger_separation), rng.uniform(0, 2 * np.pi)
    mag1 = rng.uniform(19.0, 21.5)
    _sersic_galaxy(rng, pop, cv, cx, cy, mag1, rng.random() < 0.4, reff=(0.3, 1.2))
    _sersic_galaxy(rng, pop, cv, cx + sep * np.cos(ang), cy + sep * np.sin(ang),
                   mag1 + rng.uniform(0, 1.5), rng.random() < 0.5, reff=(0.2, 1.0))
    for _ in range(rng.integers(1, 3)):  # tidal tails: long, thin, bluish
        t_ang = ang + rng.normal(np.pi / 2, 0.6)
        dist = rng.uniform(0.8, 2.5)
        cv.sersic(_blue(rng, pop, mag1 + rng.uniform(1.5, 3.0)), rng.uniform(0.6, 1.8), 0.7,
                  rng.uniform(0.12, 0.3), t_ang, cx + dist * np.cos(t_ang),
                  cy + dist * np.sin(t_ang))
    return dict(central_mag_r=mag1)


def _draw_companions(rng, pop, cv, bands) -> Truth:
    cx, cy = _centre(rng, pop, cv)
    d = _deflector(rng, pop, cv, cx, cy, _draw_theta_e(rng, pop))
    for _ in range(rng.integers(1, 4)):
        rad, ang = rng.uniform(*pop.companion_radius), rng.uniform(0, 2 * np.pi)
        tangential = rng.random() < 0.6
        q = rng.uniform(0.25, 0.6) if tangential else rng.uniform(0.5, 1.0)
        pa = ang + np.pi / 2 if tangential else rng.uniform(0, np.pi)
        cv.sersic(_blue(rng, pop, rng.uniform(*pop.companion_mag_r)), rng.uniform(0.08, 0.45),
                  rng.uniform(0.5, 1.5), q, pa, cx + rad * np.cos(ang), cy + rad * np.sin(ang))
    return dict(central_mag_r=d["mag_r"])


def _draw_edge_on(rng, pop, cv, bands) -> Truth:
    cx, cy = _centre(rng, pop, cv)
    mag_r = rng.uniform(19.0, 22.0)
    cv.sersic(_colour_fluxes(mag_r, rng.uniform(0.4, 1.2), rng.uniform(0.2, 0.5)),
              rng.uniform(0.8, 2.5), rng.uniform(0.6, 1.2), rng.uniform(*pop.edge_on_q),
              rng.uniform(0, np.pi), cx, cy)
    if rng.random() < 0.5:
        _sersic_galaxy(rng, pop, cv, cx, cy, mag_r + rng.uniform(1, 2.5), False,
                       reff=(0.15, 0.4), q=(0.6, 1.0))
    return dict(central_mag_r=mag_r)


def _draw_star(rng, pop, cv, bands) -> Truth:
    truth = (_draw_elliptical if rng.random() < 0.6 else _draw_spiral)(rng, pop, cv, bands)
    for _ in range(rng.integers(1, 3)):
        rad, ang = rng.uniform(*pop.star_radius), rng.uniform(0, 2 * np.pi)
        g_r = rng.uniform(0.2, 1.5)  # along the stellar locus
        r_i = max(0.4 * g_r - 0.05, 1.5 * g_r - 1.3) + rng.normal(0, 0.05)
        flux = _colour_fluxes(rng.uniform(*pop.star_mag_r), g_r, r_i)
        cv.point(rad * np.cos(ang), rad * np.sin(ang), flux)
    return truth


def _draw_blank(rng, pop, cv, bands) -> Truth:
    half = cv.cond.size * cv.cond.pixel_scale / 2
    for _ in range(rng.integers(0, 3)):
        x, y = rng.uniform(-half, half, 2)
        _sersic_galaxy(rng, pop, cv, x, y, rng.uniform(22.5, 25.5), rng.random() < 0.5)
    return {}


KINDS: dict[str, Callable] = {
    "lens": _draw_lens,
    "elliptical": _draw_elliptical,
    "spiral": _draw_spiral,
    "ring": _draw_ring,
    "merger": _draw_merger,
    "companions": _draw_companions,
    "edge_on": _draw_edge_on,
    "star": _draw_star,
    "blank": _draw_blank,
}
NONLENS_KINDS = tuple(k for k in KINDS if k != "lens")

#: Truth columns written for every object (NaN where a value does not apply).
TRUTH_COLUMNS = ("theta_e", "source_mag_r", "magnification", "n_images", "arc_snr",
                 "central_mag_r", "seeing_g", "seeing_r", "seeing_i", "sky_sigma_r")


def render_object(
    kind: str,
    rng: np.random.Generator,
    pop: Population | None = None,
    cond: SurveyConditions | None = None,
    noiseless: bool = False,
) -> tuple[np.ndarray, dict[str, float]]:
    """Draw one cutout of ``kind``.

    Returns
    -------
    image : ndarray, float32, shape (3, 64, 64)
        g, r, i linear fluxes (zero-point 27) with PSF and noise (unless ``noiseless``).
    truth : dict
        The values of :data:`TRUTH_COLUMNS` (NaN where not applicable).
    """
    pop = pop or Population()
    cond = cond or SurveyConditions()
    bands = draw_bands(rng, cond)
    cv = Canvas(cond)
    raw = KINDS[kind](rng, pop, cv, bands)
    _neighbours(rng, pop, cv)
    clean = cv.noiseless(bands)
    truth = {k: float("nan") for k in TRUTH_COLUMNS}
    truth.update({k: v for k, v in raw.items() if k in truth})
    truth.update(seeing_g=bands[0].fwhm, seeing_r=bands[1].fwhm, seeing_i=bands[2].fwhm,
                 sky_sigma_r=bands[1].sky_sigma)
    if kind == "lens":
        source = cv.components[int(raw["source_first"]):int(raw["source_end"])]
        arc_img = Canvas(cond, components=source).noiseless(bands)  # lensed source alone
        sky_var = np.array([b.sky_sigma**2 for b in bands])[:, None, None]
        gain = np.array([b.gain for b in bands])[:, None, None]
        var = sky_var + np.clip(clean, 0, None) / gain
        above = arc_img > np.sqrt(var)
        truth["arc_snr"] = float(np.sqrt((arc_img[above] ** 2 / var[above]).sum()))
    image = clean.astype(np.float32) if noiseless else add_noise(rng, clean, bands)
    return image, truth

