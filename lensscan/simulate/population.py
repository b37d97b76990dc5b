"""Every population and survey parameter of the simulator, in one place.

Magnitudes are AB; fluxes are linear in units where ``m = ZP - 2.5 log10(flux)`` with the HSC
coadd zero-point ``ZP = 27``. Angles are arcseconds.

Two presets (:func:`preset`): ``hsc``, the defaults below, models HSC Wide with one rendering
family per choice (Moffat PSF, white noise, flat sky, single-Sersic deflector, isothermal mass,
clumpy Sersic source); ``broad``, the training prior of the bundled model, widens the conditions
and populations beyond HSC Wide's own and draws every rendering family of :class:`Rendering` at
random per object, so that a model trained on it depends neither on one survey's conditions nor
on one renderer's choices. Lens deflectors and non-lens ellipticals come from one distribution in
both presets, and ``broad`` adds *paired* non-lenses: the very same deflector, PSF, noise and
neighbours as a lens of the survey, rendered without its lensed source.

References for the ranges
-------------------------
- HSC-SSP Wide depth and seeing: Aihara et al. 2018, PASJ 70, S4 (Table 2; 5-sigma point-source
  depth g 26.5, r 26.1, i 25.9; median seeing i 0.6", r 0.7", g 0.8"); Aihara et al. 2022, PASJ 74.
- Lens population (Einstein radii, deflector and source magnitudes, shear): Collett 2015, ApJ 811,
  20; SuGOHI lens samples, Sonnenfeld et al. 2018, PASJ 70, S29 (theta_E 0.6"-2.5" for HSC).
- Early-type colours at z ~ 0.3-0.7 and star-forming source colours: Bruzual & Charlot 2003
  templates as used in Collett 2015; blue sources g-r ~ 0-0.5.
- Contaminants (spirals, rings, mergers, blue companions, edge-on disks, stars): the false
  positives listed by Jacobs et al. 2019, ApJS 243, 17 and Canameras et al. 2021, A&A 653, L6;
  shells and curved tidal features: Bilek et al. 2020, MNRAS 498, 2138.
- Rendering families: see the references on each field of :class:`Rendering`.
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
    psf_size: int = 25  # PSF kernel side in pixels (the least, with psf_tail)
    # None: the kernel is psf_size wide and renormalised, so its wings' light beyond it goes to
    # the core (the hsc preset, kept bit for bit: 0.1-1.7% of its Moffats' light at 0.7"
    # seeing, up to 8.4% at beta 2.5 in its worst g-band seeing, 1.28");
    # a fraction: the kernel grows until it leaves out at most this share of the light (or
    # reaches every pixel of the cutout), as point sources are drawn (their wings in full)
    psf_tail: float | None = None
    seeing_i: tuple[float, float] = (0.5, 0.95)  # i-band FWHM range, arcsec
    seeing_r_over_i: tuple[float, float] = (1.0, 1.2)  # r is a little worse than i
    seeing_g_over_i: tuple[float, float] = (1.1, 1.35)  # g is the worst band
    max_seeing_g: float = 1.3  # cap of the g-band FWHM, arcsec
    moffat_beta: tuple[float, float] = (2.5, 4.5)  # Moffat wing slope
    depth: tuple[float, float, float] = (26.5, 26.1, 25.9)  # 5-sigma point-source depth, g r i
    depth_scatter: float = 0.3  # +- uniform scatter of the depth, mag
    gain: tuple[float, float, float] = (600.0, 800.0, 1500.0)  # electrons per flux unit, g r i


def _one(name: str) -> dict[str, float]:
    return {name: 1.0}


@dataclass(frozen=True)
class Rendering:
    """Which implementation renders each part of a cutout: per choice, a weight per *family*,
    drawn at random per object (a choice with one family draws nothing). The family names are
    written as truth columns (``<choice>_family``), so a family can be held out of training and
    tested alone (:mod:`lensscan.train.robustness`).

    The defaults are the ``hsc`` preset's single families; :data:`ALL_FAMILIES` lists them all.
    """

    # Lensed (and companion) source light. sersic: one smooth Sersic; clumpy: Sersic plus
    # star-forming clumps (Collett 2015 sources with clumps as in Canameras et al. 2020);
    # knots: a diffuse Sersic plus random-walk star-forming knots (Larson & Bernstein's random-knot
    # galaxies, as in GalSim's RandomKnots).
    source: dict[str, float] = field(default_factory=lambda: _one("clumpy"))
    # Deflector (and every early-type) light. sersic: one Sersic, n 2-6; bulge_disk: a Sersic
    # bulge plus a fainter, bluer exponential disk (Simard et al. 2011); twist: three nested
    # Sersic shells whose position angle and axis ratio turn with radius and colour gets bluer
    # outwards (isophote twists, Lauer et al. 2005; colour gradients, La Barbera et al. 2010).
    deflector: dict[str, float] = field(default_factory=lambda: _one("sersic"))
    # Mass. sie: isothermal ellipsoid + shear; epl: elliptical power law with 3D slope
    # ``epl_gamma`` + shear (Tessore & Metcalf 2015; SLACS slopes, Auger et al. 2010); perturbed:
    # either of those plus m = 3 and 4 multipoles and a subhalo near the Einstein radius
    # (Van de Vyvere et al. 2022; Vegetti et al. 2012).
    mass: dict[str, float] = field(default_factory=lambda: _one("sie"))
    # PSF, per band (FWHM from the conditions, shape parameters drawn per band). moffat (Moffat
    # 1969; Trujillo et al. 2001); gaussian; double_gaussian: a core plus a wide wing (Bertin's
    # PSFEx-like wings of HSC coadds, Bosch et al. 2018); elliptical: a sheared Moffat.
    psf: dict[str, float] = field(default_factory=lambda: _one("moffat"))
    # Noise. white: Gaussian sky plus source shot noise (Gaussian approximation); correlated: the
    # same variance with pixel-to-pixel correlation from resampling in coadds (Bosch et al. 2018,
    # sec. 3.5); poisson: true Poisson counts of a shallow exposure, sky level included.
    noise: dict[str, float] = field(default_factory=lambda: _one("white"))
    # Sky background after subtraction. flat: perfect; gradient: a residual plane and pedestal;
    # oversub: a smoothed copy of the image subtracted (dark halos around bright galaxies, as in
    # HSC PDR1-2 before the global sky, Aihara et al. 2019) or added (under-subtraction).
    background: dict[str, float] = field(default_factory=lambda: _one("flat"))
    # Field. sparse: a Poisson number of faint galaxies; dense: a crowded field with brighter
    # neighbours; bright_star: sparse plus a bright star at the cutout's edge with diffraction
    # spikes (HSC's four-spike pattern, Coupon et al. 2018).
    neighbours: dict[str, float] = field(default_factory=lambda: _one("sparse"))

    # --- family parameters
    epl_gamma: tuple[float, float] = (1.7, 2.3)  # 3D density slope (2 = isothermal)
    multipole_a4: float = 0.02  # |a_4| / theta_E up to this (signed: discy or boxy)
    multipole_a3: float = 0.01  # a_3 / theta_E up to this
    subhalo_theta_e: tuple[float, float] = (0.02, 0.12)  # SIS subhalo Einstein radius, arcsec
    psf_moffat_beta: tuple[float, float] = (2.0, 5.0)  # Moffat slope of the non-hsc families
    psf_wing_ratio: tuple[float, float] = (1.8, 3.2)  # wing sigma / core sigma
    psf_wing_frac: tuple[float, float] = (0.05, 0.3)  # share of the light in the wing
    psf_q: tuple[float, float] = (0.82, 0.98)  # elliptical PSF axis ratio
    psf_band_angle_deg: float = 15.0  # per-band scatter of the PSF position angle
    corr_sigma_pix: tuple[float, float] = (0.4, 1.0)  # Gaussian correlation length, pixels
    corr_pixel_sigma: tuple[float, float] = (0.75, 1.0)  # pixel sigma / uncorrelated sigma
    poisson_sky_counts: tuple[float, float] = (20.0, 400.0)  # sky counts per pixel, log-uniform
    gradient_sigma: tuple[float, float] = (0.2, 2.0)  # plane's change across the cutout, sky sigma
    pedestal_sigma: float = 1.0  # +- constant sky residual, sky sigma
    oversub_frac: tuple[float, float] = (-0.3, 0.7)  # share of the smoothed image subtracted
    oversub_scale_pix: tuple[float, float] = (6.0, 16.0)  # smoothing sigma, pixels
    dense_mean: tuple[float, float] = (2.5, 6.0)  # Poisson mean of neighbours, dense fields
    dense_mag_r: tuple[float, float] = (20.0, 25.5)
    star_edge_mag_r: tuple[float, float] = (15.0, 18.5)  # the bright star at the edge
    star_edge_radius: tuple[float, float] = (4.5, 7.5)  # its distance from the centre, arcsec
    spike_frac: tuple[float, float] = (0.005, 0.03)  # share of the star's flux in the spikes


#: Every family of every choice of :class:`Rendering`.
ALL_FAMILIES: dict[str, tuple[str, ...]] = {
    "source": ("sersic", "clumpy", "knots"),
    "deflector": ("sersic", "bulge_disk", "twist"),
    "mass": ("sie", "epl", "perturbed"),
    "psf": ("moffat", "gaussian", "double_gaussian", "elliptical"),
    "noise": ("white", "correlated", "poisson"),
    "background": ("flat", "gradient", "oversub"),
    "neighbours": ("sparse", "dense", "bright_star"),
}
#: The truth column naming each object's family of ``choice`` (``none`` where it does not apply).
FAMILY_COLUMNS = tuple(f"{c}_family" for c in ALL_FAMILIES)


def every_family() -> Rendering:
    """A :class:`Rendering` that draws every family of every choice with equal weight."""
    return Rendering(**{c: dict.fromkeys(names, 1.0) for c, names in ALL_FAMILIES.items()})


@dataclass(frozen=True)
class Population:
    """Parameter ranges of every object kind (uniform unless said otherwise)."""

    # --- deflectors and isolated ellipticals (the same population)
    theta_e: tuple[float, float] = (0.6, 2.5)  # Einstein radius, log-uniform, arcsec
    small_theta_e: tuple[float, float] = (0.4, 0.6)  # the hard small-separation tail
    small_theta_e_frac: float = 0.1  # fraction of lenses drawn from the tail
    deflector_mag_i: tuple[float, float] = (19.0, 21.5)  # at theta_E = 1", brighter for larger
    reff_over_theta_e: tuple[float, float] = (0.7, 2.0)  # deflector effective radius / theta_E
    deflector_reff: tuple[float, float] = (0.35, 3.5)  # clip of the effective radius, arcsec
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
    # 0: source magnitudes uniform in source_mag_r; else drawn as faint galaxies are counted,
    # dN/dm ~ 10**(source_mag_counts * m) (d log N / d m about 0.45 in r at r < 21, Yasuda et
    # al. 2001, AJ 122, 1104, flattening fainter): most sources then lie near the faint end, and
    # their arcs magnitudes under a bright deflector, as in the independent renderers and the sky
    source_mag_counts: float = 0.0
    source_reff: tuple[float, float] = (0.08, 0.5)  # arcsec
    source_n: tuple[float, float] = (0.5, 1.5)
    source_q: tuple[float, float] = (0.4, 1.0)
    blue_g_r: tuple[float, float] = (-0.1, 0.6)  # star-forming g - r
    blue_r_i: tuple[float, float] = (-0.2, 0.3)
    clumps: tuple[int, int] = (0, 5)  # star-forming clumps per source (inclusive range)
    clump_flux_frac: tuple[float, float] = (0.1, 0.4)  # of the source's flux, all clumps
    clump_reff: tuple[float, float] = (0.02, 0.08)
    knots: tuple[int, int] = (8, 40)  # random-walk knots per source (inclusive range)
    knot_flux_frac: tuple[float, float] = (0.3, 0.8)  # of the source's flux, all knots
    knot_sigma: tuple[float, float] = (0.03, 0.07)  # Gaussian width of a knot, arcsec
    # every lens images its source centre at least twice (the definition of a strong lens);
    # a source outside the caustics is a singly imaged blue companion, a non-lens kind
    inner_beta: float = 0.7  # most source offsets: inside 0.7 theta_E ...
    area_uniform: bool = False  # ... uniform in radius (False) or in area (True)
    near_caustic_frac: float = 0.15  # drawn at 0.55-0.9 theta_E (redrawn there until multiple)
    near_caustic_beta: tuple[float, float] = (0.55, 0.9)
    source_draws: int = 30  # redraws before falling back to a central source
    min_arc_snr: float = 0.0  # fainter arcs are brightened towards 1-2 times this S/N ...
    max_brighten: float = 30.0  # ... by at most this factor in flux
    # --- contaminants
    spiral_reff: tuple[float, float] = (0.6, 2.2)
    spiral_mag_r: tuple[float, float] = (18.5, 22.0)
    spiral_arms: tuple[int, int] = (2, 4)
    spiral_pitch_deg: tuple[float, float] = (12.0, 30.0)
    # clumpy, flocculent star-forming disks: giant clumps hold up to 20% of a disk's light each at
    # z ~ 1-2 (Guo et al. 2015, ApJ 800, 39) and some percent nearby (Mehta et al. 2021, ApJ 912,
    # 49); bright blue knots in an arm are the spiral look-alike of a lensed arc's images. The
    # knots come on top of the galaxy's light (central_mag_r: bulge and disk); broad lets one
    # reach 40% of it, brighter than observed clumps: a hard negative on purpose
    spiral_bulge_frac: tuple[float, float] = (0.1, 0.5)  # of the galaxy's r flux
    spiral_disk_g_r: tuple[float, float] = (0.3, 0.8)  # the smooth disk's colour (arms: blue)
    spiral_arm_share: tuple[float, float] = (0.45, 0.45)  # of the disk's flux in blue arms
    spiral_arm_power: tuple[float, float] = (3.0, 3.0)  # arm profile cos^p: high p, thin arms
    spiral_knots: tuple[int, int] = (2, 8)  # star-forming knots per spiral (inclusive range)
    spiral_knot_dmag: tuple[float, float] = (2.5, 4.5)  # a knot's r mag minus the galaxy's
    spiral_knots_scattered: float = 0.0  # share of spirals whose knots lie anywhere in the disk
    ring_radius: tuple[float, float] = (0.7, 2.5)  # arcsec, like Einstein rings
    ring_width: tuple[float, float] = (0.08, 0.3)
    ring_mag_r: tuple[float, float] = (20.5, 24.0)
    ring_any_colour: float = 0.0  # share of rings of any colour (else blue)
    ring_smooth: float = 0.0  # share of rings that are symmetric and smooth (no lopsidedness)
    # axis ratio of a ring as seen: ring galaxies lie at every inclination (flattened ones
    # are seen nearly edge-on), while an Einstein ring is never much flatter than its lens
    ring_axis_ratio: tuple[float, float] = (0.55, 1.0)
    # share of rings around a galaxy of the deflector population, at its Einstein radius times
    # ring_over_theta_e and red, of old stars (resonance rings of early-type disks lie at 1-3
    # bar radii, of the order of R_eff: Buta & Combes 1996, Fund. Cosmic Phys. 17, 95); else a
    # small core, ring_radius apart
    ring_host_deflector: float = 0.0
    ring_over_theta_e: tuple[float, float] = (0.8, 1.25)
    ring_host_dmag: tuple[float, float] = (0.0, 3.0)  # such a ring's r mag minus its host's
    # share of those hosted rings that are instead star-forming (collisional or polar) rings:
    # blue, with knots unless smooth, of a radius from ring_radius whatever the host's Einstein
    # radius, within ring_host_dmag of the host (Appleton & Struck-Marcell 1996, Fund. Cosmic
    # Phys. 16, 111; Whitmore et al. 1990, AJ 100, 1489): every independent renderer's rings
    # were false positives of the bundled model (issue 12)
    ring_host_blue: float = 0.0
    # share of the other hosted rings that are outer resonance rings of early-type disks
    # instead: of any colour between the blue sources' and the red hosts', of a radius from
    # ring_radius whatever the host's Einstein radius, smooth or lopsided, without knots (outer
    # rings are often bluer than their bulge and lie at 2-3 bar radii: Buta 1995, ApJS 96, 39;
    # Comeron et al. 2014, A&A 562, A121). Bright rings of intermediate colour round bright early
    # types were the top false positives of a renderer written apart (issue 12)
    ring_host_resonance: float = 0.0
    # a ring knot's r mag minus its ring's: up to as bright as the ring's diffuse light,
    # as the knots of collisional rings are (the Cartwheel's: Higdon 1995, ApJ 455, 524)
    ring_knot_dmag: tuple[float, float] = (1.0, 2.5)
    merger_separation: tuple[float, float] = (0.6, 2.8)
    merger_curved: float = 0.0  # share of mergers with curved tails and shells, not straight
    merger_host_deflector: float = 0.0  # share whose primary is of the deflector population
    companion_radius: tuple[float, float] = (0.8, 3.0)
    companion_mag_r: tuple[float, float] = (21.5, 25.0)
    companion_q: tuple[float, float] = (0.25, 0.6)  # axis ratio of tangential companions
    companion_as_source: bool = False  # companions drawn like lensed sources (their families)
    edge_on_q: tuple[float, float] = (0.08, 0.25)
    edge_on_crossing: float = 0.0  # share of edge-on disks crossing a red galaxy's centre
    star_mag_r: tuple[float, float] = (16.5, 23.0)
    star_radius: tuple[float, float] = (0.8, 4.5)
    star_central: float = 0.0  # share of star cutouts centred on a star (or a pair) instead
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
    rendering: Rendering = field(default_factory=Rendering)


PRESETS = ("hsc", "broad")


def with_families(pop: Population, pairs: list[str]) -> Population:
    """``pop`` with each ``"choice=family"`` of ``pairs`` as that choice's only family (the
    robustness matrix's test sets: one renderer swapped into an otherwise unchanged survey)."""
    forced = {}
    for pair in pairs:
        choice, _, family = pair.partition("=")
        if family not in ALL_FAMILIES.get(choice, ()):
            raise ValueError(f"--family {pair!r}: choose CHOICE=FAMILY from "
                             + "; ".join(f"{c}: {', '.join(f)}" for c, f in ALL_FAMILIES.items()))
        forced[choice] = {family: 1.0}
    return replace(pop, rendering=replace(pop.rendering, **forced)) if forced else pop


