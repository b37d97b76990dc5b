"""Non-lenses: the contaminants that fool lens finders, one function per kind.

Each ``draw_<kind>`` adds components to a :class:`~lensscan.simulate.render.Canvas` and returns
truth values. Red hosts come from :func:`~lensscan.simulate.galaxies.deflector` (the lens
deflectors' own distribution) and blue companions from :func:`~lensscan.simulate.galaxies.source`
when ``companion_as_source`` is set, so such a non-lens differs from a lens only by lensing.
"""

from __future__ import annotations

import numpy as np

from lensscan.simulate import galaxies as G
from lensscan.simulate.lensing import Truth, deflector_truth, draw_theta_e
from lensscan.simulate.population import Population
from lensscan.simulate.render import Band, Canvas


def draw_elliptical(rng, pop: Population, cv: Canvas, bands: list[Band] | None) -> Truth:
    cx, cy = G.centre(rng, pop, cv)
    return deflector_truth(G.deflector(rng, pop, cv, cx, cy, draw_theta_e(rng, pop)))


def polar(cv: Canvas, cx, cy, q, phi) -> tuple[np.ndarray, np.ndarray]:
    """Elliptical radius and angle of every sub-pixel around (cx, cy)."""
    dx, dy = cv.x - cx, cv.y - cy
    c, s = np.cos(phi), np.sin(phi)
    u, v = c * dx + s * dy, (-s * dx + c * dy) / q
    return np.hypot(u, v), np.arctan2(v, u)


def on_ellipse(cx, cy, rad, ang, q, phi) -> tuple[float, float]:
    """Sky position of angle ``ang`` at semi-major radius ``rad`` on an ellipse (q, phi)."""
    u, v = rad * np.cos(ang), rad * np.sin(ang) * q
    return cx + np.cos(phi) * u - np.sin(phi) * v, cy + np.sin(phi) * u + np.cos(phi) * v


def draw_spiral(rng, pop: Population, cv: Canvas, bands) -> Truth:
    """A spiral: a red bulge, a disk, blue arms and blue star-forming knots, on the arms or (with
    ``spiral_knots_scattered``) anywhere in the disk, up to ``spiral_knot_dmag`` bright."""
    cx, cy = G.centre(rng, pop, cv)
    mag_r = rng.uniform(*pop.spiral_mag_r)
    reff, q, phi = rng.uniform(*pop.spiral_reff), rng.uniform(0.35, 1.0), rng.uniform(0, np.pi)
    bulge_frac = rng.uniform(*pop.spiral_bulge_frac)
    cv.sersic(G.red(rng, pop, mag_r) * bulge_frac, reff * rng.uniform(0.15, 0.35),
              rng.uniform(2.5, 4.0), min(1.0, q + 0.2), phi, cx, cy)
    r, th = polar(cv, cx, cy, q, phi)
    h = reff / 1.678
    m = rng.integers(*pop.spiral_arms, endpoint=True)
    pitch = np.deg2rad(rng.uniform(*pop.spiral_pitch_deg))
    phase = rng.uniform(0, 2 * np.pi)
    wave = np.cos(m * (th - np.log(np.maximum(r, 1e-3) / h) / np.tan(pitch)) + phase)
    disk = np.exp(-r / h)
    arms = disk * np.clip(wave, 0, None) ** G.span(rng, pop.spiral_arm_power)
    arm_share = G.span(rng, pop.spiral_arm_share)
    disk_flux = G.colour_fluxes(mag_r, rng.uniform(*pop.spiral_disk_g_r), rng.uniform(0.1, 0.4))
    cv.custom(disk, disk_flux * (1 - bulge_frac) * (1 - arm_share))
    cv.custom(arms, G.blue(rng, pop, mag_r) * (1 - bulge_frac) * arm_share)
    scattered = G.chance(rng, pop.spiral_knots_scattered)
    for _ in range(rng.integers(*pop.spiral_knots, endpoint=True)):
        rad = h * rng.uniform(0.8, 3.0)
        if scattered:
            ang = rng.uniform(0, 2 * np.pi)
        else:  # on an arm
            ang = (np.log(rad / h) / np.tan(pitch) - phase + 2 * np.pi * rng.integers(m)) / m
        kx, ky = on_ellipse(cx, cy, rad, ang, q, phi)
        G.sersic_galaxy(rng, pop, cv, kx, ky, mag_r + rng.uniform(*pop.spiral_knot_dmag), True,
                        reff=(0.03, 0.1), q=(0.7, 1.0))
    return dict(central_mag_r=mag_r)


