"""Independent HSC-Wide-like test-set renderer for a galaxy-scale strong-lens finder.

Written blind to the lens finder's code and to the project's other renderers (the "separate
author" generator): every modelling choice below is this module's own, taken from the HSC and
strong-lensing literature. numpy + scipy only.

    python tests/support/fourthrender.py OUT --lenses 300 --nonlenses 3000 --seed 1

Output. OUT/test_lenses/L%06d.npy and OUT/test_nonlenses/N%06d.npy: float32 (3, 64, 64) g, r, i
stamps, 0.168"/px, linear sky-subtracted flux at AB zero point 27, noise included; OUT/truth.csv
has one row per object (floats to 6 significant digits; r_mag and g_r describe the whole central
system, reff_arcsec and sersic_n its main component). Each object has its own numpy Generator
seeded with (seed, label, index); the non-lens kind of index i depends on (seed, i) only
(`nonlens_kind`). API: `make_object`, `write_layout`, `nonlens_kind`, `deflection`.

Early-type population: the lens deflectors and the non-lens ellipticals share one draw
(`draw_etg`) and one rendering path (`render_etg`), so the two classes differ only by lensing.
sigma from the Choi et al. (2007) velocity-dispersion function times sigma^4 (lensing cross
section) times sigma^2 (resolvability), 150-400 km/s; z_l ~ N(0.45, 0.17) within (0.08, 0.95);
Faber-Jackson M_r = -21.2 - 10 log10(sigma/200) +- 0.35 mag, a tabulated elliptical
K-correction and passive evolution -0.9 z; log10(Re/kpc) = 0.6 - 0.26 (M_r + 21.5) +- 0.13
times (1+z)^-0.5; kept if 17 <= r <= 23.5 and 0.3" <= Re <= 3". Sersic n = 4 (sigma/220)^0.3
with 18% lognormal scatter (2-7), q ~ N(0.75, 0.15); g-r and r-i follow a red-sequence track
in z plus a sigma term. Structure: one Sersic (55%), S0-like bulge + 10-30% bluer exponential
disk (25%), or an isophote twist of two Sersics 10-40 deg apart (20%); all with a colour
gradient (Re larger in g, smaller in i).

Mass: Einstein radius of an isothermal sphere with that sigma, z_l and a source at z_s ~
lognormal about 1.9 (z_s redrawn until 0.5" <= theta_E <= 3"; flat LCDM, H0 = 70,
Om = 0.3). Models: SIE + shear (40%); elliptical power law, slope N(2, 0.1), + shear (30%);
the same + m = 3, 4 isothermal multipoles of ~1% (18%); SIE + shear + SIS subhalo of
0.02-0.1" near the critical curve (12%). Mass q and PA follow the light (scatter 0.1, 10 deg);
shear lognormal about 0.035; centre offset 0.02". EPL deflections: Tessore & Metcalf (2015).

Source: unlensed r from counts dN/dm ~ 10^(0.3 m) on 21.2-26; Re = 0.25" 10^(-0.1 (r-25))
+- 0.18 dex scaled by ((1+z_s)/2.8)^-0.5; star-forming colours (g-r ~ N(0.2, 0.15), redder
beyond z = 2.6). Morphology: Sersic n 0.5-1.6 (35%), exponential disk + 2-6 bluer Gaussian
clumps (40%), or 2-3 offset blobs + clumps (irregular, 25%). Position uniform within
0.7 theta_E. Surface brightness is ray traced on 4x4 sub-pixels (conserved); magnification
= lensed / intrinsic flux; arc_snr = sqrt(sum s^2 / var) of the PSF-convolved lensed r light,
var = sky + Poisson (per-pixel variance only).

Non-lens kinds (shares): elliptical 40%; spiral 11% (bulge + disk + blue logarithmic arms and
HII knots: grand-design, multi-arm, flocculent, barred); ring 9% (collisional: off-centre,
lopsided, knotty, with an intruder; polar; resonance or pseudo-ring arcs on S0s; blue rings
around population ellipticals); companion 10% (population elliptical with 1-3 compact blue
companions at 0.8-3.5", tidal shells, or a tidal stream); merger 7% (wet, dry and minor with
curved tidal tails); edge-on disk 6% (q 0.08-0.22, 60% with a dust lane); star 8% (single,
binary, star + galaxy; stellar-locus colours); sky 9% (empty, or a faint r 23-25.5 galaxy).

PSF, per object and band: i FWHM lognormal about 0.59" (0.4-1.0"), r 1.19x and g 1.30x wider
(8% scatter). Families: Moffat beta 2.5-4.5 (40%); double Gaussian, 5-20% of light in a
1.8-3x wider wing (25%); Kolmogorov long-exposure atmosphere x Gaussian optics/guiding OTF
(35%). All pixel-integrated and elliptical (|e| <= 0.06, 0.01 scatter between bands).

Noise and background: sky sigma per pixel from 5-sigma point depths g/r/i 26.5/26.1/25.9
(+-0.2 common, +-0.08 per band) at median seeing; Poisson noise on objects through the gain
implied by sky brightness 22.0/21.0/20.2 mag/arcsec^2. Noise white (55%) or correlated, with
variance kept: coadd of 2-4 Lanczos-3 resampled exposures (25%) or a Gaussian kernel (20%).
Sky: perfect (50%), residual plane (25%), over-subtracted halo around the central galaxy
(15%), large-scale wave (10%). 4% carry a cosmic-ray or bad-column residual.

Neighbours (all kinds alike): Poisson(6) field galaxies over the stamp plus a 1.5" margin,
r 19.5-26.5 from counts (30% red), kept beyond 1.5" of the centre; Poisson(0.15) faint stars;
3% a bright star (r 13.5-17) 5.5-9.5" away, on or beyond the edge. Everything is rendered
on a 128-px padded grid and FFT-convolved; point sources are placed by Fourier phase shifts.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage, optimize, special

NPIX, PIX, ZP, PAD = 64, 0.168, 27.0, 32  # stamp pixels, arcsec/pixel, zero point, padding
NP = NPIX + 2 * PAD
CEN = (NP - 1) / 2.0  # padded-grid pixel index of the stamp centre
HALF = NPIX / 2 * PIX
C_KMS, ARCSEC, TWO_PI = 299792.458, 180.0 / math.pi * 3600.0, 2.0 * math.pi
NONLENS_SHARES = {
    "elliptical": 0.40, "spiral": 0.11, "ring": 0.09, "companion": 0.10,
    "merger": 0.07, "edgeon": 0.06, "star": 0.08, "sky": 0.09,
}
COLUMNS = [
    "object_id", "label", "kind", "subkind", "theta_e_arcsec", "r_mag", "reff_arcsec",
    "sersic_n", "g_r", "src_r_mag", "arc_snr", "magnification", "seeing_g_arcsec",
    "seeing_r_arcsec", "seeing_i_arcsec", "psf_kind", "noise_kind", "bkg_kind", "z_lens",
    "z_src", "sigma_v_kms", "q_light", "mass_kind", "gamma_slope", "shear", "src_kind",
    "src_reff_arcsec", "n_neighbours", "bright_star", "artifact", "depth_r", "sky_sigma_r",
]

# ---------------------------------------------------------------- cosmology and populations
_ZG = np.linspace(0.0, 6.0, 6001)
_INV_E = 1.0 / np.sqrt(0.3 * (1.0 + _ZG) ** 3 + 0.7)
_DC = np.concatenate([[0.0], np.cumsum(0.5 * (_INV_E[1:] + _INV_E[:-1]) * np.diff(_ZG))])
_DC *= C_KMS / 70.0  # comoving distance, Mpc
_SG = np.linspace(150.0, 400.0, 501)  # Choi et al. VDF x sigma^4 x sigma^2
_SCDF = np.cumsum((_SG / 161.0) ** 8.32 * np.exp(-((_SG / 161.0) ** 2.67)) / _SG)
_SCDF = (_SCDF - _SCDF[0]) / (_SCDF[-1] - _SCDF[0])
_ZT = np.arange(0.0, 1.01, 0.1)
_KCORR_R = [0.0, 0.13, 0.30, 0.52, 0.80, 1.10, 1.40, 1.62, 1.80, 1.95, 2.05]
_GR_ETG = [0.75, 0.95, 1.20, 1.45, 1.65, 1.78, 1.87, 1.93, 1.97, 1.99, 2.00]
_RI_ETG = [0.38, 0.41, 0.45, 0.52, 0.60, 0.70, 0.85, 1.00, 1.10, 1.15, 1.20]


def _dang(z1, z2):
    """Angular-diameter distance (Mpc) between z1 < z2, flat universe."""
    return float(np.interp(z2, _ZG, _DC) - np.interp(z1, _ZG, _DC)) / (1.0 + z2)


def _mag2flux(m):
    return 10.0 ** (-0.4 * (m - ZP))


def _flux2mag(f):
    return ZP - 2.5 * math.log10(max(float(f), 1e-30))


def _col(fr, gr, ri):
    """(g, r, i) fluxes from an r-band flux and g-r, r-i colours."""
    return np.array([fr * 10 ** (-0.4 * gr), fr, fr * 10 ** (0.4 * ri)])


def _counts_mag(rng, lo, hi, slope):
    """Magnitude from number counts dN/dm ~ 10**(slope m) on [lo, hi]."""
    a, b = 10 ** (slope * lo), 10 ** (slope * hi)
    return math.log10(a + rng.random() * (b - a)) / slope


def _u2pi(rng):
    return rng.uniform(0.0, TWO_PI)


def draw_etg(rng) -> dict:
    """One early-type galaxy of the deflector population (lenses AND non-lens ellipticals)."""
    while True:
        sig = float(np.interp(rng.random(), _SCDF, _SG))
        z = rng.normal(0.45, 0.17)
        if not 0.08 < z < 0.95:
            continue
        absm = -21.2 - 10.0 * math.log10(sig / 200.0) + rng.normal(0.0, 0.35)
        dlum = float(np.interp(z, _ZG, _DC)) * (1.0 + z)
        rmag = absm + 5 * math.log10(dlum * 1e5) + np.interp(z, _ZT, _KCORR_R) - 0.9 * z
        re_kpc = 10 ** (0.6 - 0.26 * (absm + 21.5) + rng.normal(0.0, 0.13)) * (1 + z) ** -0.5
        re = re_kpc / (1000.0 * _dang(0.0, z)) * ARCSEC
        if 17.0 <= rmag <= 23.5 and 0.3 <= re <= 3.0:
            break
    lsig, q = math.log10(sig / 220.0), float(np.clip(rng.normal(0.75, 0.15), 0.4, 0.98))
    return dict(
        sig=sig, z=z, r=float(rmag), re=re, q=q, pa=rng.uniform(0, math.pi),
        n=float(np.clip(4.0 * (sig / 220.0) ** 0.3 * math.exp(rng.normal(0, 0.18)), 2.0, 7.0)),
        gr=float(np.interp(z, _ZT, _GR_ETG) + 0.15 * lsig + rng.normal(0, 0.05)),
        ri=float(np.interp(z, _ZT, _RI_ETG) + 0.08 * lsig + rng.normal(0, 0.04)),
        structure=str(rng.choice(["sersic", "disky", "twist"], p=[0.55, 0.25, 0.20])),
        grad=float(np.clip(rng.normal(0.12, 0.08), -0.05, 0.35)),
        fd=rng.uniform(0.1, 0.3), rd=rng.uniform(1.3, 2.2), qd=rng.uniform(0.25, 0.6),
        qo=float(np.clip(q + rng.normal(0, 0.1), 0.35, 1.0)),
        dpa=math.radians(rng.uniform(10, 40)) * rng.choice([-1, 1]))


# ---------------------------------------------------------------- surface-brightness profiles
def _rot(dx, dy, pa):
    c, s = math.cos(pa), math.sin(pa)
    return c * dx + s * dy, -s * dx + c * dy


def _ell_r2(dx, dy, q, pa):
    xp, yp = _rot(dx, dy, pa)
    return q * xp * xp + yp * yp / q


def sersic_sb(re, n, q=1.0, pa=0.0, xc=0.0, yc=0.0):
    """Unit-flux Sersic surface brightness (per arcsec^2); re is the circularised radius."""
    b = float(special.gammaincinv(2.0 * n, 0.5))
    logc = 2 * n * math.log(b) - math.log(TWO_PI * n * re * re) - float(special.gammaln(2 * n))

    def f(dx, dy):
        return np.exp(logc - b * (_ell_r2(dx - xc, dy - yc, q, pa) / re**2) ** (0.5 / n))
    return f


def gauss_sb(sig, xc=0.0, yc=0.0):
    def f(dx, dy):
        return np.exp(-0.5 * ((dx - xc) ** 2 + (dy - yc) ** 2) / sig**2) / (TWO_PI * sig * sig)
    return f


def ring_sb(rad, w, q=1.0, pa=0.0, xc=0.0, yc=0.0, amp=0.0, th0=0.0, window=None):
    """Gaussian-profile annulus, optionally lopsided (amp) or cut to an arc (window, rad)."""
    def f(dx, dy):
        xp, yp = _rot(dx - xc, dy - yc, pa)
        r, th = np.hypot(xp, yp / q), np.arctan2(yp / q, xp)
        v = np.exp(-0.5 * ((r - rad) / w) ** 2) * (1.0 + amp * np.cos(th - th0))
        if window is not None:
            v = v * np.exp(-0.5 * (np.angle(np.exp(1j * (th - th0))) / window) ** 2)
        return v
    return f


def arm_sb(h, q, pa, m, pitch, phi0, sharp):
    """Logarithmic m-armed spiral pattern on an exponential disk (un-normalised)."""
    def f(dx, dy):
        xp, yp = _rot(dx, dy, pa)
        r, th = np.hypot(xp, yp / q) + 1e-4, np.arctan2(yp / q, xp)
        mod = (0.5 * (1 + np.cos(m * (th - np.log(r / h) / math.tan(pitch)) - phi0))) ** sharp
        return np.exp(-r / h) * mod * (1 - np.exp(-((r / (0.7 * h)) ** 2)))
    return f


def tail_sb(length, th0, curv, sig0):
    """Curved tidal tail: a chain of fading, widening Gaussians -> (f, (mx, my), half)."""
    t = np.linspace(0.0, 1.0, 18)
    px = np.cumsum(np.cos(th0 + curv * t)) * length / t.size
    py = np.cumsum(np.sin(th0 + curv * t)) * length / t.size
    wts, sg = np.exp(-2.0 * t), sig0 * (1 + 2.0 * t)
    mx, my = float(px.mean()), float(py.mean())

    def f(dx, dy):
        return sum(wts[k] / sg[k] ** 2 * np.exp(-0.5 * ((dx - px[k] + mx) ** 2 + (
            dy - py[k] + my) ** 2) / sg[k] ** 2) for k in range(t.size))
    return f, (mx, my), float(np.max(np.hypot(px - mx, py - my)) + 3 * sg[-1] + 0.2)


# ---------------------------------------------------------------- lens mass models
def deflection(x, y, theta_e, q=1.0, pa=0.0, gamma=2.0, x0=0.0, y0=0.0):
    """Deflection (alpha_x, alpha_y), arcsec, of an elliptical power-law (EPL) mass.

    deflection(x, y, theta_e, q=1.0, pa=0.0, gamma=2.0, x0=0.0, y0=0.0) -> (ax, ay)
    x, y: image-plane positions (arcsec; arrays or scalars); theta_e: circularised Einstein
    radius (arcsec); q: mass axis ratio; pa: major-axis angle (rad, from +x); gamma: 3-D
    logarithmic slope (2 = isothermal, i.e. SIE); x0, y0: centre. Convergence
    kappa = (3 - gamma)/2 (b / sqrt(q^2 x'^2 + y'^2))^(gamma - 1) with b = theta_e sqrt(q),
    evaluated with the Tessore & Metcalf (2015) series. For q = 1 and gamma = 2 (a singular
    isothermal sphere) |alpha| = theta_e at every radius.
    """
    x, y = np.asarray(x, float) - x0, np.asarray(y, float) - y0
    t, q = gamma - 1.0, min(max(float(q), 1e-3), 1.0)
    b = theta_e * math.sqrt(q)
    xr, yr = _rot(x, y, pa)
    rr = np.maximum(np.hypot(q * xr, yr), 1e-9)
    eiphi = (q * xr + 1j * yr) / rr
    omega, term, f = eiphi.copy(), eiphi.copy(), (1.0 - q) / (1.0 + q)
    if f > 1e-12:
        for n in range(1, min(200, int(math.log(1e-10) / math.log(f)) + 2)):
            term = term * (-f * (2 * n - (2 - t)) / (2 * n + (2 - t))) * eiphi * eiphi
            omega = omega + term
    alpha = 2.0 * b / (1.0 + q) * (b / rr) ** (t - 1.0) * omega
    c, s = math.cos(pa), math.sin(pa)
    return c * alpha.real - s * alpha.imag, s * alpha.real + c * alpha.imag


def lens_deflection(x, y, lens):
    """Total deflection of a lens dict: EPL + external shear + multipoles + SIS subhaloes."""
    ax, ay = deflection(x, y, lens["te"], lens["q"], lens["pa"], lens["gamma"],
                        lens["x0"], lens["y0"])
    dx, dy = x - lens["x0"], y - lens["y0"]
    g1, g2, phi = lens["g1"], lens["g2"], np.arctan2(dy, dx)
    ax, ay = ax + g1 * dx + g2 * dy, ay + g2 * dx - g1 * dy
    for m, am, phm in lens.get("multipoles", []):  # psi = r am/(1-m^2) cos(m(phi-phm))
        a, dl = am / (1.0 - m * m), m * (phi - phm)
        ax = ax + a * (np.cos(dl) * np.cos(phi) + m * np.sin(dl) * np.sin(phi))
        ay = ay + a * (np.cos(dl) * np.sin(phi) - m * np.sin(dl) * np.cos(phi))
    for bs, xs, ys in lens.get("subhalos", []):
        rs = np.maximum(np.hypot(x - xs, y - ys), 1e-9)
        ax, ay = ax + bs * (x - xs) / rs, ay + bs * (y - ys) / rs
    return ax, ay


# ---------------------------------------------------------------- pixel rendering
def _prange(c, half):
    lo = int(math.floor((c - half) / PIX + CEN + 0.5))
    return max(lo, 0), min(int(math.floor((c + half) / PIX + CEN + 0.5)) + 1, NP)


def _subgrid(i0, i1, j0, j1, ss):
    off = (np.arange(ss) + 0.5) / ss - 0.5
    return (((np.arange(j0, j1)[:, None] + off).ravel() - CEN) * PIX,
            ((np.arange(i0, i1)[:, None] + off).ravel() - CEN) * PIX)


def _bin(v, ny, nx, ss):
    return v.reshape(ny, ss, nx, ss).mean(axis=(1, 3)) * (PIX * PIX)


def _sample(func, x0, y0, i0, i1, j0, j1, ss):
    xs, ys = _subgrid(i0, i1, j0, j1, ss)
    v = np.broadcast_to(func(xs[None, :] - x0, ys[:, None] - y0), (ys.size, xs.size))
    return _bin(v, i1 - i0, j1 - j0, ss)


class Canvas:
    """Padded (3, NP, NP) flux layers (unlensed, lensed) and a point-source list."""

    def __init__(self):
        self.ext, self.arc, self.points = np.zeros((3, NP, NP)), np.zeros((3, NP, NP)), []

    @staticmethod
    def render(func, x0, y0, half, core=0.6, ss_core=6):
        """Pixel-integrated profile: 2x2 (1x1 if large) sub-pixels, 6x6 within `core`."""
        (i0, i1), (j0, j1) = _prange(y0, half), _prange(x0, half)
        if i1 <= i0 or j1 <= j0:
            return None
        img = _sample(func, x0, y0, i0, i1, j0, j1, 2 if max(i1 - i0, j1 - j0) <= 60 else 1)
        (a0, a1), (b0, b1) = _prange(y0, core), _prange(x0, core)
        a0, a1, b0, b1 = max(a0, i0), min(a1, i1), max(b0, j0), min(b1, j1)
        if core > 0 and a1 > a0 and b1 > b0:
            img[a0 - i0:a1 - i0, b0 - j0:b1 - j0] = _sample(func, x0, y0, a0, a1, b0, b1, ss_core)
        return (i0, i1, j0, j1), img

    def put(self, out, flux3, band=None):
        if out is not None:
            (i0, i1, j0, j1), img = out
            for b in range(3) if band is None else [band]:
                self.ext[b, i0:i1, j0:j1] += flux3[b] * img

    def add(self, func, x0, y0, flux3, half, core=0.6, numeric=False, band=None):
        out = self.render(func, x0, y0, half, core)
        if out is not None and numeric:
            out = (out[0], out[1] / out[1].sum()) if out[1].sum() > 0 else None
        self.put(out, np.asarray(flux3, float), band)

    def blob(self, x, y, flux3, re, n, q=1.0, pa=0.0, core=0.6):
        self.add(sersic_sb(re, n, q, pa), x, y, flux3, min(8 * re + 0.5, 10.0), core)


def render_etg(cv, e, x0, y0):
    """Deflector / elliptical light; the same code path for lenses and non-lenses."""
    ftot = _col(_mag2flux(e["r"]), e["gr"], e["ri"])
    scale = (1.0 + e["grad"], 1.0, 1.0 - 0.5 * e["grad"])  # bluer outskirts
    re, n, q, pa = e["re"], e["n"], e["q"], e["pa"]
    half = min(max(8.0 * re, 3.0), 10.0)
    comps = [(re, q, pa, ftot)]
    if e["structure"] == "disky":  # S0-like: bulge + faint, bluer exponential disk
        fd = np.minimum(_col(e["fd"] * ftot[1], e["gr"] - 0.25, e["ri"] - 0.1), 0.5 * ftot)
        cv.add(sersic_sb(re * e["rd"], 1.0, min(q, e["qd"]), pa), x0, y0, fd, half)
        comps = [(re * 0.8, q, pa, ftot - fd)]
    elif e["structure"] == "twist":  # inner and outer parts with different PA and flattening
        comps = [(re * 0.55, q, pa, 0.5 * ftot), (re * 1.5, e["qo"], pa + e["dpa"], 0.5 * ftot)]
    for rc, qc, pc, fc in comps:
        for b in range(3):
            cv.add(sersic_sb(rc * scale[b], n, qc, pc), x0, y0, fc, half, band=b)
    return ftot


def _etg_info(info, e, **kw):
    info.update(r_mag=e["r"], reff_arcsec=e["re"], sersic_n=e["n"], g_r=e["gr"], z_lens=e["z"],
                sigma_v_kms=e["sig"], q_light=e["q"], **kw)


def _flux_info(info, ftot, re, n, **kw):
    info.update(r_mag=_flux2mag(ftot[1]), g_r=-2.5 * math.log10(ftot[0] / ftot[1]),
                reff_arcsec=re, sersic_n=n, **kw)


# ---------------------------------------------------------------- object builders
def _draw_source(rng, zs):
    """Faint star-forming source: list of (unit-flux SB function, (g, r, i) flux), etc."""
    m = _counts_mag(rng, 21.2, 26.0, 0.3)
    fr = _mag2flux(m)
    re = float(np.clip(0.25 * 10 ** (-0.1 * (m - 25) + rng.normal(0, 0.18))
                       * ((1 + zs) / 2.8) ** -0.5, 0.07, 1.2))
    gr0, ri0 = rng.normal(0.2, 0.15) + 0.6 * max(0.0, zs - 2.6), rng.normal(0.1, 0.12)
    q, pa = rng.uniform(0.3, 1.0), rng.uniform(0, math.pi)
    sk = str(rng.choice(["sersic", "clumpy", "irregular"], p=[0.35, 0.40, 0.25]))
    comps, ext, fd = [], 1.5 * re, rng.uniform(0.5, 0.8) if sk == "clumpy" else 0.85
    if sk == "sersic":
        comps.append((sersic_sb(re, rng.uniform(0.5, 1.6), q, pa), _col(fr, gr0, ri0)))
        return comps, ext, m, fr, re, sk
    if sk == "clumpy":
        comps.append((sersic_sb(re, 1.0, q, pa), _col(fd * fr, gr0, ri0)))
    else:
        for fb in rng.dirichlet(np.ones(int(rng.integers(2, 4)))) * fd:
            ox, oy = rng.normal(0, 0.7 * re, 2)
            ext = max(ext, math.hypot(ox, oy) + 1.2 * re)
            comps.append((sersic_sb(re * rng.uniform(0.3, 0.7), rng.uniform(0.5, 1.2),
                                    rng.uniform(0.4, 1.0), rng.uniform(0, math.pi), ox, oy),
                          _col(fb * fr, gr0 + rng.normal(0, 0.15), ri0)))
    nk = int(rng.integers(2, 7)) if sk == "clumpy" else int(rng.integers(1, 4))
    for fk in rng.dirichlet(np.ones(nk)) * (1 - fd):
        rad, ang = re * rng.uniform(0, 1.3), _u2pi(rng)
        ox, oy = _rot(rad * math.cos(ang) * q**-0.5, rad * math.sin(ang) * q**0.5, -pa)
        ext = max(ext, rad + 0.2)
        comps.append((gauss_sb(rng.uniform(0.045, 0.1), ox, oy),
                      _col(fk * fr, gr0 - rng.uniform(0.1, 0.35), ri0 - 0.05)))
    return comps, ext, m, fr, re, sk


def _build_lens(rng, cv, info, cx, cy):
    e = draw_etg(rng)
    ftot = render_etg(cv, e, cx, cy)
    for _ in range(40):  # redraw the source redshift only; the deflector is untouched
        zs = float(np.clip(1.9 * math.exp(rng.normal(0, 0.35)), e["z"] + 0.3, 5.0))
        te = 4 * math.pi * (e["sig"] / C_KMS) ** 2 * _dang(e["z"], zs) / _dang(0, zs) * ARCSEC
        if 0.5 <= te <= 3.0:
            break
    te = float(np.clip(te, 0.5, 3.0))
    mk = str(rng.choice(["sie+shear", "epl+shear", "epl+shear+multipole", "sie+shear+subhalo"],
                        p=[0.40, 0.30, 0.18, 0.12]))
    gsh, phs = min(0.035 * math.exp(rng.normal(0, 0.6)), 0.2), rng.uniform(0, math.pi)
    slope = 2.0 if mk.startswith("sie") else float(np.clip(rng.normal(2.0, 0.1), 1.7, 2.3))
    lens = dict(te=te, q=float(np.clip(e["q"] + rng.normal(0, 0.1), 0.35, 1.0)), gamma=slope,
                pa=e["pa"] + math.radians(rng.normal(0, 10)), x0=cx + rng.normal(0, 0.02),
                y0=cy + rng.normal(0, 0.02), g1=gsh * math.cos(2 * phs), g2=gsh * math.sin(2 * phs))
    if "multipole" in mk:
        lens["multipoles"] = [(3, rng.normal(0, 0.008) * te, _u2pi(rng)),
                              (4, rng.normal(0, 0.012) * te, _u2pi(rng))]
    if "subhalo" in mk:
        rs, ph = te * rng.normal(1.0, 0.15), _u2pi(rng)
        lens["subhalos"] = [(rng.uniform(0.02, 0.1), lens["x0"] + rs * math.cos(ph),
                             lens["y0"] + rs * math.sin(ph))]
    comps, ext, m, fr, re, sk = _draw_source(rng, zs)
    rb, pb = 0.7 * te * math.sqrt(rng.random()), _u2pi(rng)
    bx, by = lens["x0"] + rb * math.cos(pb), lens["y0"] + rb * math.sin(pb)
    half, ss = min(HALF * 2, te + rb + 2.5 * ext + 0.6), 4
    (i0, i1), (j0, j1) = _prange(lens["y0"], half), _prange(lens["x0"], half)
    xx, yy = np.meshgrid(*_subgrid(i0, i1, j0, j1, ss))
    ax, ay = lens_deflection(xx, yy, lens)
    for func, fl in comps:  # surface brightness is conserved along each ray
        v = _bin(func(xx - ax - bx, yy - ay - by), i1 - i0, j1 - j0, ss)
        cv.arc[:, i0:i1, j0:j1] += fl[:, None, None] * v
    _etg_info(info, e, theta_e_arcsec=te, src_r_mag=m, z_src=zs, mass_kind=mk, shear=gsh,
              gamma_slope=slope, src_kind=sk, src_reff_arcsec=re, subkind=f"{e['structure']}/{sk}",
              magnification=float(cv.arc[1].sum() / fr))
    return ftot


def _build_elliptical(rng, cv, info, cx, cy):
    e = draw_etg(rng)
    _etg_info(info, e, subkind=e["structure"])
    return render_etg(cv, e, cx, cy)


def _build_spiral(rng, cv, info, cx, cy):
    sub = str(rng.choice(["grand-design", "multi-arm", "flocculent", "barred"],
                         p=[0.35, 0.25, 0.2, 0.2]))
    rt = float(np.clip(rng.normal(20.0, 1.2), 17.0, 22.5))
    ft = _mag2flux(rt)
    h = float(np.clip(10 ** (-0.15 * (rt - 20)) * math.exp(rng.normal(0, 0.25)), 0.35, 2.5))
    cosi, pa = rng.uniform(0.3, 1.0), rng.uniform(0, math.pi)
    q = math.sqrt(cosi**2 * (1 - 0.12**2) + 0.12**2)
    bt, fk = rng.uniform(0.05, 0.4), rng.uniform(0.05, 0.15)
    fa = 0.0 if sub == "flocculent" else rng.uniform(0.25, 0.5)
    fbar = 0.1 if sub == "barred" else 0.0
    m = int(rng.integers(3, 5)) if sub == "multi-arm" else 2
    pitch, phi0 = math.radians(rng.uniform(12, 30)), _u2pi(rng)
    parts = [
        (sersic_sb(h * rng.uniform(0.25, 0.6), rng.uniform(1.5, 4), rng.uniform(0.7, 1), pa),
         _col(bt * ft, rng.normal(1.3, 0.2), rng.normal(0.5, 0.1)), False),
        (sersic_sb(1.678 * h, 1.0, q, pa),
         _col((1 - bt - fa - fk - fbar) * ft, rng.normal(0.7, 0.15), rng.normal(0.35, 0.1)), False),
    ]
    if fa > 0:
        parts.append((arm_sb(h, q, pa, m, pitch, phi0, rng.uniform(1.5, 4.0)),
                      _col(fa * ft, rng.normal(0.35, 0.15), rng.normal(0.15, 0.1)), True))
    if fbar > 0:
        parts.append((sersic_sb(h * rng.uniform(0.8, 1.5), 0.5, rng.uniform(0.25, 0.4),
                                rng.uniform(0, math.pi)), _col(fbar * ft, 1.1, 0.45), False))
    for fkk in rng.dirichlet(np.ones(int(rng.integers(4, 15)))) * fk:  # HII regions
        r = h * rng.uniform(0.5, 2.5)
        th = (math.log(r / h) / math.tan(pitch) + (phi0 + TWO_PI * rng.integers(0, m)) / m
              if sub != "flocculent" else _u2pi(rng))
        ox, oy = _rot(r * math.cos(th), r * math.sin(th) * q, -pa)
        parts.append((gauss_sb(rng.uniform(0.05, 0.14), ox, oy),
                      _col(fkk * ft, rng.normal(0.1, 0.15), rng.normal(0.05, 0.1)), False))
    for func, fl, numeric in parts:
        cv.add(func, cx, cy, fl, min(6 * h + 1.0, 10.0), numeric=numeric)
    tot = sum(p[1] for p in parts)
    _flux_info(info, tot, 1.678 * h, 1.0, subkind=sub, q_light=q)
    return tot


def _build_ring(rng, cv, info, cx, cy):
    sub = str(rng.choice(["collisional", "polar", "resonance", "etg-blue-ring"],
                         p=[0.25, 0.20, 0.30, 0.25]))
    if sub == "collisional":  # compact, moderately red core
        re, n, pa_c, gr_c = rng.uniform(0.2, 0.6), rng.uniform(1.0, 3.0), 0.0, rng.normal(0.9, .2)
        fc = _col(_mag2flux(rng.uniform(19.0, 22.5)), gr_c, 0.4)
        cv.blob(cx, cy, fc, re, n, rng.uniform(0.6, 1.0), rng.uniform(0, math.pi))
    else:
        e = draw_etg(rng)
        e["structure"] = "disky" if sub == "resonance" else e["structure"]
        fc = render_etg(cv, e, cx, cy)
        re, n, pa_c, gr_c = e["re"], e["n"], e["pa"], e["gr"]
        info.update(z_lens=e["z"], sigma_v_kms=e["sig"])
    rad = max(rng.uniform(0.8, 4.0), 1.3 * re)
    w = rad * rng.uniform(0.06, 0.25)
    if sub == "polar":
        qr, par = rng.uniform(0.15, 0.45), pa_c + math.pi / 2 + rng.normal(0, 0.2)
    else:
        qr, par = rng.uniform(0.45, 1.0), rng.uniform(0, math.pi)
    off = rng.uniform(0.1, 0.35) * rad if sub == "collisional" else abs(rng.normal(0, 0.03))
    po, th0 = _u2pi(rng), _u2pi(rng)
    xc, yc = off * math.cos(po), off * math.sin(po)
    amp = rng.uniform(0.3, 0.9) if sub == "collisional" else rng.uniform(0.0, 0.3)
    window = rng.uniform(0.6, 1.5) if (sub == "resonance" and rng.random() < 0.4) else None
    gr_r = gr_c - rng.uniform(0.0, 0.5) if sub == "resonance" else rng.normal(0.35, 0.15)
    fring = _col(rng.uniform(0.1, 0.6) * fc[1], gr_r, rng.normal(0.2, 0.1))
    fknot = 0.3 if sub in ("collisional", "etg-blue-ring") else 0.0
    cv.add(ring_sb(rad, w, qr, par, xc, yc, amp, th0, window), cx, cy, (1 - fknot) * fring,
           rad + off + 5 * w + 0.3, core=0.0, numeric=True)
    for fk in rng.dirichlet(np.ones(int(rng.integers(3, 11)))) * fknot:  # star-forming knots
        th = _u2pi(rng)
        ox, oy = _rot(rad * math.cos(th), rad * math.sin(th) * qr, -par)
        cv.add(gauss_sb(rng.uniform(0.05, 0.12)), cx + xc + ox, cy + yc + oy,
               fk * fring * np.array([1.15, 1.0, 0.95]), 0.8)
    if sub == "collisional" and rng.random() < 0.6:  # the intruder
        d, a = rng.uniform(2.0, 5.0), _u2pi(rng)
        cv.blob(cx + d * math.cos(a), cy + d * math.sin(a),
                _col(fc[1] * 10 ** (-0.4 * rng.uniform(0.5, 2.5)), 0.5, 0.25),
                rng.uniform(0.15, 0.4), 1.0, rng.uniform(0.5, 1), 0.3)
    _flux_info(info, fc + fring, re, n, subkind=sub)
    return fc + fring


def _build_companion(rng, cv, info, cx, cy):
    sub = str(rng.choice(["blue-companion", "tidal-shell", "tidal-stream"], p=[0.5, 0.25, 0.25]))
    e = draw_etg(rng)
    fc = render_etg(cv, e, cx, cy)
    _etg_info(info, e, subkind=sub)
    if sub == "blue-companion":  # compact blue neighbours that mimic counter-images
        for _ in range(int(rng.integers(1, 4))):
            d, a = rng.uniform(0.8, 3.5), _u2pi(rng)
            fb = _col(_mag2flux(min(e["r"] + rng.uniform(1.0, 4.0), 25.5)),
                      rng.normal(0.3, 0.2), rng.normal(0.15, 0.12))
            cv.blob(cx + d * math.cos(a), cy + d * math.sin(a), fb, rng.uniform(0.08, 0.4),
                    rng.uniform(0.5, 1.5), rng.uniform(0.4, 1), rng.uniform(0, 3))
    elif sub == "tidal-shell":  # interleaved shells with the host's colour
        th0 = _u2pi(rng)
        for k in range(int(rng.integers(1, 4))):
            rad = min(e["re"] * rng.uniform(1.5, 5.0), 6.0)
            cv.add(ring_sb(rad, rad * rng.uniform(0.05, 0.15), th0=th0 + math.pi * k,
                           window=rng.uniform(0.5, 1.2)), cx, cy,
                   rng.uniform(0.02, 0.07) * fc, rad * 1.3 + 0.3, core=0.0, numeric=True)
    else:  # stream: arc of a circle not centred on the host, sometimes with its progenitor
        d, a, rs = rng.uniform(1.0, 3.0), _u2pi(rng), rng.uniform(2.0, 5.0)
        th0, win = a + math.pi + rng.normal(0, 0.5), rng.uniform(0.6, 1.5)
        fs = rng.uniform(0.03, 0.1) * _col(fc[1], e["gr"] - rng.uniform(0, 0.4), e["ri"])
        xs, ys = cx + d * math.cos(a), cy + d * math.sin(a)
        cv.add(ring_sb(rs, rng.uniform(0.15, 0.4), th0=th0, window=win), xs, ys, fs, rs + 1.5,
               core=0.0, numeric=True)
        if rng.random() < 0.5:
            cv.blob(xs + rs * math.cos(th0 + win), ys + rs * math.sin(th0 + win), 0.6 * fs, 0.2, 1)
    return fc


def _build_merger(rng, cv, info, cx, cy):
    sub = str(rng.choice(["major-wet", "major-dry", "minor"], p=[0.4, 0.3, 0.3]))
    ft, a = _mag2flux(rng.uniform(17.5, 22.0)), _u2pi(rng)
    ratio = rng.uniform(0.05, 0.25) if sub == "minor" else rng.uniform(0.4, 1.0)
    sep = rng.uniform(1.0, 3.5) if sub == "minor" else rng.uniform(0.4, 2.5)
    f1, f2 = ft / (1 + ratio), ft * ratio / (1 + ratio)
    u = rng.uniform
    gals = {"major-dry": [(f1, u(3, 5), u(0.4, 1.5), rng.normal(1.6, 0.1), 0.6),
                          (f2, u(3, 5), u(0.4, 1.5), rng.normal(1.6, 0.1), 0.6)],
            "major-wet": [(f1, u(0.8, 2), u(0.3, 1.2), rng.normal(0.7, 0.2), 0.35),
                          (f2, u(0.8, 2), u(0.3, 1.2), rng.normal(0.5, 0.2), 0.3)],
            "minor": [(f1, u(1, 4), u(0.5, 1.5), rng.normal(1.2, 0.3), 0.5),
                      (f2, 1.0, u(0.15, 0.4), rng.normal(0.4, 0.2), 0.2)]}[sub]
    s1, s2 = sep * ratio / (1 + ratio), sep / (1 + ratio)
    pos = [(cx - s1 * math.cos(a), cy - s1 * math.sin(a)), (cx + s2 * math.cos(a),
                                                            cy + s2 * math.sin(a))]
    tot = np.zeros(3)
    for (fl, n, re, gr, ri), (x, y) in zip(gals, pos, strict=True):
        tot += _col(fl, gr, ri)
        cv.blob(x, y, _col(fl, gr, ri), re, n, u(0.5, 1), u(0, math.pi))
    ntail = {"major-wet": 2, "major-dry": int(rng.integers(1, 3)), "minor": 1}[sub]
    for k in range(ntail):
        x, y = pos[1] if sub == "minor" else pos[1 - k % 2]
        f, (mx, my), half = tail_sb(u(2.0, 6.0), _u2pi(rng), rng.choice([-1, 1]) * u(0.5, 1.5),
                                    (2.5 if sub == "major-dry" else 1.0) * u(0.12, 0.3))
        gr = gals[0][3] if sub == "major-dry" else rng.normal(0.45, 0.2)
        c3 = _col(u(0.03, 0.1 if sub == "major-dry" else 0.2) * ft, gr, 0.3)
        cv.add(f, x + mx, y + my, c3, half, core=0.0, numeric=True)
        tot += c3
    _flux_info(info, tot, gals[0][2], gals[0][1], subkind=sub)
    return tot


def _build_edgeon(rng, cv, info, cx, cy):
    sub = str(rng.choice(["dusty", "clean"], p=[0.6, 0.4]))
    rt = float(np.clip(rng.normal(20.0, 1.2), 17.0, 22.5))
    red = float(np.clip(1.2 * 10 ** (-0.15 * (rt - 20)) * math.exp(rng.normal(0, 0.25)), 0.8, 3.5))
    qd, pa, fb = rng.uniform(0.08, 0.22), rng.uniform(0, math.pi), rng.uniform(0.05, 0.3)
    disk = sersic_sb(red, 1.0, qd, pa)
    bulge = sersic_sb(red * rng.uniform(0.15, 0.35), rng.uniform(1.5, 3.5), rng.uniform(0.6, 0.9),
                      pa)
    cd = _col(1 - fb, rng.normal(0.8, 0.2), rng.normal(0.35, 0.1))
    cb = _col(fb, rng.normal(1.3, 0.2), rng.normal(0.5, 0.1))
    tau = rng.uniform(0.5, 2.0) * np.array([1.35, 1.0, 0.78]) * (sub == "dusty")
    lw = rng.uniform(0.3, 0.6) * red * math.sqrt(qd)  # dust-lane width and offset
    lo = rng.normal(0, 0.3) * lw
    outs = []
    for b in range(3):
        def f(dx, dy, b=b):
            att = np.exp(-tau[b] * np.exp(-0.5 * ((_rot(dx, dy, pa)[1] - lo) / lw) ** 2))
            return (cd[b] * disk(dx, dy) + cb[b] * bulge(dx, dy)) * att
        outs.append(cv.render(f, cx, cy, min(4 * red + 1, 10), core=0.8))
    sums = np.array([o[1].sum() for o in outs])
    scale = _mag2flux(rt) / sums[1]  # r_mag is the observed (attenuated) magnitude
    for b in range(3):
        cv.put(outs[b], np.full(3, scale), band=b)
    _flux_info(info, sums * scale, red, 1.0, subkind=sub, q_light=qd)
    return sums * scale


def _star_colour(rng):
    gr = rng.uniform(0.25, 1.5)
    return gr, (0.38 * gr - 0.05 if gr < 1.2 else 0.41 + 2.0 * (gr - 1.2)) + rng.normal(0, 0.03)


def _build_star(rng, cv, info, cx, cy):
    sub = str(rng.choice(["single", "binary", "star+galaxy"], p=[0.65, 0.2, 0.15]))
    r, (gr, ri) = rng.uniform(16.0, 23.5), _star_colour(rng)
    f = _col(_mag2flux(r), gr, ri)
    cv.points.append((cx, cy, f))
    d, a = rng.uniform(0.5, 2.5), _u2pi(rng)
    if sub == "binary":
        cv.points.append((cx + d * math.cos(a), cy + d * math.sin(a),
                          _col(_mag2flux(r + rng.uniform(0, 2.5)), *_star_colour(rng))))
    elif sub == "star+galaxy":
        cv.blob(cx + d * math.cos(a), cy + d * math.sin(a),
                _col(_mag2flux(r + rng.uniform(0.5, 3)), rng.normal(0.8, 0.4), 0.35),
                rng.uniform(0.15, 0.6), rng.uniform(0.7, 3), rng.uniform(0.4, 1), 1.0)
    info.update(r_mag=r, g_r=gr, reff_arcsec=0.0, subkind=sub)
    return f


def _build_sky(rng, cv, info, cx, cy):
    if rng.random() < 0.5:
        info.update(subkind="empty")
        return None
    r, re, n = rng.uniform(23.0, 25.5), rng.uniform(0.1, 0.5), rng.uniform(0.7, 2.5)
    gr = rng.normal(0.7, 0.4)
    f = _col(_mag2flux(r), gr, 0.3)
    cv.blob(cx, cy, f, re, n, rng.uniform(0.4, 1), rng.uniform(0, 3))
    info.update(subkind="faint-galaxy", r_mag=r, reff_arcsec=re, sersic_n=n, g_r=gr)
    return f


_BUILDERS = {"lens": _build_lens, "elliptical": _build_elliptical, "spiral": _build_spiral,
             "ring": _build_ring, "companion": _build_companion, "merger": _build_merger,
             "edgeon": _build_edgeon, "star": _build_star, "sky": _build_sky}


def _add_field(rng, cv):
    """Field galaxies from number counts, faint stars and an occasional bright star."""
    hw, n_in = HALF + 1.5, 0
    for _ in range(rng.poisson(6.0)):
        x, y = rng.uniform(-hw, hw, 2)
        rr = max(math.hypot(x, y), 1e-3)
        if rr < 1.5:  # keep chance projections off the central object's core
            x, y = x * (1.5 + rr) / rr, y * (1.5 + rr) / rr
        m, red = _counts_mag(rng, 19.5, 26.5, 0.3), rng.random() < 0.3
        re = float(np.clip(0.35 * 10 ** (-0.12 * (m - 23) + rng.normal(0, 0.15)), 0.08, 2.5))
        n = rng.uniform(2.5, 4.5) if red else rng.uniform(0.6, 1.5)
        c3 = (_col(_mag2flux(m), rng.normal(1.4, 0.3), rng.normal(0.6, 0.2)) if red else
              _col(_mag2flux(m), rng.normal(0.45, 0.2), rng.normal(0.25, 0.15)))
        cv.blob(x, y, c3, re, n, rng.uniform(0.3, 1), rng.uniform(0, math.pi), core=0.4)
        n_in += max(abs(x), abs(y)) < HALF
    for _ in range(rng.poisson(0.15)):
        x, y = rng.uniform(-hw, hw, 2)
        cv.points.append((x, y, _col(_mag2flux(rng.uniform(17, 25)), *_star_colour(rng))))
        n_in += max(abs(x), abs(y)) < HALF
    bright = rng.random() < 0.03
    if bright:
        d, a = rng.uniform(5.5, 9.5), _u2pi(rng)
        cv.points.append((d * math.cos(a), d * math.sin(a),
                          _col(_mag2flux(rng.uniform(13.5, 17)), *_star_colour(rng))))
    return int(n_in), int(bright)


# ---------------------------------------------------------------- observation
_SEE_MED = np.array([0.77, 0.70, 0.59])
_DEPTH = np.array([26.5, 26.1, 25.9])
_SKY_MU = np.array([22.0, 21.0, 20.2])


def _dg_unit_fwhm(fw, k):
    def p(r):
        return (1 - fw) * math.exp(-0.5 * r * r) + fw / k**2 * math.exp(-0.5 * r * r / k**2)
    return 2.0 * optimize.brentq(lambda r: p(r) - 0.5 * p(0.0), 0.1, 20.0)


def _psf_otf(kind, fwhm, e1, e2, par):
    """OTF of the pixel-integrated PSF on the padded grid (PSF centred on pixel (0, 0))."""
    det = math.sqrt(1 - e1 * e1 - e2 * e2)
    s = np.array([[1 + e1, e2], [e2, 1 - e1]]) / det
    si = np.array([[1 - e1, -e2], [-e2, 1 + e1]]) / det
    if kind == "kolmogorov":
        u = np.fft.fftfreq(NP, d=PIX)
        ux, uy = u[None, :], u[:, None]
        rho = np.hypot(s[0, 0] * ux + s[0, 1] * uy, s[1, 0] * ux + s[1, 1] * uy)
        sj, fa = par["jit"] * fwhm / 2.3548, fwhm * math.sqrt(1 - par["jit"] ** 2) / 0.976
        otf = np.exp(-3.44 * (rho * fa) ** (5 / 3) - 2 * math.pi**2 * sj**2 * rho**2)
        return (otf * np.sinc(ux * PIX) * np.sinc(uy * PIX)).astype(complex)
    if kind == "moffat":
        beta = par["beta"]
        alpha2 = (fwhm / (2 * math.sqrt(2 ** (1 / beta) - 1))) ** 2

        def prof(r2):
            return (1 + r2 / alpha2) ** -beta
    else:
        sc = fwhm / _dg_unit_fwhm(par["fw"], par["k"])
        sw, fw = par["k"] * sc, par["fw"]

        def prof(r2):
            return (1 - fw) / sc**2 * np.exp(-0.5 * r2 / sc**2) + fw / sw**2 * np.exp(
                -0.5 * r2 / sw**2)

    def func(dx, dy):
        return prof((si[0, 0] * dx + si[0, 1] * dy) ** 2 + (si[1, 0] * dx + si[1, 1] * dy) ** 2)
    x0, c = (NP / 2 - CEN) * PIX, NP // 2
    img = _sample(func, x0, x0, 0, NP, 0, NP, 1)
    img[c - 6:c + 7, c - 6:c + 7] = _sample(func, x0, x0, c - 6, c + 7, c - 6, c + 7, 5)
    return np.fft.fft2(np.fft.ifftshift(img / img.sum()))


def _draw_obs(rng):
    s_i = float(np.clip(0.59 * math.exp(rng.normal(0, 0.14)), 0.40, 1.0))
    see = np.clip(s_i * np.array([1.3, 1.19, 1.0]) * np.exp(rng.normal(0, 0.08, 3) * [1, 1, 0]),
                  0.4, 1.4)
    kind = str(rng.choice(["moffat", "double-gauss", "kolmogorov"], p=[0.4, 0.25, 0.35]))
    par = dict(beta=rng.uniform(2.5, 4.5), fw=rng.uniform(0.05, 0.2), k=rng.uniform(1.8, 3.0),
               jit=rng.uniform(0.2, 0.5))
    em, ea = rng.uniform(0, 0.06), rng.uniform(0, math.pi)
    ell = [(em * math.cos(2 * ea) + rng.normal(0, 0.01), em * math.sin(2 * ea)
            + rng.normal(0, 0.01)) for _ in range(3)]
    depth = _DEPTH + rng.normal(0, 0.2) + rng.normal(0, 0.08, 3)
    neff_ref = 4 * math.pi * (_SEE_MED / 2.3548 / PIX) ** 2 + 1.0  # at median seeing
    sigma = _mag2flux(depth) / (5.0 * np.sqrt(neff_ref))
    gain = _mag2flux(_SKY_MU + rng.normal(0, 0.25)) * PIX * PIX / sigma**2
    return dict(see=see, kind=kind, par=par, ell=ell, depth=depth, sigma=sigma, gain=gain,
                noise=str(rng.choice(["white", "corr-lanczos", "corr-gauss"], p=[.55, .25, .2])),
                bkg=str(rng.choice(["flat", "plane", "oversub", "wave"], p=[.5, .25, .15, .1])),
                art=str(rng.choice(["none", "cosmic", "badpix"], p=[0.96, 0.025, 0.015])))


def _noise_kernel(rng, kind):
    if kind == "corr-gauss":
        g = np.exp(-0.5 * (np.arange(-3, 4) / rng.uniform(0.4, 0.8)) ** 2)
        k = np.outer(g, g)
    else:  # coadd of 2-4 Lanczos-3 resampled exposures with random sub-pixel shifts
        k, t = np.zeros((6, 6)), np.arange(-2, 4)
        for _ in range(int(rng.integers(2, 5))):
            dx, dy = rng.random(2)
            k += np.outer(np.sinc(t - dy) * np.sinc((t - dy) / 3),
                          np.sinc(t - dx) * np.sinc((t - dx) / 3))
    return k / math.sqrt((k**2).sum())


def _observe(rng, cv, obs, central, info):
    u, sl = np.fft.fftfreq(NP), slice(PAD, PAD + NPIX)
    yy, xx = (np.mgrid[0:NPIX, 0:NPIX] - (NPIX - 1) / 2.0) * PIX
    bdir, bamp, b0 = _u2pi(rng), rng.uniform(0.2, 1.0), rng.normal(0, 0.3)
    wper, wph, wamp = rng.uniform(4, 15), _u2pi(rng), rng.uniform(0.2, 0.5)
    osf, oss = rng.uniform(0.02, 0.08), rng.uniform(2.5, 5.0)
    proj = xx * math.cos(bdir) + yy * math.sin(bdir)
    out = np.empty((3, NPIX, NPIX))
    for b in range(3):
        otf = _psf_otf(obs["kind"], obs["see"][b], *obs["ell"][b], obs["par"])
        ft = np.fft.fft2(cv.ext[b])
        for x, y, fl in cv.points:  # exact sub-pixel placement by Fourier phase shift
            ft += fl[b] * np.outer(np.exp(-2j * math.pi * u * (y / PIX + CEN)),
                                   np.exp(-2j * math.pi * u * (x / PIX + CEN)))
        model = np.fft.ifft2(ft * otf).real[sl, sl]
        sig, gain = obs["sigma"][b], obs["gain"][b]
        if cv.arc[b].any():
            arc = np.fft.ifft2(np.fft.fft2(cv.arc[b]) * otf).real[sl, sl]
            model = model + arc
            if b == 1:
                var = sig**2 + np.maximum(model, 0.0) / gain
                info["arc_snr"] = float(math.sqrt((arc**2 / var).sum()))
        if obs["bkg"] == "plane" or (obs["bkg"] == "oversub" and central is None):
            model = model + sig * (b0 + bamp * proj / HALF)
        elif obs["bkg"] == "oversub":  # over-subtracted sky around the central galaxy
            model = model - osf * central[b] * PIX**2 / (TWO_PI * oss**2) * np.exp(
                -0.5 * (xx**2 + yy**2) / oss**2)
        elif obs["bkg"] == "wave":
            model = model + wamp * sig * np.sin(TWO_PI * proj / wper + wph)
        sky = rng.standard_normal((NPIX, NPIX))
        if obs["noise"] != "white":
            sky = ndimage.convolve(sky, _noise_kernel(rng, obs["noise"]), mode="wrap")
        poisson = np.sqrt(np.maximum(model, 0.0) / gain) * rng.standard_normal((NPIX, NPIX))
        out[b] = model + sig * sky + poisson
    if obs["art"] != "none":
        b, i, j = int(rng.integers(0, 3)), int(rng.integers(2, 56)), int(rng.integers(2, 56))
        if obs["art"] == "cosmic":  # short residual track in one band
            dj = int(rng.choice([-1, 0, 1]))
            for k in range(int(rng.integers(2, 7))):
                out[b, i + k, j + k * dj] += rng.uniform(5, 30) * obs["sigma"][b]
        else:  # low bad-column segment
            out[b, i:i + int(rng.integers(3, 8)), j] -= 3.0 * obs["sigma"][b]
    if not np.isfinite(out).all():
        raise RuntimeError("non-finite pixels")
    return out.astype(np.float32)


# ---------------------------------------------------------------- public API
def nonlens_kind(seed: int, index: int) -> str:
    """Deterministic non-lens kind of object `index`, a function of (seed, index) only."""
    u = np.random.default_rng([int(seed), 7919, int(index)]).random()
    acc = 0.0
    for k, p in NONLENS_SHARES.items():
        acc += p
        if u < acc:
            return k
    return "elliptical"


def make_object(seed: int, label: int, index: int, kind: str | None = None):
    """Render one object -> (float32 image (3, 64, 64), info dict keyed by COLUMNS).

    label 1 (or kind "lens") renders a lens; for label 0 `kind` defaults to
    nonlens_kind(seed, index). The Generator is seeded from (seed, label, index).
    """
    label = 1 if (int(label) == 1 or kind == "lens") else 0
    kind = "lens" if label else (kind or nonlens_kind(seed, index))
    rng = np.random.default_rng([int(seed), label, int(index)])
    obs, cv, info = _draw_obs(rng), Canvas(), dict.fromkeys(COLUMNS)
    folder = "test_lenses/L" if label else "test_nonlenses/N"
    info.update(object_id=f"{folder}{int(index):06d}", label=label, kind=kind)
    cx, cy = rng.uniform(-0.5, 0.5, 2) * PIX
    central = _BUILDERS[kind](rng, cv, info, cx, cy)
    info["n_neighbours"], info["bright_star"] = _add_field(rng, cv)
    image = _observe(rng, cv, obs, central, info)
    info.update(seeing_g_arcsec=obs["see"][0], seeing_r_arcsec=obs["see"][1],
                seeing_i_arcsec=obs["see"][2], psf_kind=obs["kind"], noise_kind=obs["noise"],
                bkg_kind=obs["bkg"], artifact=obs["art"], depth_r=obs["depth"][1],
                sky_sigma_r=obs["sigma"][1])
    return image, info


def _fmt(v):
    if v is None:
        return ""
    if isinstance(v, (bool, int, np.bool_, np.integer)):
        return str(int(v))
    return f"{float(v):.6g}" if isinstance(v, (float, np.floating)) else str(v)


def write_layout(out, lenses: int, nonlenses: int, seed: int, progress: bool = False,
                 mapper=map) -> Path:
    """Write OUT/test_lenses/L*.npy, OUT/test_nonlenses/N*.npy and OUT/truth.csv (returned).
    ``mapper``: ``map`` or a process pool's, which renders the same bytes (one seed per object)."""
    out, rows, t0 = Path(out), [], time.time()
    jobs = [(1, i) for i in range(lenses)] + [(0, i) for i in range(nonlenses)]
    for d in ("test_lenses", "test_nonlenses"):
        (out / d).mkdir(parents=True, exist_ok=True)
    made = mapper(make_object, [seed] * len(jobs), *zip(*jobs, strict=True))
    for k, (img, info) in enumerate(made):
        np.save(out / (info["object_id"] + ".npy"), img)
        rows.append(info)
        if progress and (k + 1) % 100 == 0:
            print(f"{k + 1}/{len(jobs)} objects, {time.time() - t0:.0f}s", file=sys.stderr)
    truth = out / "truth.csv"
    with open(truth, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(COLUMNS)
        w.writerows([_fmt(r[c]) for c in COLUMNS] for r in rows)
    return truth


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--lenses", type=int, default=300)
    ap.add_argument("--nonlenses", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    print(write_layout(a.out, a.lenses, a.nonlenses, a.seed, progress=not a.quiet))
    return 0


if __name__ == "__main__":
    sys.exit(main())