def with_theta_e(pop: Population, text: str | None) -> Population:
    """``pop`` with every Einstein radius drawn log-uniform in ``"LO,HI"`` arcsec and no
    small-separation tail (a focused training set). Deflectors of lenses and of the isolated and
    paired non-lenses follow the change alike, so the classes still differ only by lensing."""
    if not text:
        return pop
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--theta-e {text!r}: give LO,HI in arcsec, e.g. 1.4,3.0") from None
    if not 0.1 <= lo < hi <= 5.0:
        raise ValueError(f"--theta-e {text!r}: need 0.1 <= LO < HI <= 5.0 arcsec")
    return replace(pop, theta_e=(lo, hi), small_theta_e_frac=0.0)


def _broad() -> tuple[SurveyConditions, Population]:
    """The training prior: wider conditions and populations, every rendering family, harder
    contaminants and paired non-lenses (see the module docstring)."""
    cond = replace(SurveyConditions(), seeing_i=(0.45, 1.2), seeing_g_over_i=(1.0, 1.45),
                   max_seeing_g=1.5, depth_scatter=0.6, psf_size=31,
                   psf_tail=2e-3)
    pop = replace(
        Population(),
        theta_e=(0.6, 3.0), small_theta_e=(0.35, 0.6), small_theta_e_frac=0.12,
        deflector_mag_i=(18.3, 22.3), reff_over_theta_e=(0.4, 2.5), deflector_reff=(0.3, 3.5),
        deflector_n=(2.0, 6.0), deflector_q=(0.45, 1.0), red_g_r=(0.9, 1.9), red_r_i=(0.3, 0.75),
        shear=(0.0, 0.12),
        source_mag_r=(20.5, 26.0), source_reff=(0.05, 0.9), source_n=(0.5, 2.5),
        source_q=(0.3, 1.0), blue_g_r=(-0.3, 1.0), blue_r_i=(-0.3, 0.5), clumps=(0, 8),
        area_uniform=True, min_arc_snr=15.0,
        spiral_pitch_deg=(8.0, 35.0), spiral_bulge_frac=(0.0, 0.5), spiral_disk_g_r=(-0.1, 0.8),
        spiral_arm_share=(0.3, 0.8), spiral_arm_power=(1.0, 4.0), spiral_knots=(2, 14),
        spiral_knot_dmag=(1.0, 4.5), spiral_knots_scattered=0.4,
        ring_radius=(0.5, 3.0), ring_width=(0.06, 0.5),
        ring_mag_r=(20.0, 24.5), ring_any_colour=0.5, ring_smooth=0.35,
        ring_host_deflector=0.35, merger_curved=0.5, merger_host_deflector=0.3,
        companion_mag_r=(20.5, 25.5), companion_q=(0.15, 0.6), companion_as_source=True,
        edge_on_crossing=0.5, star_central=0.4,
        neighbour_mag_r=(20.5, 25.5),
        # rings and mergers around deflector-population hosts come on top of the others: as
        # many blue rings and ordinary mergers as before them
        nonlens_mix={"elliptical": 0.18, "paired": 0.20, "spiral": 0.08, "ring": 0.14,
                     "merger": 0.13, "companions": 0.12, "edge_on": 0.05, "star": 0.06,
                     "blank": 0.04},
        rendering=every_family(),
    )
    return cond, pop


def preset(name: str) -> tuple[SurveyConditions, Population]:
    """Survey conditions and population of a named preset (see the module docstring)."""
    if name == "hsc":
        return SurveyConditions(), Population()
    if name == "broad":
        return _broad()
    raise ValueError(f"unknown simulator preset {name!r}: choose one of {', '.join(PRESETS)}")