def draw_ring(rng, pop: Population, cv: Canvas, bands) -> Truth:
    """A ring galaxy: a core and a ring of any size; blue and lopsided with knots by default,
    of any colour (``ring_any_colour``) and smooth and symmetric (``ring_smooth``) as well.
    With ``ring_host_deflector`` the core is a galaxy of the deflector population and the ring,
    red and without knots, lies where that galaxy's Einstein ring would: a ring around a
    bright, large early type is then no cue for lensing (it was, when every ring's core was a
    faint small galaxy), while its colour still is. A share ``ring_host_blue`` of those are
    star-forming rings instead: blue, knotty, of any radius and as bright as their host; and a
    share ``ring_host_resonance`` of the rest are resonance rings: of any radius and of any
    colour from blue to red."""
    cx, cy = G.centre(rng, pop, cv)
    hosted = G.chance(rng, pop.ring_host_deflector)
    star_forming = hosted and G.chance(rng, pop.ring_host_blue)
    resonance = hosted and not star_forming and G.chance(rng, pop.ring_host_resonance)
    if hosted:
        theta_e = draw_theta_e(rng, pop)
        truth = deflector_truth(G.deflector(rng, pop, cv, cx, cy, theta_e))
        radius = (rng.uniform(*pop.ring_radius) if star_forming or resonance
                  else theta_e * rng.uniform(*pop.ring_over_theta_e))
    else:
        radius = rng.uniform(*pop.ring_radius)
        truth = dict(central_mag_r=rng.uniform(19.5, 22.0))
        G.sersic_galaxy(rng, pop, cv, cx, cy, truth["central_mag_r"], rng.random() < 0.3,
                        reff=(0.2, max(0.25, radius * 0.5)), q=(0.6, 1.0))
    q, phi = rng.uniform(*pop.ring_axis_ratio), rng.uniform(0, np.pi)
    r, th = polar(cv, cx, cy, q, phi)
    width = rng.uniform(*pop.ring_width)
    ring = np.exp(-0.5 * ((r - radius) / width) ** 2)
    smooth = G.chance(rng, pop.ring_smooth)
    if not smooth:
        ring *= 1 + rng.uniform(0, 0.8) * np.cos(th - rng.uniform(0, 2 * np.pi))  # lopsided
    if resonance:
        mag_r = truth["central_mag_r"] + rng.uniform(*pop.ring_host_dmag)
        cv.custom(ring, G.colour_fluxes(mag_r, rng.uniform(pop.blue_g_r[0], pop.red_g_r[1]),
                                        rng.uniform(pop.blue_r_i[0], pop.red_r_i[1])))
        return truth
    if hosted and not star_forming:  # within a few magnitudes of its host, as lensed arcs
        # are, and of its old stars' colours, without blue knots: a blue ring (or blue knots)
        # at the Einstein radius of an early type is what a lensed source looks like, and
        # calling it a non-lens taught a model to miss Einstein rings
        mag_r = truth["central_mag_r"] + rng.uniform(*pop.ring_host_dmag)
        cv.custom(ring, G.red(rng, pop, mag_r))
        return truth
    mag_r = (truth["central_mag_r"] + rng.uniform(*pop.ring_host_dmag) if star_forming
             else rng.uniform(*pop.ring_mag_r))
    if star_forming:
        flux = G.blue(rng, pop, mag_r)
    elif G.chance(rng, pop.ring_any_colour):
        flux = G.colour_fluxes(mag_r, rng.uniform(-0.2, 1.7), rng.uniform(-0.2, 0.7))
    else:
        flux = G.blue(rng, pop, mag_r)
    cv.custom(ring, flux)
    for _ in range(0 if smooth else rng.integers(0, 6)):  # knots on the ring
        ang = rng.uniform(0, 2 * np.pi)
        kx, ky = on_ellipse(cx, cy, radius, ang, q, phi)
        G.sersic_galaxy(rng, pop, cv, kx, ky, mag_r + rng.uniform(*pop.ring_knot_dmag), True,
                        reff=(0.03, 0.1), q=(0.6, 1.0))
    return truth


