"""Lenses: an Einstein radius, a mass model of the drawn family, a multiply imaged source.

A lens is a deflector (:func:`~lensscan.simulate.galaxies.deflector`, the same distribution as
every non-lens elliptical) whose mass images a background source at least twice.
"""

from __future__ import annotations

import numpy as np
from lenstronomy.LensModel.Solver.lens_equation_solver import LensEquationSolver

from lensscan.simulate import galaxies as G
from lensscan.simulate.population import Population
from lensscan.simulate.render import Band, Canvas, lens_model, mag_to_flux

Truth = dict[str, float | str]


def draw_theta_e(rng: np.random.Generator, pop: Population) -> float:
    """Einstein radius, arcsec: log-uniform, with a share from the small-separation tail."""
    lo, hi = pop.small_theta_e if rng.random() < pop.small_theta_e_frac else pop.theta_e
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def mass_model(rng: np.random.Generator, pop: Population, family: str, theta_e: float,
               d: dict, cx: float, cy: float) -> tuple[str, list[dict]]:
    """Profiles key (:data:`~lensscan.simulate.render.MASS_PROFILES`) and lenstronomy kwargs
    of a mass of ``family`` that follows the deflector's light ``d`` (axis ratio, angle)."""
    q_m = float(np.clip(d["q"] + rng.normal(0, pop.mass_q_scatter), 0.4, 1.0))
    phi_m = d["phi"] + np.deg2rad(rng.normal(0, pop.mass_angle_scatter_deg))
    e = (1 - q_m) / (1 + q_m)
    gamma, phi_g = rng.uniform(*pop.shear), rng.uniform(0, np.pi)
    e1, e2 = e * np.cos(2 * phi_m), e * np.sin(2 * phi_m)
    shear = dict(gamma1=gamma * np.cos(2 * phi_g), gamma2=gamma * np.sin(2 * phi_g),
                 ra_0=cx, dec_0=cy)
    rend = pop.rendering
    sie = dict(theta_E=theta_e, e1=e1, e2=e2, s_scale=pop.core_radius, center_x=cx, center_y=cy)
    if family == "sie":
        return "sie", [sie, shear]
    if family not in ("epl", "perturbed"):
        raise ValueError(f"unknown mass family {family!r}")
    use_epl = family == "epl" or rng.random() < 0.5
    main = (dict(theta_E=theta_e, gamma=rng.uniform(*rend.epl_gamma), e1=e1, e2=e2,
                 center_x=cx, center_y=cy) if use_epl else sie)
    if family == "epl":
        return "epl", [main, shear]
    a4 = rng.uniform(-1, 1) * rend.multipole_a4 * theta_e
    a3 = rng.uniform(0, 1) * rend.multipole_a3 * theta_e
    sub_r, sub_ang = theta_e * rng.uniform(0.8, 1.2), rng.uniform(0, 2 * np.pi)
    extra = [dict(m=4, a_m=a4, phi_m=phi_m + rng.uniform(-0.2, 0.2), center_x=cx, center_y=cy),
             dict(m=3, a_m=a3, phi_m=rng.uniform(0, 2 * np.pi / 3), center_x=cx, center_y=cy),
             dict(theta_E=rng.uniform(*rend.subhalo_theta_e), center_x=cx + sub_r * np.cos(sub_ang),
                  center_y=cy + sub_r * np.sin(sub_ang))]
    return ("perturbed_epl" if use_epl else "perturbed_sie"), [main, shear, *extra]


def bright_images(kw_lens, sx: float, sy: float, theta_e: float, profiles: str = "sie") -> int:
    """Images of the point (sx, sy) brighter than |mu| = 0.1 (the demagnified core image is not
    counted)."""
    model = lens_model(profiles)
    xs, ys = LensEquationSolver(model).image_position_from_source(
        sx, sy, kw_lens, min_distance=theta_e / 15, search_window=4 * theta_e,
        precision_limit=1e-8, num_iter_max=50)
    mu = model.magnification(xs, ys, kw_lens) if len(xs) else np.zeros(0)
    return int((np.abs(mu) >= 0.1).sum())


def multiply_imaged_source(rng, pop: Population, kw_lens, theta_e: float, cx: float,
                           cy: float, profiles: str = "sie") -> tuple[float, float, int]:
    """A source centre that the lens images at least twice: a lens by definition. Most sources
    are drawn inside ``inner_beta`` theta_E (uniform in radius, favouring high magnification, or
    uniform in area with ``area_uniform``); ``near_caustic_frac`` of the lenses are drawn near the
    caustics instead (one bright arc and a faint counter-image: the hard cases), redrawing in that
    range until the source is multiply imaged. A source outside the caustics is a singly imaged
    blue companion, which the simulator makes as the ``companions`` non-lens kind."""
    near = rng.random() < pop.near_caustic_frac
    lo, hi = pop.near_caustic_beta if near else (0.0, pop.inner_beta)
    for _ in range(pop.source_draws):
        u = rng.uniform(lo**2, hi**2) ** 0.5 if pop.area_uniform else rng.uniform(lo, hi)
        beta = theta_e * u
        ang = rng.uniform(0, 2 * np.pi)
        sx, sy = cx + beta * np.cos(ang), cy + beta * np.sin(ang)
        n = bright_images(kw_lens, sx, sy, theta_e, profiles)
        if n >= 2:
            return sx, sy, n
    sx, sy = cx + 0.05 * theta_e, cy
    return sx, sy, bright_images(kw_lens, sx, sy, theta_e, profiles)


def draw_lens(rng, pop: Population, cv: Canvas, bands: list[Band] | None) -> Truth:
    """A deflector, its mass and a multiply imaged source of the drawn families."""
    rend = pop.rendering
    cx, cy = G.centre(rng, pop, cv)
    theta_e = draw_theta_e(rng, pop)
    d = G.deflector(rng, pop, cv, cx, cy, theta_e)
    mass = G.pick(rng, rend.mass)
    profiles, kw_lens = mass_model(rng, pop, mass, theta_e, d, cx, cy)
    sx, sy, n_images = multiply_imaged_source(rng, pop, kw_lens, theta_e, cx, cy, profiles)
    coords = cv.ray_shoot(kw_lens, profiles=profiles)
    family = G.pick(rng, rend.source)
    first, end, mag_r = G.source(rng, pop, cv, family, sx, sy, coords=coords)
    lensed_r = sum(unit.sum() * flux[1] for unit, flux in cv.components[first:end])
    return dict(theta_e=theta_e, source_mag_r=mag_r,
                magnification=float(lensed_r / mag_to_flux(mag_r)), n_images=float(n_images),
                source_first=float(first), source_end=float(end), source_family=family,
                mass_family=mass, **deflector_truth(d))


def deflector_truth(d: dict) -> Truth:
    """Truth columns of a deflector drawn by :func:`~lensscan.simulate.galaxies.deflector`."""
    return dict(central_mag_r=d["mag_r"], deflector_reff=d["reff"], deflector_n=d["n"],
                deflector_g_r=d["g_r"], deflector_family=d["family"])
