"""Point-spread functions of every family: a profile, a pixel kernel and point-source images.

A :class:`PSF` describes one band's PSF of one cutout. Its :meth:`PSF.profile` is an unnormalised
surface brightness; :func:`psf_kernel` integrates it over sub-pixels into a kernel for
:func:`scipy.signal.fftconvolve` (extended light), and :meth:`PSF.surface_brightness` is the
unit-flux profile over the whole plane (point sources).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lensscan.simulate.population import Rendering, SurveyConditions

GAUSS_FWHM = 2.0 * np.sqrt(2.0 * np.log(2.0))  # FWHM / sigma of a Gaussian


def moffat_alpha(fwhm: float, beta: float) -> float:
    """Moffat core width from FWHM."""
    return fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))


@dataclass(frozen=True)
class PSF:
    """One band's PSF. Angles in radians, sizes in arcsec."""

    family: str = "moffat"  # moffat | gaussian | double_gaussian | elliptical
    fwhm: float = 0.7
    beta: float = 3.0  # Moffat slope (moffat, elliptical)
    q: float = 1.0  # axis ratio (elliptical)
    phi: float = 0.0  # position angle of the major axis (elliptical)
    wing_ratio: float = 2.5  # wing sigma / core sigma (double_gaussian)
    wing_frac: float = 0.0  # share of light in the wing (double_gaussian)

    def profile(self, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
        """Surface brightness at offsets (dx, dy) arcsec from the centre, up to a constant."""
        r2 = dx**2 + dy**2
        if self.family == "moffat":
            alpha = moffat_alpha(self.fwhm, self.beta)
            return (1.0 + r2 / alpha**2) ** (-self.beta)
        if self.family == "elliptical":  # the same area as a round Moffat of this FWHM
            c, s = np.cos(self.phi), np.sin(self.phi)
            u = (c * dx + s * dy) * np.sqrt(self.q)
            v = (-s * dx + c * dy) / np.sqrt(self.q)
            alpha = moffat_alpha(self.fwhm, self.beta)
            return (1.0 + (u**2 + v**2) / alpha**2) ** (-self.beta)
        sigma = self.fwhm / GAUSS_FWHM
        core = np.exp(-0.5 * r2 / sigma**2) / sigma**2
        if self.family == "gaussian":
            return core
        if self.family == "double_gaussian":
            wide = sigma * self.wing_ratio
            wing = np.exp(-0.5 * r2 / wide**2) / wide**2
            return (1.0 - self.wing_frac) * core + self.wing_frac * wing
        raise ValueError(f"unknown PSF family {self.family!r}")

    def integral(self) -> float:
        """Integral of :meth:`profile` over the plane, arcsec^2."""
        if self.family in ("moffat", "elliptical"):  # the elliptical one keeps the area
            return np.pi * moffat_alpha(self.fwhm, self.beta) ** 2 / (self.beta - 1.0)
        return 2.0 * np.pi  # the Gaussians' profiles are normalised to 2 pi

    def tail_radius(self, tail: float) -> float:
        """A radius, arcsec, outside whose circle at most ``tail`` of the light lies (exact for
        ``moffat`` and ``gaussian``, an upper bound for the others)."""
        if self.family in ("moffat", "elliptical"):  # 1 - F(r) = (1 + r^2/alpha^2)^(1-beta)
            r = moffat_alpha(self.fwhm, self.beta) * np.sqrt(tail ** (-1 / (self.beta - 1)) - 1)
            # a sheared profile's circle of radius r holds a round one's of radius r sqrt(q)
            # (q < 1; 1/q for q > 1)
            shear = min(self.q, 1 / self.q) if self.family == "elliptical" else 1.0
            return float(r / np.sqrt(shear))
        sigma = self.fwhm / GAUSS_FWHM
        if self.family == "gaussian":  # 1 - F(r) = exp(-r^2 / 2 sigma^2)
            return float(sigma * np.sqrt(2 * np.log(1 / tail)))
        if self.family == "double_gaussian":  # half the tail to each component
            share = (1 - self.wing_frac, self.wing_frac)
            return float(max(w * np.sqrt(2 * np.log(max(2 * f / tail, 1.0)))
                             for w, f in zip((sigma, sigma * self.wing_ratio), share, strict=True)))
        raise ValueError(f"unknown PSF family {self.family!r}")

    def surface_brightness(self, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
        """Unit-flux surface brightness (per arcsec^2) at offsets (dx, dy) from the centre."""
        return self.profile(dx, dy) / self.integral()


def psf_kernel(psf: PSF, cond: SurveyConditions) -> np.ndarray:
    """Kernel of ``psf`` integrated over sub-pixels, odd side in pixels.

    With ``cond.psf_tail`` None: ``cond.psf_size`` wide, normalised to one. Otherwise each pixel
    holds its share of the PSF's whole light, and the side grows from ``cond.psf_size`` until
    the kernel leaves out at most ``psf_tail`` of it (:meth:`PSF.tail_radius`), or reaches
    every pixel of the cutout from any point of it (``2 size - 1``): extended light then has
    the wings point sources have (:meth:`PSF.surface_brightness`), where a renormalised
    kernel would move them into the core.
    """
    if cond.psf_tail is None:
        kern = _integrated(psf, cond.psf_size, cond)
        return kern / kern.sum()
    half = int(np.ceil(psf.tail_radius(cond.psf_tail) / cond.pixel_scale))
    side = min(max(2 * half + 1, cond.psf_size), 2 * cond.size - 1)
    step = cond.pixel_scale / cond.supersample
    return _integrated(psf, side, cond) * step**2 / psf.integral()


def _integrated(psf: PSF, side: int, cond: SurveyConditions) -> np.ndarray:
    """:meth:`PSF.profile` summed over the sub-pixels of a ``side`` x ``side`` pixel grid
    centred on the PSF."""
    s = cond.supersample
    step = cond.pixel_scale / s
    axis = (np.arange(side * s) - (side * s - 1) / 2.0) * step
    xx, yy = np.meshgrid(axis, axis)
    return psf.profile(xx, yy).reshape(side, s, side, s).sum(axis=(1, 3))


def draw_psf(rng: np.random.Generator, family: str, fwhm: float, beta: float,
             rend: Rendering, shape: dict[str, float]) -> PSF:
    """One band's PSF of ``family``. ``beta`` is the band's Moffat slope as drawn by the
    conditions (kept for the ``moffat`` family, so the hsc preset draws what it always did);
    ``shape`` holds what the bands of one cutout share (position angle, wing share)."""
    if family == "moffat":
        return PSF("moffat", fwhm, beta)
    if family == "gaussian":
        return PSF("gaussian", fwhm)
    if family == "double_gaussian":
        frac = float(np.clip(shape["wing_frac"] * rng.uniform(0.8, 1.25), 0.0, 0.5))
        return PSF("double_gaussian", fwhm, wing_ratio=rng.uniform(*rend.psf_wing_ratio),
                   wing_frac=frac)
    if family == "elliptical":
        phi = shape["phi"] + np.deg2rad(rng.normal(0.0, rend.psf_band_angle_deg))
        return PSF("elliptical", fwhm, beta=rng.uniform(*rend.psf_moffat_beta),
                   q=rng.uniform(*rend.psf_q), phi=float(phi))
    raise ValueError(f"unknown PSF family {family!r}")


def psf_shape(rng: np.random.Generator, family: str, rend: Rendering) -> dict[str, float]:
    """What the three bands' PSFs of one cutout share (nothing for moffat and gaussian)."""
    if family == "double_gaussian":
        return {"wing_frac": rng.uniform(*rend.psf_wing_frac)}
    if family == "elliptical":
        return {"phi": rng.uniform(0.0, np.pi)}
    return {}