def _arc(cv: Canvas, cx, cy, radius, ang, half, width) -> np.ndarray:
    """Sub-pixel surface brightness of a circular arc segment around (cx, cy)."""
    r, th = polar(cv, cx, cy, 1.0, 0.0)
    dth = np.angle(np.exp(1j * (th - ang)))
    return np.exp(-0.5 * ((r - radius) / width) ** 2) * np.exp(-0.5 * (dth / half) ** 4)


def draw_merger(rng, pop: Population, cv: Canvas, bands) -> Truth:
    """Two galaxies with tidal tails: straight, or (``merger_curved``) curved tails and shells
    of the host's colour or bluer wrapped around the primary; with ``merger_host_deflector``
    the primary is a galaxy of the deflector population."""
    cx, cy = G.centre(rng, pop, cv)
    sep, ang = rng.uniform(*pop.merger_separation), rng.uniform(0, 2 * np.pi)
    hosted = G.chance(rng, pop.merger_host_deflector)
    if hosted:
        truth = deflector_truth(G.deflector(rng, pop, cv, cx, cy, draw_theta_e(rng, pop)))
        mag1 = truth["central_mag_r"]
    else:
        mag1 = rng.uniform(19.0, 21.5)
        truth = dict(central_mag_r=mag1)
        G.sersic_galaxy(rng, pop, cv, cx, cy, mag1, rng.random() < 0.4, reff=(0.3, 1.2))
    G.sersic_galaxy(rng, pop, cv, cx + sep * np.cos(ang), cy + sep * np.sin(ang),
                    mag1 + rng.uniform(0, 1.5), rng.random() < 0.5, reff=(0.2, 1.0))
    if G.chance(rng, pop.merger_curved):
        for _ in range(rng.integers(1, 4)):
            shell = _arc(cv, cx, cy, rng.uniform(0.8, 2.8), rng.uniform(0, 2 * np.pi),
                         np.deg2rad(rng.uniform(20, 70)), rng.uniform(0.08, 0.35))
            mag = mag1 + rng.uniform(1.5, 3.5)
            # around an early type of the deflector population, shells of its old stars only:
            # a blue arc there is what a lensed source looks like
            red = hosted or rng.random() < 0.5
            flux = G.red(rng, pop, mag) if red else G.blue(rng, pop, mag)
            cv.custom(shell, flux)
        return truth
    for _ in range(rng.integers(1, 3)):  # tidal tails: long, thin, bluish
        t_ang = ang + rng.normal(np.pi / 2, 0.6)
        dist = rng.uniform(0.8, 2.5)
        cv.sersic(G.blue(rng, pop, mag1 + rng.uniform(1.5, 3.0)), rng.uniform(0.6, 1.8), 0.7,
                  rng.uniform(0.12, 0.3), t_ang, cx + dist * np.cos(t_ang),
                  cy + dist * np.sin(t_ang))
    return truth


