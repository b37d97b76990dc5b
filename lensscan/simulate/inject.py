"""Paint a lensed source onto a real host cutout (``lensscan inject``).

The host's pixels are the survey's; only the lensed source is simulated. Its mass is centred on
the host (the cutout's centre plus the ``offset_x``/``offset_y`` the cutout step kept), shaped
like the host's light (second moments) and of a family drawn from the simulator's population
(isothermal or power-law ellipsoid plus shear, perturbed or not), with an Einstein radius that
follows the host's brightness (:class:`~lensscan.config.InjectConfig`) or a host column. The
source (:func:`~lensscan.simulate.galaxies.source`) sits where the lens images it at least twice
(:func:`~lensscan.simulate.lensing.multiply_imaged_source`), is ray-traced on a
:class:`~lensscan.simulate.render.Canvas` at the survey's pixel scale, convolved per band with a
PSF of the host's FWHM, scaled to the survey's zero-point, given the Poisson noise of its own
flux and added to the host. Pixels where the arc adds less than ``paint_floor`` times the host's
sky noise keep the host's exact values.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lensscan.config import InjectConfig
from lensscan.simulate import galaxies as G
from lensscan.simulate.lensing import mass_model, multiply_imaged_source
from lensscan.simulate.population import ZP, Population, SurveyConditions
from lensscan.simulate.psf import PSF
from lensscan.simulate.render import Band, Canvas, mag_to_flux

SIZE = 64
MAD_SIGMA = 1.4826  # sigma of a Gaussian / its median absolute deviation


@dataclass
class Painted:
    """A painted host: the image, what was added, the truth and the lens (for checks)."""

    image: np.ndarray  # (3, 64, 64) float32, host plus arc
    added: np.ndarray  # (3, 64, 64) float32, what was added (arc with its noise)
    truth: dict[str, float | str]  # theta_e, source_mag_r, magnification, n_images, arc_snr, ...
    profiles: str  # lenstronomy profiles key of the mass (render.MASS_PROFILES)
    kw_lens: list[dict]  # lenstronomy lens kwargs, arcsec from the cutout's centre


def sky_sigma(image: np.ndarray) -> np.ndarray:
    """Robust per-band noise of a cutout (1.4826 x the median absolute deviation), (3,)."""
    med = np.median(image, axis=(1, 2), keepdims=True)
    return MAD_SIGMA * np.median(np.abs(image - med), axis=(1, 2))


def radius_map(cx: float, cy: float) -> np.ndarray:
    """Distance (pixels) of every pixel centre from (cx, cy) in pixel coordinates, (64, 64)."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    return np.hypot(xx - cx, yy - cy)


def aperture_mag(band: np.ndarray, cx: float, cy: float, radius_pix: float,
                 zeropoint: float) -> float:
    """AB magnitude inside ``radius_pix`` of (cx, cy) pixels, background from the pixels beyond
    24 pixels (the cutout's corners and border); NaN when the flux is not positive."""
    r = radius_map(cx, cy)
    flux = float((band[r <= radius_pix] - np.median(band[r > 24])).sum())
    return zeropoint - 2.5 * np.log10(flux) if flux > 0 else float("nan")


def theta_e_from_mag(mag_r: float, rng: np.random.Generator, cfg: InjectConfig) -> float:
    """Einstein radius (arcsec) of a host of aperture magnitude ``mag_r`` (see
    :class:`InjectConfig`); a host without positive flux gets the smallest."""
    lo, hi = cfg.theta_e_range
    if not np.isfinite(mag_r):
        return float(lo)
    log_t = (np.log10(cfg.theta_e_ref) - 0.4 * cfg.theta_e_slope * (mag_r - cfg.host_mag_ref)
             + rng.normal(0.0, cfg.theta_e_scatter))
    return float(np.clip(10**log_t, lo, hi))


def light_shape(band: np.ndarray, cx: float, cy: float, sigma_pix: float = 6.0
                ) -> tuple[float, float]:
    """Axis ratio and position angle (radians, from +x towards +y) of the host's light from
    Gaussian-weighted second moments around (cx, cy) pixels; round when undefined."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    dx, dy = xx - cx, yy - cy
    bg = np.median(band[np.hypot(dx, dy) > 24])
    w = np.clip(band - bg, 0, None) * np.exp(-0.5 * (dx**2 + dy**2) / sigma_pix**2)
    if w.sum() <= 0:
        return 1.0, 0.0
    mxx, myy, mxy = ((w * a).sum() / w.sum() for a in (dx * dx, dy * dy, dx * dy))
    half_trace, diff = (mxx + myy) / 2, np.hypot((mxx - myy) / 2, mxy)
    q = np.sqrt(max(half_trace - diff, 0.0) / (half_trace + diff))
    return float(np.clip(q, 0.4, 1.0)), float(0.5 * np.arctan2(2 * mxy, mxx - myy))


def arc_snr(arc: np.ndarray, sky: np.ndarray, gain: np.ndarray) -> float:
    """S/N of the arc over the pixels where it is above the noise (sky plus its own shot
    noise), all bands together."""
    var = sky[:, None, None] ** 2 + np.clip(arc, 0, None) / gain[:, None, None]
    above = arc > np.sqrt(var)
    return float(np.sqrt((arc[above] ** 2 / var[above]).sum()))


def brighten(arc: np.ndarray, sky: np.ndarray, gain: np.ndarray, target: float,
             max_factor: float = 30.0) -> float:
    """The flux factor (>= 1, at most ``max_factor``) that lifts the arc's S/N to ``target``."""
    if target <= 0 or arc_snr(arc, sky, gain) >= target:
        return 1.0
    lo, hi = 0.0, float(np.log(max_factor))
    for _ in range(30):  # bisection on log f; the S/N grows with f
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if arc_snr(arc * np.exp(mid), sky, gain) < target else (lo, mid)
    return float(np.exp(hi))


