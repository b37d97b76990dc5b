"""Draw light on the pixel grid: lenstronomy light and mass profiles, the PSF of every band.

A :class:`Canvas` holds unit-flux component images (each integrated over sub-pixels) with their
g, r, i fluxes; :meth:`Canvas.noiseless` sums them per band, convolves with each band's PSF and
adds point sources (noise and sky residuals are :mod:`lensscan.simulate.noise`). Surface
brightness is conserved by lensing, so a lensed component is the source profile evaluated at
ray-traced sub-pixel positions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

import numpy as np
from lenstronomy.LensModel.lens_model import LensModel
from lenstronomy.LightModel.light_model import LightModel
from scipy.signal import fftconvolve

from lensscan.simulate.population import ZP, Rendering, SurveyConditions
from lensscan.simulate.psf import PSF, draw_psf, moffat_alpha, psf_kernel, psf_shape


def mag_to_flux(mag: float | np.ndarray) -> np.ndarray:
    """AB magnitude -> linear flux at the zero-point :data:`ZP`."""
    return 10.0 ** (-0.4 * (np.asarray(mag, dtype=float) - ZP))


def ellipticity(q: float, phi: float) -> tuple[float, float]:
    """Axis ratio and position angle (radians) -> lenstronomy's (e1, e2)."""
    e = (1.0 - q) / (1.0 + q)
    return e * np.cos(2 * phi), e * np.sin(2 * phi)


@cache
def _sersic() -> LightModel:
    return LightModel(["SERSIC_ELLIPSE"])


#: lenstronomy profiles of every mass family (see :class:`Rendering`).
MASS_PROFILES: dict[str, tuple[str, ...]] = {
    "sie": ("NIE", "SHEAR"),
    "epl": ("EPL", "SHEAR"),
    "perturbed_sie": ("NIE", "SHEAR", "MULTIPOLE", "MULTIPOLE", "SIS"),
    "perturbed_epl": ("EPL", "SHEAR", "MULTIPOLE", "MULTIPOLE", "SIS"),
}


@cache
def lens_model(profiles: str = "sie") -> LensModel:
    """The lens model of a key of :data:`MASS_PROFILES`; ``sie`` is an isothermal ellipsoid
    (with a tiny core, so no pixel samples the singular centre) plus external shear."""
    return LensModel(list(MASS_PROFILES[profiles]))


def sersic_total_flux(r_eff: float, n: float, e1: float, e2: float) -> float:
    """Total flux of a lenstronomy Sersic with ``amp = 1``."""
    kw = dict(amp=1.0, R_sersic=r_eff, n_sersic=n, e1=e1, e2=e2, center_x=0.0, center_y=0.0)
    return float(_sersic().total_flux([kw], norm=True)[0])


@dataclass
class Band:
    """One band's observing conditions for one cutout."""

    fwhm: float  # arcsec
    beta: float  # Moffat slope
    sky_sigma: float  # flux units per pixel, 1 sigma
    gain: float  # electrons per flux unit (source Poisson noise)
    psf: PSF | None = None  # default: a Moffat of this FWHM and slope

    def __post_init__(self) -> None:
        if self.psf is None:
            self.psf = PSF("moffat", self.fwhm, self.beta)