def draw_companions(rng, pop: Population, cv: Canvas, bands) -> Truth:
    """A red galaxy from the deflector population with one to three blue galaxies around it,
    most of them elongated tangentially: a lens without the lensing."""
    cx, cy = G.centre(rng, pop, cv)
    d = G.deflector(rng, pop, cv, cx, cy, draw_theta_e(rng, pop))
    family = G.pick(rng, pop.rendering.source) if pop.companion_as_source else "none"
    for _ in range(rng.integers(1, 4)):
        rad, ang = rng.uniform(*pop.companion_radius), rng.uniform(0, 2 * np.pi)
        tangential = rng.random() < 0.6
        q = rng.uniform(*pop.companion_q) if tangential else rng.uniform(0.5, 1.0)
        pa = ang + np.pi / 2 if tangential else rng.uniform(0, np.pi)
        x, y = cx + rad * np.cos(ang), cy + rad * np.sin(ang)
        if pop.companion_as_source:
            G.source(rng, pop, cv, family, x, y, mag_r=rng.uniform(*pop.companion_mag_r),
                     q=q, phi=pa)
        else:
            cv.sersic(G.blue(rng, pop, rng.uniform(*pop.companion_mag_r)),
                      rng.uniform(0.08, 0.45), rng.uniform(0.5, 1.5), q, pa, x, y)
    return dict(deflector_truth(d), source_family=family)


def draw_edge_on(rng, pop: Population, cv: Canvas, bands) -> Truth:
    """An edge-on disk; with ``edge_on_crossing`` it crosses the centre of a red galaxy drawn
    from the deflector population."""
    cx, cy = G.centre(rng, pop, cv)
    truth: Truth = {}
    if G.chance(rng, pop.edge_on_crossing):
        truth = deflector_truth(G.deflector(rng, pop, cv, cx, cy, draw_theta_e(rng, pop)))
        off = rng.uniform(0, 0.6)
        oa = rng.uniform(0, 2 * np.pi)
        cx, cy = cx + off * np.cos(oa), cy + off * np.sin(oa)
    mag_r = rng.uniform(19.0, 22.0)
    cv.sersic(G.colour_fluxes(mag_r, rng.uniform(0.4, 1.2), rng.uniform(0.2, 0.5)),
              rng.uniform(0.8, 2.5), rng.uniform(0.6, 1.2), rng.uniform(*pop.edge_on_q),
              rng.uniform(0, np.pi), cx, cy)
    if not truth and rng.random() < 0.5:
        G.sersic_galaxy(rng, pop, cv, cx, cy, mag_r + rng.uniform(1, 2.5), False,
                        reff=(0.15, 0.4), q=(0.6, 1.0))
    return truth or dict(central_mag_r=mag_r)


def draw_star(rng, pop: Population, cv: Canvas, bands) -> Truth:
    """Stars beside a galaxy; with ``star_central``, a star (or a pair) at the centre."""
    if G.chance(rng, pop.star_central):
        cx, cy = G.centre(rng, pop, cv)
        mag_r = rng.uniform(17.0, 23.0)
        cv.point(cx, cy, G.colour_fluxes(mag_r, *G.star_colours(rng)))
        if rng.random() < 0.4:  # a second star close by
            rad, ang = rng.uniform(0.5, 2.5), rng.uniform(0, 2 * np.pi)
            cv.point(cx + rad * np.cos(ang), cy + rad * np.sin(ang),
                     G.colour_fluxes(mag_r + rng.uniform(0, 2.5), *G.star_colours(rng)))
        return dict(central_mag_r=mag_r)
    truth = (draw_elliptical if rng.random() < 0.6 else draw_spiral)(rng, pop, cv, bands)
    for _ in range(rng.integers(1, 3)):
        rad, ang = rng.uniform(*pop.star_radius), rng.uniform(0, 2 * np.pi)
        g_r, r_i = G.star_colours(rng)
        flux = G.colour_fluxes(rng.uniform(*pop.star_mag_r), g_r, r_i)
        cv.point(rad * np.cos(ang), rad * np.sin(ang), flux)
    return truth


def draw_blank(rng, pop: Population, cv: Canvas, bands) -> Truth:
    half = cv.cond.size * cv.cond.pixel_scale / 2
    for _ in range(rng.integers(0, 3)):
        x, y = rng.uniform(-half, half, 2)
        G.sersic_galaxy(rng, pop, cv, x, y, rng.uniform(22.5, 25.5), rng.random() < 0.5)
    return {}
