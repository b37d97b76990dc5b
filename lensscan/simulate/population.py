"""Every population and survey parameter of the simulator, in one place.

Magnitudes are AB; fluxes are linear in units where ``m = ZP - 2.5 log10(flux)`` with the HSC
coadd zero-point ``ZP = 27``. Angles are arcseconds.

Two presets (:func:`preset`): ``hsc``, the defaults below, models HSC Wide and is what test sets
are drawn from; ``broad`` widens the seeing, depth, source size, magnitude, colour and clump ranges
beyond HSC Wide's own, the training prior of the bundled model, so that it does not depend on one
survey's conditions.

References for the ranges
-------------------------
- HSC-SSP Wide depth and seeing: Aihara et al. 2018, PASJ 70, S4 (Table 2; 5-sigma point-source
  depth g 26.5, r 26.1, i 25.9; median seeing i 0.6", r 0.7", g 0.8"); Aihara et al. 2022, PASJ 74.
- Lens population (Einstein radii, deflector and source magnitudes, shear): Collett 2015, ApJ 811,
  20; SuGOHI lens samples, Sonnenfeld et al. 2018, PASJ 70, S29 (theta_E 0.6"-2.5" for HSC).
- Early-type colours at z ~ 0.3-0.7 and star-forming source colours: Bruzual & Charlot 2003
  templates as used in Collett 2015; blue sources g-r ~ 0-0.5.
- Contaminants (spirals, rings, mergers, blue companions, edge-on disks, stars): the false
  positives listed by Jacobs et al. 2019, ApJS 243, 17 and Canameras et al. 2021, A&A 653, L6.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

#: Zero-point of the linear flux unit (HSC coadds).
ZP = 27.0
BANDS = ("g", "r", "i")


@dataclass(frozen=True)
class SurveyConditions:
    """Imaging conditions of an HSC Wide-like survey."""

    pixel_scale: float = 0.168  # arcsec / pixel (HSC)
    size: int = 64  # cutout side in pixels
    supersample: int = 2  # sub-pixels per pixel side when integrating light profiles
    psf_size: int = 25  # PSF kernel side in pixels
    seeing_i: tuple[float, float] = (0.5, 0.95)  # i-band FWHM range, arcsec
    seeing_r_over_i: tuple[float, float] = (1.0, 1.2)  # r is a little worse than i
    seeing_g_over_i: tuple[float, float] = (1.1, 1.35)  # g is the worst band
    moffat_beta: tuple[float, float] = (2.5, 4.5)  # Moffat wing slope
    depth: tuple[float, float, float] = (26.5, 26.1, 25.9)  # 5-sigma point-source depth, g r i
    depth_scatter: float = 0.3  # +- uniform scatter of the depth, mag
    gain: tuple[float, float, float] = (600.0, 800.0, 1500.0)  # electrons per flux unit, g r i


@dataclass(frozen=True)
class Population:
    """Parameter ranges of every object kind (uniform unless said otherwise)."""

    # --- deflectors and isolated ellipticals (the same population)
    theta_e: tuple[float, float] = (0.6, 2.5)  # Einstein radius, log-uniform, arcsec
    small_theta_e: tuple[float, float] = (0.4, 0.6)  # the hard small-separation tail
    small_theta_e_frac: float = 0.1  # fraction of lenses drawn from the tail
    deflector_mag_i: tuple[float, float] = (19.0, 21.5)  # at theta_E = 1", brighter for larger
    reff_over_theta_e: tuple[float, float] = (0.7, 2.0)  # deflector effective radius / theta_E
    deflector_n: tuple[float, float] = (3.0, 5.0)  # Sersic index
    deflector_q: tuple[float, float] = (0.55, 1.0)  # axis ratio of light
    mass_q_scatter: float = 0.08  # mass axis ratio = light's +- this
    mass_angle_scatter_deg: float = 10.0  # mass follows light within this angle
    red_g_r: tuple[float, float] = (1.2, 1.8)  # early-type g - r
    red_r_i: tuple[float, float] = (0.35, 0.65)  # early-type r - i
    shear: tuple[float, float] = (0.0, 0.08)  # external shear amplitude
    core_radius: float = 0.03  # arcsec; isothermal core, far below the resolution
    # --- lensed sources
    source_mag_r: tuple[float, float] = (21.5, 25.5)  # unlensed r magnitude
    source_reff: tuple[float, float] = (0.08, 0.5)  # arcsec
    source_n: tuple[float, float] = (0.5, 1.5)
    source_q: tuple[float, float] = (0.4, 1.0)
    blue_g_r: tuple[float, float] = (-0.1, 0.6)  # star-forming g - r
    blue_r_i: tuple[float, float] = (-0.2, 0.3)
    clumps: tuple[int, int] = (0, 5)  # star-forming clumps per source (inclusive range)
    clump_flux_frac: tuple[float, float] = (0.1, 0.4)  # of the source's flux, all clumps
    clump_reff: tuple[float, float] = (0.02, 0.08)
    # every lens images its source centre at least twice (the definition of a strong lens);
    # a source outside the caustics is a singly imaged blue companion, a non-lens kind
    inner_beta: float = 0.7  # most source offsets: uniform in 0-0.7 theta_E
    near_caustic_frac: float = 0.15  # drawn at 0.55-0.9 theta_E (redrawn there until multiple)
    near_caustic_beta: tuple[float, float] = (0.55, 0.9)
    source_draws: int = 30  # redraws before falling back to a central source
    # --- contaminants
    spiral_reff: tuple[float, float] = (0.6, 2.2)
    spiral_mag_r: tuple[float, float] = (18.5, 22.0)
    spiral_arms: tuple[int, int] = (2, 4)
    ring_radius: tuple[float, float] = (0.7, 2.5)  # arcsec, like Einstein rings
    ring_width: tuple[float, float] = (0.08, 0.3)
    ring_mag_r: tuple[float, float] = (20.5, 24.0)
    merger_separation: tuple[float, float] = (0.6, 2.8)
    companion_radius: tuple[float, float] = (0.8, 3.0)
    companion_mag_r: tuple[float, float] = (21.5, 25.0)
    edge_on_q: tuple[float, float] = (0.08, 0.25)
    star_mag_r: tuple[float, float] = (16.5, 23.0)
    star_radius: tuple[float, float] = (0.8, 4.5)
    # --- both classes
    neighbours_mean: float = 1.2  # Poisson mean of random faint neighbours per cutout
    neighbour_mag_r: tuple[float, float] = (21.5, 25.5)
    center_jitter_pix: float = 0.5  # sub-pixel offset of the central object, +- pixels
    nonlens_mix: dict[str, float] = field(
        default_factory=lambda: {
            "elliptical": 0.30,
            "spiral": 0.14,
            "ring": 0.08,
            "merger": 0.10,
            "companions": 0.14,
            "edge_on": 0.07,
            "star": 0.10,
            "blank": 0.07,
        }
    )


PRESETS = ("hsc", "broad")


def preset(name: str) -> tuple[SurveyConditions, Population]:
    """Survey conditions and population of a named preset (see the module docstring)."""
    if name == "hsc":
        return SurveyConditions(), Population()
    if name == "broad":
        return (replace(SurveyConditions(), seeing_i=(0.45, 1.15), depth_scatter=0.5),
                replace(Population(), source_mag_r=(21.5, 25.8), source_reff=(0.08, 0.7),
                        blue_g_r=(-0.2, 0.7), blue_r_i=(-0.25, 0.35), clumps=(0, 7)))
    raise ValueError(f"unknown simulator preset {name!r}: choose one of {', '.join(PRESETS)}")
