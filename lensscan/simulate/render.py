"""Draw light on the pixel grid: lenstronomy light and mass profiles, Moffat PSFs and noise.

A :class:`Canvas` holds unit-flux component images (each integrated over sub-pixels) with their
g, r, i fluxes; :meth:`Canvas.observe` sums them per band, convolves with each band's PSF, adds
point sources and noise. Surface brightness is conserved by lensing, so a lensed component is the
source profile evaluated at ray-traced sub-pixel positions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

import numpy as np
from lenstronomy.LensModel.lens_model import LensModel
from lenstronomy.LightModel.light_model import LightModel
from scipy.signal import fftconvolve

from lensscan.simulate.population import ZP, SurveyConditions


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


@cache
def lens_model() -> LensModel:
    """Isothermal ellipsoid mass (with a tiny core, so no pixel samples the singular centre)
    plus external shear."""
    return LensModel(["NIE", "SHEAR"])


def sersic_total_flux(r_eff: float, n: float, e1: float, e2: float) -> float:
    """Total flux of a lenstronomy Sersic with ``amp = 1``."""
    kw = dict(amp=1.0, R_sersic=r_eff, n_sersic=n, e1=e1, e2=e2, center_x=0.0, center_y=0.0)
    return float(_sersic().total_flux([kw], norm=True)[0])


def moffat_alpha(fwhm: float, beta: float) -> float:
    """Moffat core width from FWHM."""
    return fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))


@dataclass
class Band:
    """One band's observing conditions for one cutout."""

    fwhm: float  # arcsec
    beta: float  # Moffat slope
    sky_sigma: float  # flux units per pixel, 1 sigma
    gain: float  # electrons per flux unit (source Poisson noise)


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

    def ray_shoot(self, kwargs_lens: list[dict], min_mu: float = 0.1
                  ) -> tuple[np.ndarray, np.ndarray]:
        """Source-plane positions of every sub-pixel.

        Sub-pixels near the mass centre map a tiny image area onto a large source area (a
        central image demagnified more than ``1 / min_mu``); point-sampling them would alias
        the source into the core, so they are sent far from any source. Such central images are
        never seen in survey data.
        """
        bx, by = lens_model().ray_shooting(self.x, self.y, kwargs_lens)
        mu = lens_model().magnification(self.x, self.y, kwargs_lens)
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
            kernel = psf_kernel(band.fwhm, band.beta, c)
            img = fftconvolve(img, kernel, mode="same")
            for x, y, flux in self.points:
                img += flux[b] * self.moffat(x, y, band.fwhm, band.beta)
            out[b] = img
        return out

    def moffat(self, x0: float, y0: float, fwhm: float, beta: float) -> np.ndarray:
        """Unit-flux Moffat profile centred at (x0, y0) arcsec, integrated over pixels."""
        alpha = moffat_alpha(fwhm, beta)
        r2 = (self.x - x0) ** 2 + (self.y - y0) ** 2
        sb = (beta - 1.0) / (np.pi * alpha**2) * (1.0 + r2 / alpha**2) ** (-beta)
        return self.downsample(sb)


def psf_kernel(fwhm: float, beta: float, cond: SurveyConditions) -> np.ndarray:
    """Normalised Moffat PSF kernel, (psf_size, psf_size) pixels."""
    k = cond.psf_size
    s = cond.supersample
    step = cond.pixel_scale / s
    axis = (np.arange(k * s) - (k * s - 1) / 2.0) * step
    xx, yy = np.meshgrid(axis, axis)
    alpha = moffat_alpha(fwhm, beta)
    sb = (1.0 + (xx**2 + yy**2) / alpha**2) ** (-beta)
    kern = sb.reshape(k, s, k, s).sum(axis=(1, 3))
    return kern / kern.sum()


def draw_bands(rng: np.random.Generator, cond: SurveyConditions) -> list[Band]:
    """Draw one cutout's seeing and depth in g, r, i."""
    fwhm_i = rng.uniform(*cond.seeing_i)
    fwhm = [
        min(fwhm_i * rng.uniform(*cond.seeing_g_over_i), 1.3),
        fwhm_i * rng.uniform(*cond.seeing_r_over_i),
        fwhm_i,
    ]
    bands = []
    for b in range(3):
        beta = rng.uniform(*cond.moffat_beta)
        depth = cond.depth[b] + rng.uniform(-cond.depth_scatter, cond.depth_scatter)
        bands.append(Band(fwhm[b], beta, sky_sigma(depth, fwhm[b], cond.pixel_scale),
                          cond.gain[b]))
    return bands


def sky_sigma(depth_5sigma: float, fwhm: float, pixel_scale: float) -> float:
    """Per-pixel sky noise that gives a 5-sigma point-source depth with this seeing.

    Uses the noise-equivalent area of a Gaussian PSF, ``2.266 (FWHM / pixel)^2`` pixels.
    """
    nea = 2.266 * (fwhm / pixel_scale) ** 2
    return float(mag_to_flux(depth_5sigma) / (5.0 * np.sqrt(nea)))


def add_noise(rng: np.random.Generator, image: np.ndarray, bands: list[Band]) -> np.ndarray:
    """Sky (Gaussian) plus source Poisson noise (Gaussian approximation), float32."""
    out = np.empty_like(image, dtype=np.float32)
    for b, band in enumerate(bands):
        var = band.sky_sigma**2 + np.clip(image[b], 0, None) / band.gain
        out[b] = image[b] + rng.standard_normal(image[b].shape) * np.sqrt(var)
    return out
