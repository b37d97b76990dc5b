"""Galaxy light of every family: deflectors (and every early type), sources, field neighbours.

Each function adds components to a :class:`~lensscan.simulate.render.Canvas` and returns what the
truth columns need. Families are picked with :func:`pick`, which draws nothing when a choice has
one family, so the ``hsc`` preset consumes its random streams as it always did.
"""

from __future__ import annotations

import numpy as np

from lensscan.simulate.population import Population
from lensscan.simulate.render import Canvas, mag_to_flux


def pick(rng: np.random.Generator, weights: dict[str, float]) -> str:
    """One family name drawn with ``weights`` (no draw when there is only one)."""
    names = list(weights)
    if len(names) == 1:
        return names[0]
    p = np.array([weights[k] for k in names], dtype=float)
    return str(names[int(rng.choice(len(names), p=p / p.sum()))])


def chance(rng: np.random.Generator, p: float) -> bool:
    """True with probability ``p`` (no draw when ``p <= 0``)."""
    return p > 0 and rng.random() < p


def span(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    """A uniform draw in ``bounds`` (no draw when the range is one value, so a preset that keeps
    a setting fixed consumes its random streams as it did before the setting existed)."""
    lo, hi = bounds
    return float(lo) if lo == hi else float(rng.uniform(lo, hi))


def counted_mag(rng: np.random.Generator, bounds: tuple[float, float], slope: float) -> float:
    """A magnitude in ``bounds`` with dN/dm ~ 10**(slope * m): uniform at slope 0 (one draw
    either way, so a population without counts consumes its random stream as before)."""
    lo, hi = bounds
    u = rng.uniform(lo, hi)
    if slope == 0 or lo == hi:
        return float(u)
    t, k = (u - lo) / (hi - lo), slope * np.log(10)  # inverse of the truncated exponential's
    return float(lo + np.log1p(t * np.expm1(k * (hi - lo))) / k)  # distribution, any sign


def colour_fluxes(mag_r: float, g_r: float, r_i: float) -> np.ndarray:
    """g, r, i fluxes from an r magnitude and two colours."""
    return mag_to_flux(np.array([mag_r + g_r, mag_r, mag_r - r_i]))


def red(rng: np.random.Generator, pop: Population, mag_r: float) -> np.ndarray:
    return colour_fluxes(mag_r, rng.uniform(*pop.red_g_r), rng.uniform(*pop.red_r_i))


def blue(rng: np.random.Generator, pop: Population, mag_r: float) -> np.ndarray:
    return colour_fluxes(mag_r, rng.uniform(*pop.blue_g_r), rng.uniform(*pop.blue_r_i))


def centre(rng: np.random.Generator, pop: Population, cv: Canvas) -> tuple[float, float]:
    """Sub-pixel offset of the central object, arcsec."""
    j = pop.center_jitter_pix * cv.cond.pixel_scale
    return float(rng.uniform(-j, j)), float(rng.uniform(-j, j))


def sersic_galaxy(rng, pop: Population, cv: Canvas, cx: float, cy: float, mag_r: float,
                  is_blue: bool, reff=(0.15, 0.8), q=(0.3, 1.0)) -> None:
    """A generic field galaxy: one Sersic, red or blue."""
    flux = blue(rng, pop, mag_r) if is_blue else red(rng, pop, mag_r)
    cv.sersic(flux, rng.uniform(*reff), rng.uniform(0.7, 4.0), rng.uniform(*q),
              rng.uniform(0, np.pi), cx, cy)


# ---------------------------------------------------------------- deflectors and early types
def deflector(rng, pop: Population, cv: Canvas, cx: float, cy: float, theta_e: float) -> dict:
    """An early-type galaxy sized and lit like a deflector of Einstein radius ``theta_e``, in
    the family drawn from ``pop.rendering.deflector``. Lens deflectors, isolated ellipticals and
    the red hosts of contaminants all come from here: one distribution."""
    family = pick(rng, pop.rendering.deflector)
    reff = float(np.clip(theta_e * rng.uniform(*pop.reff_over_theta_e), *pop.deflector_reff))
    mag_i = rng.uniform(*pop.deflector_mag_i) - 2.5 * np.log10(theta_e)
    g_r, r_i = rng.uniform(*pop.red_g_r), rng.uniform(*pop.red_r_i)
    q, phi = rng.uniform(*pop.deflector_q), rng.uniform(0, np.pi)
    mag_r = mag_i + r_i
    n = rng.uniform(*pop.deflector_n)
    flux = colour_fluxes(mag_r, g_r, r_i)
    if family == "sersic":
        cv.sersic(flux, reff, n, q, phi, cx, cy)
    elif family == "bulge_disk":
        _bulge_disk(rng, cv, flux, mag_r, g_r, r_i, reff, n, q, phi, cx, cy)
    elif family == "twist":
        _twist(rng, cv, mag_r, g_r, r_i, reff, n, q, phi, cx, cy)
    else:
        raise ValueError(f"unknown deflector family {family!r}")
    return dict(q=q, phi=phi, mag_r=mag_r, reff=reff, n=n, g_r=g_r, family=family)


def _bulge_disk(rng, cv, flux, mag_r, g_r, r_i, reff, n, q, phi, cx, cy) -> None:
    """A Sersic bulge with most of the light plus a fainter, bluer, larger exponential disk."""
    bt = rng.uniform(0.6, 0.9)
    cv.sersic(flux * bt, reff * rng.uniform(0.6, 0.9), n, q, phi, cx, cy)
    disk = colour_fluxes(mag_r, g_r - rng.uniform(0.2, 0.5), r_i - rng.uniform(0.05, 0.15))
    cv.sersic(disk * (1 - bt), min(4.0, reff * rng.uniform(1.5, 3.0)), 1.0,
              rng.uniform(0.25, 0.9), phi + np.deg2rad(rng.normal(0, 10)), cx, cy)


def _twist(rng, cv, mag_r, g_r, r_i, reff, n, q, phi, cx, cy) -> None:
    """Three nested Sersic shells whose position angle and axis ratio turn with radius, and
    whose colour gets bluer outwards."""
    dphi = np.deg2rad(rng.uniform(8, 35)) * rng.choice([-1, 1])
    dq = rng.uniform(-0.15, 0.15)
    dcol = rng.uniform(0.03, 0.12)
    for k, (size, share) in enumerate(((0.45, 0.3), (1.0, 0.45), (1.9, 0.25))):
        flux = colour_fluxes(mag_r, g_r - k * dcol, r_i - 0.3 * k * dcol) * share
        cv.sersic(flux, min(4.0, reff * size), max(0.8, n * (1.15 - 0.15 * k)),
                  float(np.clip(q + k * dq, 0.3, 1.0)), phi + k * dphi, cx, cy)


# ---------------------------------------------------------------- sources
def source(rng, pop: Population, cv: Canvas, family: str, sx: float, sy: float,
           coords: tuple[np.ndarray, np.ndarray] | None = None, mag_r: float | None = None,
           q: float | None = None, phi: float | None = None) -> tuple[int, int, float]:
    """A star-forming galaxy of ``family`` centred at (sx, sy) in the plane of ``coords``
    (ray-traced sub-pixel positions for a lensed source; the image plane when None). Returns the
    range of its components on the canvas and its unlensed r magnitude."""
    mag_r = counted_mag(rng, pop.source_mag_r, pop.source_mag_counts) if mag_r is None else mag_r
    g_r, r_i = rng.uniform(*pop.blue_g_r), rng.uniform(*pop.blue_r_i)
    first = len(cv.components)
    if family == "clumpy":
        _clumpy(rng, pop, cv, mag_r, g_r, r_i, sx, sy, coords, q, phi)
    elif family == "sersic":
        reff = rng.uniform(*pop.source_reff)
        cv.sersic(colour_fluxes(mag_r, g_r, r_i), reff, rng.uniform(*pop.source_n),
                  _or(q, rng, pop.source_q), _or(phi, rng, (0, np.pi)), sx, sy, coords=coords)
    elif family == "knots":
        _knots(rng, pop, cv, mag_r, g_r, r_i, sx, sy, coords, q, phi)
    else:
        raise ValueError(f"unknown source family {family!r}")
    return first, len(cv.components), float(mag_r)


def _or(value: float | None, rng: np.random.Generator, lo_hi) -> float:
    return rng.uniform(*lo_hi) if value is None else value


def _clumpy(rng, pop, cv, mag_r, g_r, r_i, sx, sy, coords, q, phi) -> None:
    """A Sersic body plus star-forming clumps scattered over its half-light radius."""
    n_clumps = rng.integers(pop.clumps[0], pop.clumps[1] + 1)
    clump_frac = rng.uniform(*pop.clump_flux_frac) if n_clumps else 0.0
    reff = rng.uniform(*pop.source_reff)
    body = colour_fluxes(mag_r, g_r, r_i) * (1 - clump_frac)
    cv.sersic(body, reff, rng.uniform(*pop.source_n), _or(q, rng, pop.source_q),
              _or(phi, rng, (0, np.pi)), sx, sy, coords=coords)
    for _ in range(n_clumps):
        ox, oy = rng.normal(0, reff, 2)
        flux = colour_fluxes(mag_r, g_r - rng.uniform(0, 0.3), r_i) * clump_frac / n_clumps
        cv.sersic(flux, rng.uniform(*pop.clump_reff), 1.0, 1.0, 0.0, sx + ox, sy + oy,
                  coords=coords)


def _knots(rng, pop, cv, mag_r, g_r, r_i, sx, sy, coords, q, phi) -> None:
    """A diffuse Sersic plus knots placed by random walks (non-parametric star formation),
    sheared to the source's axis ratio and angle."""
    reff = rng.uniform(*pop.source_reff)
    q, phi = _or(q, rng, pop.source_q), _or(phi, rng, (0, np.pi))
    n = int(rng.integers(pop.knots[0], pop.knots[1] + 1))
    frac = rng.uniform(*pop.knot_flux_frac)
    cv.sersic(colour_fluxes(mag_r, g_r, r_i) * (1 - frac), reff, rng.uniform(0.5, 1.5), q, phi,
              sx, sy, coords=coords)
    walks = int(rng.integers(1, 4))
    steps = rng.normal(0, reff / np.sqrt(max(1, n / walks)), (n, 2))
    pos = np.concatenate([np.cumsum(part, axis=0) for part in np.array_split(steps, walks)])
    pos -= pos.mean(axis=0)
    u, v = pos[:, 0], pos[:, 1] * q
    xk = sx + np.cos(phi) * u - np.sin(phi) * v
    yk = sy + np.sin(phi) * u + np.cos(phi) * v
    weight = rng.exponential(1.0, n)
    knot_flux = colour_fluxes(mag_r, g_r - rng.uniform(0.1, 0.4), r_i) * frac
    cv.gaussians(coords if coords is not None else (cv.x, cv.y), xk, yk,
                 rng.uniform(*pop.knot_sigma, n), weight / weight.sum(), knot_flux)


# ---------------------------------------------------------------- field
def neighbours(rng, pop: Population, cv: Canvas, family: str) -> None:
    """Field galaxies outside the central object (and, for ``bright_star``, a bright star with
    diffraction spikes at the cutout's edge)."""
    half = cv.cond.size * cv.cond.pixel_scale / 2
    rend = pop.rendering
    if family in ("sparse", "bright_star"):
        count, mags, inner = rng.poisson(pop.neighbours_mean), pop.neighbour_mag_r, 1.5
    elif family == "dense":
        count, mags, inner = rng.poisson(rng.uniform(*rend.dense_mean)), rend.dense_mag_r, 1.2
    else:
        raise ValueError(f"unknown neighbours family {family!r}")
    for _ in range(count):
        while True:
            x, y = rng.uniform(-half, half, 2)
            if np.hypot(x, y) > inner:
                break
        sersic_galaxy(rng, pop, cv, x, y, rng.uniform(*mags), rng.random() < 0.5)
    if family == "bright_star":
        _edge_star(rng, pop, cv)


def star_colours(rng: np.random.Generator) -> tuple[float, float]:
    """g - r and r - i along the stellar locus."""
    g_r = rng.uniform(0.2, 1.5)
    return g_r, max(0.4 * g_r - 0.05, 1.5 * g_r - 1.3) + rng.normal(0, 0.05)


def _edge_star(rng, pop: Population, cv: Canvas) -> None:
    """A bright star near or beyond the cutout's edge with four diffraction spikes."""
    rend = pop.rendering
    rad, ang = rng.uniform(*rend.star_edge_radius), rng.uniform(0, 2 * np.pi)
    x0, y0 = rad * np.cos(ang), rad * np.sin(ang)
    flux = colour_fluxes(rng.uniform(*rend.star_edge_mag_r), *star_colours(rng))
    cv.point(x0, y0, flux)
    theta0 = rng.uniform(0, np.pi / 2)
    length, t0, w = rng.uniform(3.0, 9.0), rng.uniform(0.2, 0.5), 0.04
    sb = np.zeros_like(cv.x)
    for a in (theta0, theta0 + np.pi / 2):
        t = (cv.x - x0) * np.cos(a) + (cv.y - y0) * np.sin(a)
        s = -(cv.x - x0) * np.sin(a) + (cv.y - y0) * np.cos(a)
        sb += np.exp(-0.5 * (s / w) ** 2) * np.where(np.abs(t) < length,
                                                     (1 + np.abs(t) / t0) ** -1.5, 0.0)
    # the spikes' integral over the plane: two lines, each w sqrt(2 pi) wide and
    # 4 t0 (1 - (1 + L / t0)^-1/2) long
    total = 2 * w * np.sqrt(2 * np.pi) * 4 * t0 * (1 - (1 + length / t0) ** -0.5)
    cv.image(cv.downsample(sb / total), flux * rng.uniform(*rend.spike_frac))
