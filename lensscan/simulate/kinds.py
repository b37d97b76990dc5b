"""Every object kind, and :func:`render_object`, which draws one cutout of a kind with truth.

Lenses are :mod:`lensscan.simulate.lensing`; the contaminants that fool lens finders are
:mod:`lensscan.simulate.contaminants`; a ``paired`` non-lens is a lens scene rendered without its
lensed source (same deflector, PSF, noise and neighbours).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from lensscan.simulate import contaminants as C
from lensscan.simulate import galaxies as G
from lensscan.simulate.lensing import draw_lens
from lensscan.simulate.noise import observe
from lensscan.simulate.population import FAMILY_COLUMNS, Population, SurveyConditions
from lensscan.simulate.render import Canvas, draw_bands

KINDS: dict[str, Callable] = {
    "lens": draw_lens,
    "paired": draw_lens,  # rendered without its source by render_object
    "elliptical": C.draw_elliptical,
    "spiral": C.draw_spiral,
    "ring": C.draw_ring,
    "merger": C.draw_merger,
    "companions": C.draw_companions,
    "edge_on": C.draw_edge_on,
    "star": C.draw_star,
    "blank": C.draw_blank,
}
NONLENS_KINDS = tuple(k for k in KINDS if k != "lens")

#: Numeric truth columns written for every object (NaN where a value does not apply).
TRUTH_COLUMNS = ("theta_e", "source_mag_r", "magnification", "n_images", "arc_snr",
                 "central_mag_r", "deflector_reff", "deflector_n", "deflector_g_r",
                 "seeing_g", "seeing_r", "seeing_i", "sky_sigma_r")
#: Lens-only truth, NaN for the paired non-lens of a lens.
_LENS_ONLY = ("theta_e", "source_mag_r", "magnification", "n_images", "arc_snr")
#: Where a family does not apply (no lensed source, no deflector), its column says so.
NO_FAMILY = "none"


def render_object(
    kind: str,
    rng: np.random.Generator,
    pop: Population | None = None,
    cond: SurveyConditions | None = None,
    noiseless: bool = False,
) -> tuple[np.ndarray, dict[str, float | str]]:
    """Draw one cutout of ``kind``.

    Returns
    -------
    image : ndarray, float32, shape (3, 64, 64)
        g, r, i linear fluxes (zero-point 27) with PSF and noise (unless ``noiseless``).
    truth : dict
        The values of :data:`TRUTH_COLUMNS` (NaN where not applicable) and of
        :data:`~lensscan.simulate.population.FAMILY_COLUMNS` (``none`` where not applicable).
    """
    pop = pop or Population()
    cond = cond or SurveyConditions()
    rend = pop.rendering
    psf_family = G.pick(rng, rend.psf)
    bands = draw_bands(rng, cond, psf_family, rend)
    cv = Canvas(cond)
    raw = KINDS[kind](rng, pop, cv, bands)
    neighbours = G.pick(rng, rend.neighbours)
    G.neighbours(rng, pop, cv, neighbours)
    truth: dict[str, float | str] = {k: float("nan") for k in TRUTH_COLUMNS}
    truth.update(dict.fromkeys(FAMILY_COLUMNS, NO_FAMILY))
    truth.update({k: v for k, v in raw.items() if k in truth})
    truth.update(seeing_g=bands[0].fwhm, seeing_r=bands[1].fwhm, seeing_i=bands[2].fwhm,
                 sky_sigma_r=bands[1].sky_sigma, psf_family=psf_family,
                 neighbours_family=neighbours)
    clean = cv.noiseless(bands)
    if "source_first" in raw:  # a lens scene (kind lens or paired)
        source = slice(int(raw["source_first"]), int(raw["source_end"]))
        truth["arc_snr"] = arc_snr(cond, cv.components[source], clean, bands)
        if truth["arc_snr"] < pop.min_arc_snr:
            _brighten(rng, pop, cv, source, truth, clean, bands)
            clean = cv.noiseless(bands)
            truth["arc_snr"] = arc_snr(cond, cv.components[source], clean, bands)
        if kind == "paired":
            del cv.components[source]
            clean = cv.noiseless(bands)
            truth.update(dict.fromkeys(_LENS_ONLY, float("nan")), source_family=NO_FAMILY,
                         mass_family=NO_FAMILY)
    noise, background = G.pick(rng, rend.noise), G.pick(rng, rend.background)
    truth.update(noise_family=noise, background_family=background)
    image = (clean.astype(np.float32) if noiseless
             else observe(rng, clean, bands, rend, noise, background))
    return image, truth


def _brighten(rng: np.random.Generator, pop: Population, cv: Canvas, source: slice,
              truth: dict, clean: np.ndarray, bands) -> None:
    """Scale the lensed source's flux up until its arc S/N is 1-2 times ``min_arc_snr`` (at
    most ``max_brighten`` times): training lenses whose arcs cannot be seen are label noise."""
    target = pop.min_arc_snr * rng.uniform(1.0, 2.0)
    arcs = Canvas(cv.cond, components=cv.components[source]).noiseless(bands)
    lo, hi = 0.0, float(np.log(pop.max_brighten))
    for _ in range(30):  # bisection on log f; the S/N grows with f
        mid = 0.5 * (lo + hi)
        f = float(np.exp(mid))
        if _snr(arcs * f, clean + arcs * (f - 1), bands) < target:
            lo = mid
        else:
            hi = mid
    f = float(np.exp(hi))
    cv.components[source] = [(unit, flux * f) for unit, flux in cv.components[source]]
    truth["source_mag_r"] = float(truth["source_mag_r"]) - 2.5 * np.log10(f)


def arc_snr(cond: SurveyConditions, arcs: list, clean: np.ndarray, bands) -> float:
    """S/N of the lensed source alone over the pixels where it is above the noise."""
    return _snr(Canvas(cond, components=arcs).noiseless(bands), clean, bands)


def _snr(arc_img: np.ndarray, clean: np.ndarray, bands) -> float:
    sky_var = np.array([b.sky_sigma**2 for b in bands])[:, None, None]
    gain = np.array([b.gain for b in bands])[:, None, None]
    var = sky_var + np.clip(clean, 0, None) / gain
    above = arc_img > np.sqrt(var)
    return float(np.sqrt((arc_img[above] ** 2 / var[above]).sum()))