@dataclass
class Canvas:
    """Unit-flux components on a supersampled grid, summed per band by :meth:`observe`."""

    cond: SurveyConditions
    components: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    points: list[tuple[float, float, np.ndarray]] = field(default_factory=list)

    def __post_init__(self) -> None:
        c = self.cond
        n = c.size * c.supersample
        step = c.pixel_scale / c.supersample
        axis = (np.arange(n) - (n - 1) / 2.0) * step
        xx, yy = np.meshgrid(axis, axis)
        self.x = xx.ravel()
        self.y = yy.ravel()
        self.sub_area = step * step

    # ---- grids
    def downsample(self, sb: np.ndarray) -> np.ndarray:
        """Surface brightness on sub-pixels -> flux per pixel, shape (size, size)."""
        c = self.cond
        s = c.supersample
        img = sb.reshape(c.size, s, c.size, s).sum(axis=(1, 3))
        return img * self.sub_area

    def ray_shoot(self, kwargs_lens: list[dict], min_mu: float = 0.1, profiles: str = "sie"
                  ) -> tuple[np.ndarray, np.ndarray]:
        """Source-plane positions of every sub-pixel.

        Sub-pixels near the mass centre map a tiny image area onto a large source area (a
        central image demagnified more than ``1 / min_mu``); point-sampling them would alias
        the source into the core, so they are sent far from any source. Such central images are
        never seen in survey data.
        """
        model = lens_model(profiles)
        bx, by = model.ray_shooting(self.x, self.y, kwargs_lens)
        mu = model.magnification(self.x, self.y, kwargs_lens)
        far = np.abs(mu) < min_mu
        return np.where(far, 1e4, bx), np.where(far, 1e4, by)

    # ---- components
    def sersic(
        self, flux: np.ndarray, r_eff: float, n: float, q: float, phi: float, cx: float,
        cy: float, coords: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> np.ndarray:
        """Add a Sersic component of total ``flux`` (3,) per band; returns its unit image."""
        e1, e2 = ellipticity(q, phi)
        amp = 1.0 / sersic_total_flux(r_eff, n, e1, e2)
        kw = dict(amp=amp, R_sersic=r_eff, n_sersic=n, e1=e1, e2=e2, center_x=cx, center_y=cy)
        x, y = coords if coords is not None else (self.x, self.y)
        unit = self.downsample(_sersic().surface_brightness(x, y, [kw]))
        self.components.append((unit, np.asarray(flux, dtype=float)))
        return unit

    def custom(self, sb: np.ndarray, flux: np.ndarray) -> np.ndarray:
        """Add a component from sub-pixel surface brightness, normalised to unit flux."""
        unit = self.downsample(sb)
        total = unit.sum()
        if total > 0:
            unit = unit / total
        self.components.append((unit, np.asarray(flux, dtype=float)))
        return unit

    def gaussians(self, coords: tuple[np.ndarray, np.ndarray], xk: np.ndarray, yk: np.ndarray,
                  sigma: np.ndarray, weight: np.ndarray, flux: np.ndarray) -> np.ndarray:
        """Add a sum of round Gaussians (positions, widths in arcsec; weights summing to one)
        evaluated at ``coords`` (ray-traced or not), of total unlensed ``flux``."""
        x, y = coords
        sb = np.zeros_like(x)
        for x0, y0, s, w in zip(xk, yk, sigma, weight, strict=True):
            sb += w / (2 * np.pi * s * s) * np.exp(-0.5 * ((x - x0) ** 2 + (y - y0) ** 2) / (s * s))
        unit = self.downsample(sb)
        self.components.append((unit, np.asarray(flux, dtype=float)))
        return unit

    def image(self, unit: np.ndarray, flux: np.ndarray) -> None:
        """Add a pixel image as it is (``flux`` times ``unit``, not renormalised)."""
        self.components.append((unit, np.asarray(flux, dtype=float)))

    def point(self, x: float, y: float, flux: np.ndarray) -> None:
        """Add a point source (a star) at (x, y) arcsec."""
        self.points.append((x, y, np.asarray(flux, dtype=float)))

    # ---- observation
    def noiseless(self, bands: list[Band]) -> np.ndarray:
        """Sum components per band, convolve with the PSF and add stars: (3, size, size)."""
        c = self.cond
        out = np.zeros((3, c.size, c.size))
        for b, band in enumerate(bands):
            img = np.zeros((c.size, c.size))
            for unit, flux in self.components:
                if flux[b] != 0:
                    img += flux[b] * unit
            img = fftconvolve(img, psf_kernel(band.psf, c), mode="same")
            for x, y, flux in self.points:
                img += flux[b] * self.star(x, y, band.psf)
            out[b] = img
        return out

    def star(self, x0: float, y0: float, psf: PSF) -> np.ndarray:
        """Unit-flux point source centred at (x0, y0) arcsec, integrated over pixels."""
        if psf.family == "moffat":  # as the hsc preset always drew it, bit for bit
            alpha = moffat_alpha(psf.fwhm, psf.beta)
            r2 = (self.x - x0) ** 2 + (self.y - y0) ** 2
            sb = (psf.beta - 1.0) / (np.pi * alpha**2) * (1.0 + r2 / alpha**2) ** (-psf.beta)
            return self.downsample(sb)
        return self.downsample(psf.surface_brightness(self.x - x0, self.y - y0))


def draw_bands(rng: np.random.Generator, cond: SurveyConditions, psf_family: str = "moffat",
               rend: Rendering | None = None) -> list[Band]:
    """Draw one cutout's seeing, PSF shape and depth in g, r, i."""
    fwhm_i = rng.uniform(*cond.seeing_i)
    fwhm = [
        min(fwhm_i * rng.uniform(*cond.seeing_g_over_i), cond.max_seeing_g),
        fwhm_i * rng.uniform(*cond.seeing_r_over_i),
        fwhm_i,
    ]
    bands = []
    for b in range(3):
        beta = rng.uniform(*cond.moffat_beta)
        depth = cond.depth[b] + rng.uniform(-cond.depth_scatter, cond.depth_scatter)
        bands.append(Band(fwhm[b], beta, sky_sigma(depth, fwhm[b], cond.pixel_scale),
                          cond.gain[b]))
    if psf_family != "moffat":
        rend = rend or Rendering()
        shape = psf_shape(rng, psf_family, rend)
        for band in bands:
            band.psf = draw_psf(rng, psf_family, band.fwhm, band.beta, rend, shape)
    return bands


def sky_sigma(depth_5sigma: float, fwhm: float, pixel_scale: float) -> float:
    """Per-pixel sky noise that gives a 5-sigma point-source depth with this seeing.

    Uses the noise-equivalent area of a Gaussian PSF, ``2.266 (FWHM / pixel)^2`` pixels.
    """
    nea = 2.266 * (fwhm / pixel_scale) ** 2
    return float(mag_to_flux(depth_5sigma) / (5.0 * np.sqrt(nea)))