def _bands(psf_fwhm: np.ndarray, sky: np.ndarray, cfg: InjectConfig) -> list[Band]:
    if cfg.psf_family not in ("moffat", "gaussian"):
        raise ValueError(f"psf_family must be 'moffat' or 'gaussian', not {cfg.psf_family!r}")
    return [Band(float(f), cfg.psf_beta, float(s), float(g),
                 psf=PSF(cfg.psf_family, float(f), cfg.psf_beta))
            for f, s, g in zip(psf_fwhm, sky, cfg.gain, strict=True)]


def paint(host: np.ndarray, offset: tuple[float, float], psf_fwhm: np.ndarray,
          rng: np.random.Generator, cfg: InjectConfig, pop: Population, pixel_scale: float,
          zeropoint: float, theta_e: float | None = None) -> Painted:
    """Paint one lensed source onto ``host``.

    Parameters
    ----------
    host : ndarray, shape (3, 64, 64)
        The host cutout, linear fluxes at ``zeropoint``.
    offset : (float, float)
        The host's centre relative to the cutout's centre, pixels (x, y).
    psf_fwhm : ndarray, shape (3,)
        PSF FWHM per band, arcsec.
    theta_e : float, optional
        Einstein radius in arcsec; default: from the host's brightness.
    """
    host = np.asarray(host, np.float32)
    # --gain is electrons per flux unit at zero-point 27: per survey unit it scales with it
    sky, gain = sky_sigma(host), np.asarray(cfg.gain, float) * 10 ** (0.4 * (ZP - zeropoint))
    cxp, cyp = (SIZE - 1) / 2 + offset[0], (SIZE - 1) / 2 + offset[1]
    mag_r = aperture_mag(host[1], cxp, cyp, cfg.aperture / pixel_scale, zeropoint)
    if theta_e is None or not np.isfinite(theta_e):
        theta_e = theta_e_from_mag(mag_r, rng, cfg)
    q, phi = light_shape(host[1], cxp, cyp)
    cx, cy = offset[0] * pixel_scale, offset[1] * pixel_scale  # arcsec
    family = G.pick(rng, pop.rendering.mass)
    profiles, kw = mass_model(rng, pop, family, theta_e, {"q": q, "phi": phi}, cx, cy)
    sx, sy, n_images = multiply_imaged_source(rng, pop, kw, theta_e, cx, cy, profiles)
    cv = Canvas(SurveyConditions(pixel_scale=pixel_scale, size=SIZE,
                                 supersample=cfg.supersample))
    source_family = G.pick(rng, pop.rendering.source)
    _, _, src_mag = G.source(rng, pop, cv, source_family, sx, sy,
                             coords=cv.ray_shoot(kw, profiles=profiles))
    mu = sum(unit.sum() * flux[1] for unit, flux in cv.components) / mag_to_flux(src_mag)
    arc = cv.noiseless(_bands(psf_fwhm, sky, cfg)) * 10 ** (0.4 * (zeropoint - ZP))
    f = brighten(arc, sky, gain, cfg.min_arc_snr * rng.uniform(1.0, 2.0))
    arc, src_mag = arc * f, src_mag - 2.5 * np.log10(f)
    paint_at = arc > cfg.paint_floor * sky[:, None, None]
    added = arc
    if cfg.poisson:
        counts = np.clip(arc, 0, None) * gain[:, None, None]
        added = rng.poisson(counts) / gain[:, None, None]
    added = np.where(paint_at, added, 0.0).astype(np.float32)
    truth = {"theta_e": theta_e, "source_mag_r": float(src_mag), "magnification": float(mu),
             "n_images": float(n_images), "arc_snr": arc_snr(arc, sky, gain),
             "host_mag_r": mag_r, "source_x": float(sx - cx), "source_y": float(sy - cy),
             "source_family": source_family, "mass_family": family}
    return Painted(np.where(paint_at, host + added, host).astype(np.float32), added, truth,
                   profiles, kw)
