"""thirdrender: an independent HSC-like strong-lens / non-lens test-set renderer.

A second stand-in for issue 12's independent test sets, besides ``otherrender``. It was written
by a separate author who was given only the output format (HSC-like g, r, i, the DeepLense
layout) and a list of things to vary, and was not shown lensscan's code, README, simulator or
``otherrender``; it uses no lensing package. Like ``otherrender`` it trains nothing: it judges.

Usage: python thirdrender.py OUT --lenses 300 --nonlenses 3000 --seed 1 (numpy + scipy only).
Writes OUT/test_lenses/L000000.npy..., OUT/test_nonlenses/N000000.npy... (float32 (3, 64, 64),
bands g, r, i, 0.168"/px, linear sky-subtracted flux at AB zero point 27: flux = 10**(-0.4 (m -
27)), noise included) and OUT/truth.csv. Each object has its own generator seeded by (seed,
label, index).

Modelling choices. Rendering: profiles sampled at 4x (0.042") and summed into pixels; 5x5 pixels at
each galaxy centre re-integrated at 20x; Sersic laws normalised analytically (light off the stamp
is lost); R_eff = MAJOR-axis half-light radius of a generalised ellipse (|x|^c + |y/q|^c)^(1/c).
Deflector == "elliptical" non-lens (one function): r ~ U(17.5, 23); log10 R_eff = log10(0.9) -
0.18 (r - 20) + N(0, 0.18) in 0.3"-3"; n = 4 (40%) else U(2, 6); q ~ Beta(6, 2.2) in [0.4, 0.98];
c = 2 (60%), boxy U(2.1, 2.6) or disky U(1.6, 1.9); area-preserving isophote twist <= 25 deg
(30%); faint bluer exponential disk (25%, 5-25% of light); g-r ~ U(1.2, 1.8), r-i ~ U(0.4, 0.7);
colour gradient (R_eff x U(1, 1.15) in g, x U(0.92, 1) in i); centre offset <= half a pixel.
Mass: elliptical power-law convergence (3-s)/2 (theta_E/r_ell)^(s-1), r_ell^2 = q x^2 + y^2/q,
s ~ N(2, 0.1) in [1.7, 2.3]; theta_E log-normal about 1.3" (-0.08 dex per deflector r mag, 0.2 dex
scatter) in 0.5"-2.5"; mass q = light q + N(0, 0.1), PA + N(0, 9 deg); m=4 convergence multipole
(35%, a4 ~ N(0, 0.02)); truncated-SIS subhalo (0.02"-0.08") near theta_E (20%); external shear
components ~ N(0, 0.035). Deflections: zero-padded FFT convolution of the convergence map (0.042"
pixels, 21.5" box, central pixels sub-sampled 12x, truncated on an ellipse) with x/(pi |x|^2).
Source, ray-traced through every sub-pixel (surface brightness conserved): random-walk knots (6-30
Gaussians) + optional redder envelope, Sersic (n 0.5-1.5) + 2-8 clumps, or positive-clipped random
shapelets (Gauss-Hermite, order <= 5) + 0-4 knots; size 0.1"-0.6" log-uniform; knots g-r ~
U(-0.1, 0.35), diffuse g-r ~ U(0.1, 0.6); centre uniform in area within 0.55 theta_E. Flux set so
the r matched-filter S/N of the lensed light, sqrt(sum((arc_r_psf/sigma_r)^2)), is log-uniform in
[10, 200], but the unlensed source is never brighter than r = 20.5 (arc_snr then lower).
PSF (one family per image, per-band parameters): Moffat (beta 2-5); von Karman long-exposure
atmosphere (Hankel transform of exp(-D/2), L0/r0 in {30, 100, 300}); Kolmogorov; Gaussian core +
Moffat halo (5-25%). i FWHM log-normal about 0.68" in [0.5", 1.1"], r = i x U(1, 1.12), g = i x
U(1.05, 1.3); 40% with ellipticity < 0.08; 65x65-pixel kernels, tapered beyond 4", unit sum.
Noise: Gaussian sky from HSC-Wide 5-sigma depths 26.5/26.1/25.9 (g/r/i, 2" aperture; 0.15 mag
common + 0.1 mag per-band scatter) + Poisson on object flux (gain from sky 22.0/21.1/20.3
mag/arcsec^2). 50% white, 25% correlated by a Lanczos-3, 25% by a bilinear resampling kernel at a
random sub-pixel shift (per-pixel rms kept); 25% faint sky gradient (0.1-0.5 sigma at the edge);
20% sky over-subtraction halo around the centre (sigma 1.5"-4", 1-4% of its flux, <= 2 sigma deep).
Environment: Poisson(1.2) field galaxies (counts ~ 10^(0.35 m), r 19.5-25.5) >= 2.2" from the
centre; a field star with probability 0.15.
Non-lenses (no lensed light): elliptical 40%; red galaxy + blue companion(s) or arc-like tidal
stream 12%; spiral (log-spiral arms, blue knots, red bulge) 12%; collisional/polar ring (blue clumpy
ring 0.5"-2.5" around a deflector-like core) 8%; merger with tidal tails 10%; edge-on disk (dust
lane 50%) 8%; star 5%; blank sky with faint objects 5%; kind from a golden-ratio sequence.
"""

from __future__ import annotations

import argparse
import csv
import math
import time
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import fft as sfft
from scipy import special as sp
from scipy.signal import fftconvolve

Arr = np.ndarray
Fn = Callable[[Arr, Arr], Arr]
Rng = np.random.Generator
PIX, NPIX, OS = 0.168, 64, 4
SUB, NOS, HALF = PIX / OS, NPIX * OS, NPIX * PIX / 2
KN = 2 * NOS  # convergence grid size (pixels of SUB): twice the stamp
DEPTH, SKY_MU = np.array([26.5, 26.1, 25.9]), np.array([22.0, 21.1, 20.3])
NAP = math.pi / PIX**2  # pixels in a 2" diameter aperture
_c = (np.arange(NOS) + 0.5) * SUB - HALF
YO, XO = np.meshgrid(_c, _c, indexing="ij")
_n = (np.arange(NPIX) + 0.5) * PIX - HALF
YN, XN = np.meshgrid(_n, _n, indexing="ij")
NONLENS = [("elliptical", 0.40), ("red_companion", 0.12), ("spiral", 0.12), ("ring", 0.08),
           ("merger", 0.10), ("edge_on", 0.08), ("star", 0.05), ("blank", 0.05)]
COLS = ["object_id", "label", "kind", "subkind", "theta_e_arcsec", "r_mag", "reff_arcsec",
        "sersic_n", "q_light", "g_r", "r_i", "mass_slope", "q_mass", "shear", "multipole_a4",
        "subhalo", "src_kind", "src_r_mag", "src_size_arcsec", "src_offset_arcsec",
        "magnification", "arc_snr", "seeing_fwhm_g_arcsec", "seeing_fwhm_r_arcsec",
        "seeing_fwhm_i_arcsec", "psf_kind", "noise_kind", "sigma_g", "sigma_r", "sigma_i",
        "n_neighbours", "star_neighbour"]


def flux(m: float | Arr) -> Arr:
    return 10.0 ** (-0.4 * (np.asarray(m, dtype=float) - 27.0))


def col(gr: float, ri: float, m: float = 27.0) -> Arr:
    """(g, r, i) fluxes of an object with r magnitude m and the given colours."""
    return flux(m) * np.array([10 ** (-0.4 * gr), 1.0, 10 ** (0.4 * ri)])


def rot(x: Arr, y: Arr, pa: float) -> tuple[Arr, Arr]:
    c, s = math.cos(pa), math.sin(pa)
    return x * c + y * s, -x * s + y * c


def add(sc: Arr, fl: Arr, img: Arr) -> None:
    sc += np.asarray(fl)[:, None, None] * img


def sersic_sb(x: Arr, y: Arr, re: float, n: float, q: float, pa: float, c: float = 2.0,
              tw: float = 0.0) -> Arr:
    """Unit-total-flux Sersic surface brightness (per arcsec^2), generalised ellipse + twist."""
    if tw:
        rho = np.hypot(x, y)
        ang = pa + tw * rho / (rho + re)
        xr, yr = x * np.cos(ang) + y * np.sin(ang), (-x * np.sin(ang) + y * np.cos(ang)) / q
    else:
        xr, yr = rot(x, y, pa)
        yr = yr / q
    r = np.hypot(xr, yr) if c == 2.0 else (np.abs(xr) ** c + np.abs(yr) ** c) ** (1 / c)
    b, area = sp.gammaincinv(2 * n, 0.5), 4 * sp.gamma(1 + 1 / c) ** 2 / sp.gamma(1 + 2 / c)
    norm = 2 * area * q * re**2 * n * math.exp(b) * sp.gamma(2 * n) / b ** (2 * n)
    return np.exp(-b * ((r / re) ** (1 / n) - 1)) / norm


def blobs(xs: Arr, ys: Arr, sig: Arr, w: Arr) -> Fn:
    """Sum of circular Gaussians (total flux sum(w))."""
    def fn(x: Arr, y: Arr) -> Arr:
        out = np.zeros_like(x)
        for xk, yk, sk, wk in zip(xs, ys, np.broadcast_to(sig, len(xs)), w, strict=True):
            r2 = (x - xk) ** 2 + (y - yk) ** 2
            out += wk / (2 * math.pi * sk**2) * np.exp(-r2 / (2 * sk**2))
        return out
    return fn


def render(fn: Fn, x0: float = 0.0, y0: float = 0.0, refine: bool = True) -> Arr:
    """Flux per native pixel of fn centred at (x0, y0); central 5x5 pixels integrated at 20x."""
    img = (fn(XO - x0, YO - y0) * SUB**2).reshape(NPIX, OS, NPIX, OS).sum((1, 3))
    i0, j0 = math.floor((y0 + HALF) / PIX) - 2, math.floor((x0 + HALF) / PIX) - 2
    if refine and 0 <= i0 <= NPIX - 5 and 0 <= j0 <= NPIX - 5:
        s = PIX / 20
        y, x = np.meshgrid(i0 * PIX - HALF + (np.arange(100) + 0.5) * s,
                           j0 * PIX - HALF + (np.arange(100) + 0.5) * s, indexing="ij")
        img[i0:i0 + 5, j0:j0 + 5] = fn(x - x0, y - y0).reshape(5, 20, 5, 20).sum((1, 3)) * s * s
    return img


def chain(xs: Arr, ys: Arr, sig: float | Arr, w: Arr) -> Arr:
    """Unit-flux image of a chain of Gaussian blobs (streams, knots, tails)."""
    return render(blobs(xs, ys, sig, np.asarray(w) / np.sum(w)), refine=False)


def star(rng: Rng, sc: Arr, x0: float, y0: float, m: float) -> None:
    gr = rng.uniform(0.25, 1.5)
    ri = rng.uniform(0.6, 1.6) if gr > 1.35 else 0.4 * gr - 0.05 + rng.normal(0, 0.05)
    add(sc, col(gr, ri, m), render(blobs(np.zeros(1), np.zeros(1), 0.02, np.ones(1)), x0, y0))


def add_sersic(rng: Rng, sc: Arr, x: float, y: float, fl: Arr, re: float, n: float,
               q: float | None = None, pa: float | None = None) -> None:
    q = rng.uniform(0.3, 1.0) if q is None else q
    pa = rng.uniform(0, np.pi) if pa is None else pa
    add(sc, fl, render(lambda u, v: sersic_sb(u, v, re, n, q, pa), x, y))


# ----------------------------------------------------------------------------- galaxies
def draw_deflector(rng: Rng) -> dict:
    r = rng.uniform(17.5, 23.0)
    while True:
        reff = 10 ** (math.log10(0.9) - 0.18 * (r - 20) + rng.normal(0, 0.18))
        if 0.3 <= reff <= 3.0:
            break
    u = rng.random()
    c = 2.0 if u < 0.6 else (rng.uniform(2.1, 2.6) if u < 0.8 else rng.uniform(1.6, 1.9))
    return {"r": r, "reff": reff, "n": 4.0 if rng.random() < 0.4 else rng.uniform(2, 6),
            "q": float(np.clip(rng.beta(6, 2.2), 0.4, 0.98)), "pa": rng.uniform(0, np.pi), "c": c,
            "tw": rng.uniform(-0.44, 0.44) if rng.random() < 0.3 else 0.0,
            "gr": rng.uniform(1.2, 1.8), "ri": rng.uniform(0.4, 0.7),
            "grad": (rng.uniform(1.0, 1.15), 1.0, rng.uniform(0.92, 1.0)),
            "fd": rng.uniform(0.05, 0.25) if rng.random() < 0.25 else 0.0,
            "rd": rng.uniform(1.5, 3.0), "qd": rng.uniform(0.25, 0.7), "dgr": rng.uniform(0.2, 0.5),
            "x0": rng.uniform(-0.5, 0.5) * PIX, "y0": rng.uniform(-0.5, 0.5) * PIX}


def render_deflector(d: dict) -> Arr:
    fb, out = col(d["gr"], d["ri"], d["r"]) * (1 - d["fd"]), np.zeros((3, NPIX, NPIX))
    for b in range(3):
        re = d["reff"] * d["grad"][b]
        out[b] = fb[b] * render(lambda x, y, re=re: sersic_sb(
            x, y, re, d["n"], d["q"], d["pa"], d["c"], d["tw"]), d["x0"], d["y0"])
    if d["fd"] > 0:
        disk = render(lambda x, y: sersic_sb(x, y, d["reff"] * d["rd"], 1.0, d["qd"], d["pa"]),
                      d["x0"], d["y0"])
        add(out, col(d["gr"] - d["dgr"], d["ri"] - 0.1, d["r"]) * d["fd"], disk)
    return out


def dinfo(d: dict) -> dict:
    return {"r_mag": d["r"], "reff_arcsec": d["reff"], "sersic_n": d["n"], "q_light": d["q"],
            "g_r": d["gr"], "r_i": d["ri"]}


def neighbours(rng: Rng, sc: Arr, rmin: float = 2.2, nmean: float = 1.2,
               mr: tuple[float, float] = (19.5, 25.5)) -> tuple[int, int]:
    def place(rm: float) -> tuple[float, float]:
        while True:
            x, y = rng.uniform(-HALF, HALF, 2)
            if math.hypot(x, y) >= rm:
                return x, y
    n, a, b = int(rng.poisson(nmean)), 10 ** (0.35 * mr[0]), 10 ** (0.35 * mr[1])
    for _ in range(n):
        m = math.log10(a + rng.random() * (b - a)) / 0.35
        x, y = place(rmin)
        re = max(0.08, 10 ** (rng.uniform(-0.92, -0.3) - 0.08 * (m - 22)))
        add_sersic(rng, sc, x, y, col(rng.uniform(0.2, 1.6), rng.uniform(0.1, 0.6), m), re,
                   rng.uniform(0.8, 4.0))
    has_star = bool(rng.random() < 0.15)
    if has_star:
        star(rng, sc, *place(max(rmin, 2.5)), rng.uniform(18, 24))
    return n, int(has_star)


# ----------------------------------------------------------------------------- lensing
def draw_lens(rng: Rng, d: dict) -> dict:
    while True:
        te = 10 ** (math.log10(1.3) - 0.08 * (d["r"] - 20) + rng.normal(0, 0.2))
        if 0.5 <= te <= 2.5:
            break
    return {"te": te, "s": float(np.clip(rng.normal(2.0, 0.1), 1.7, 2.3)),
            "q": float(np.clip(d["q"] + rng.normal(0, 0.1), 0.45, 0.99)),
            "pa": d["pa"] + rng.normal(0, 0.15), "g1": rng.normal(0, 0.035),
            "g2": rng.normal(0, 0.035), "p4": rng.uniform(0, np.pi / 2),
            "a4": float(np.clip(rng.normal(0, 0.02), -0.05, 0.05)) if rng.random() < 0.35 else 0.0,
            "sub": bool(rng.random() < 0.2), "tsub": rng.uniform(0.02, 0.08),
            "rsub": te * rng.uniform(0.8, 1.25), "psub": rng.uniform(0, 2 * np.pi),
            "rt": rng.uniform(0.3, 0.8)}


def epl_kappa(x: Arr, y: Arr, lp: dict) -> Arr:
    xr, yr = rot(x, y, lp["pa"])
    re = np.sqrt(lp["q"] * xr**2 + yr**2 / lp["q"] + 1e-8)
    k = (3 - lp["s"]) / 2 * (lp["te"] / re) ** (lp["s"] - 1)
    if lp["a4"]:
        k = k * (1 + lp["a4"] * np.cos(4 * (np.arctan2(yr, xr) - lp["p4"])))
    return np.where(re < 0.95 * 2 * HALF * math.sqrt(lp["q"]), k, 0.0)


def kappa_map(lp: dict, x0: float, y0: float) -> Arr:
    g = (np.arange(KN) + 0.5) * SUB - 2 * HALF
    ky, kx = np.meshgrid(g, g, indexing="ij")
    kap = epl_kappa(kx - x0, ky - y0, lp)
    ic, jc = round((y0 + 2 * HALF) / SUB - 0.5), round((x0 + 2 * HALF) / SUB - 0.5)
    fine = (np.arange(96) + 0.5) * SUB / 12 - SUB / 2  # 8x8 central pixels at 12x12
    yy, xx = np.meshgrid(g[ic - 4] + fine, g[jc - 4] + fine, indexing="ij")
    kf = epl_kappa(xx - x0, yy - y0, lp)
    kap[ic - 4:ic + 4, jc - 4:jc + 4] = kf.reshape(8, 12, 8, 12).mean((1, 3))
    xr, yr = rot(xx - x0, yy - y0, lp["pa"])  # restore the exact cusp mass inside r_ell < 1.5 SUB
    inner = lp["q"] * xr**2 + yr**2 / lp["q"] < (1.5 * SUB) ** 2
    dm = math.pi * lp["te"] ** 2 * (1.5 * SUB / lp["te"]) ** (3 - lp["s"])
    kap[ic, jc] += (dm - kf[inner].sum() * (SUB / 12) ** 2) / SUB**2
    if lp["sub"]:
        r = np.hypot(kx - x0 - lp["rsub"] * math.cos(lp["psub"]),
                     ky - y0 - lp["rsub"] * math.sin(lp["psub"]))
        kap += np.where(r < lp["rt"], lp["tsub"] / (2 * np.maximum(r, SUB / 2)), 0.0)
    return kap


@lru_cache(maxsize=1)
def _defl_kernels() -> tuple[Arr, Arr]:
    m = np.fft.fftfreq(2 * KN, 1 / (2 * KN))  # integer offsets in wrap-around order
    my, mx = np.meshgrid(m, m, indexing="ij")
    r2 = np.where(mx**2 + my**2 > 0, mx**2 + my**2, 1.0)
    return sfft.rfft2(mx * SUB / math.pi / r2), sfft.rfft2(my * SUB / math.pi / r2)


def deflect(kap: Arr) -> tuple[Arr, Arr]:
    """alpha = kappa (*) x/(pi|x|^2) by zero-padded FFT, returned on the oversampled stamp grid."""
    fk, (kx, ky), s = sfft.rfft2(kap, s=(2 * KN,) * 2), _defl_kernels(), slice(KN // 4, 3 * KN // 4)
    return sfft.irfft2(fk * kx, s=(2 * KN,) * 2)[s, s], sfft.irfft2(fk * ky, s=(2 * KN,) * 2)[s, s]


def shapelet_fn(rng: Rng, beta: float) -> Fn:
    n1, n2 = np.meshgrid(np.arange(6), np.arange(6), indexing="ij")
    cf = rng.normal(0, 1, (6, 6)) * np.exp(-(n1 + n2) / 2.5) * (n1 + n2 < 6)
    cf[0, 0], pa = 2.5, rng.uniform(0, np.pi)
    fac = [1 / math.sqrt(2**k * math.sqrt(math.pi) * math.factorial(k)) for k in range(6)]

    def raw(x: Arr, y: Arr) -> Arr:
        u, v = rot(x / beta, y / beta, pa)
        pu = [sp.eval_hermite(k, u) * np.exp(-u * u / 2) * fac[k] for k in range(6)]
        pv = [sp.eval_hermite(k, v) * np.exp(-v * v / 2) * fac[k] for k in range(6)]
        return np.maximum(sum(cf[a, b] * pu[a] * pv[b] for a in range(6) for b in range(6 - a)), 0)
    g = np.linspace(-7 * beta, 7 * beta, 281)
    norm = raw(*np.meshgrid(g, g)).sum() * (g[1] - g[0]) ** 2
    return lambda x, y: raw(x, y) / norm


def draw_source(rng: Rng, lp: dict) -> dict:
    kind = str(rng.choice(["knots", "sersic_clumps", "shapelet"]))
    size = 10 ** rng.uniform(-1, -0.22)
    comps: list[tuple[Fn, Arr]] = []
    if kind == "knots":
        nk = int(rng.integers(6, 31))
        p = np.cumsum(rng.normal(0, 1, (nk, 2)), 0)
        p = (p - p.mean(0)) * size / max(float(np.sqrt((p**2).sum(1).mean())), 1e-6)
        fdiff = rng.uniform(0.2, 0.6) if rng.random() < 0.6 else 0.0
        if fdiff:
            q, pa = rng.uniform(0.4, 1.0), rng.uniform(0, np.pi)
            comps.append((lambda x, y: sersic_sb(x, y, 1.5 * size, 1.0, q, pa),
                          col(rng.uniform(0.2, 0.6), rng.uniform(0.0, 0.3)) * fdiff))
    else:
        nk = int(rng.integers(2, 9)) if kind == "sersic_clumps" else int(rng.integers(0, 5))
        p = rng.normal(0, 0.7 * size, (nk, 2))
        fdiff = 1.0 - (rng.uniform(0.15, 0.5) if nk else 0.0)
        if kind == "sersic_clumps":
            n, q, pa = rng.uniform(0.5, 1.5), rng.uniform(0.3, 1.0), rng.uniform(0, np.pi)
            comps.append((lambda x, y: sersic_sb(x, y, size, n, q, pa), np.zeros(3)))
        else:
            comps.append((shapelet_fn(rng, size * rng.uniform(0.5, 0.9)), np.zeros(3)))
        comps[0] = (comps[0][0], col(rng.uniform(0.1, 0.6), rng.uniform(-0.1, 0.3)) * fdiff)
    if nk:
        w = rng.lognormal(0, 0.8, nk)
        comps.append((blobs(p[:, 0], p[:, 1], rng.uniform(0.04, 0.08, nk), w / w.sum()),
                      col(rng.uniform(-0.1, 0.35), rng.uniform(-0.15, 0.2)) * (1 - fdiff)))
    rad, ang = lp["te"] * 0.55 * math.sqrt(rng.random()), rng.uniform(0, 2 * np.pi)
    return {"kind": kind, "size": size, "rad": rad, "sx": rad * math.cos(ang),
            "sy": rad * math.sin(ang), "comps": comps}


def lensed(lp: dict, src: dict, x0: float, y0: float) -> Arr:
    """Pre-PSF lensed source image (3, 64, 64) for unit unlensed r flux."""
    ax, ay = deflect(kappa_map(lp, x0, y0))
    x, y = XO - x0, YO - y0
    bx = x - ax - (lp["g1"] * x + lp["g2"] * y) - src["sx"]
    by = y - ay - (lp["g2"] * x - lp["g1"] * y) - src["sy"]
    out = np.zeros((3, NPIX, NPIX))
    for fn, cf in src["comps"]:
        add(out, cf, (fn(bx, by) * SUB**2).reshape(NPIX, OS, NPIX, OS).sum((1, 3)))
    return out


# ----------------------------------------------------------------------------- PSF, noise
_RHO, _TH = np.linspace(0.0, 5.0, 2501), np.linspace(0.0, 14.0, 1121)


def fwhm_of(t: Arr, p: Arr) -> float:
    i = int(np.argmax(p < 0.5 * p[0]))
    return 2 * float(t[i - 1] + (t[i] - t[i - 1]) * (p[i - 1] - 0.5 * p[0]) / (p[i - 1] - p[i]))


@lru_cache(maxsize=8)
def _atm_profile(lr: float) -> tuple[Arr, float]:
    """Long-exposure PSF vs angle in units of lambda/r0; lr = L0/r0 (inf: Kolmogorov)."""
    z = 2 * math.pi * np.maximum(_RHO, 1e-8) / lr
    dphi = (6.88 * _RHO ** (5 / 3) if math.isinf(lr) else
            0.17253 * lr ** (5 / 3) * (1 - 1.0056 * z ** (5 / 6) * sp.kv(5 / 6, z)))
    p = (sp.j0(2 * math.pi * np.outer(_TH, _RHO)) * (np.exp(-0.5 * dphi) * _RHO)).sum(1)
    return p / p[0], fwhm_of(_TH, p)


def psf_kernel(kind: str, par: tuple, fwhm: float, e: float, epa: float) -> Arr:
    def prof(t: Arr) -> Arr:
        if kind == "moffat":
            return (1 + t * t) ** -par[0]
        if kind == "corehalo":
            fh, w, b = par
            return ((1 - fh) * np.exp(-t * t / 2) / (2 * math.pi)
                    + fh * (b - 1) / (math.pi * w * w) * (1 + (t / w) ** 2) ** -b)
        return np.interp(t, _TH, _atm_profile(par[0])[0], right=0.0)
    tt = np.linspace(0, 10, 10001)
    fw = _atm_profile(par[0])[1] if kind in ("vonkarman", "kolmogorov") else fwhm_of(tt, prof(tt))
    c = np.arange(-32, 33) * PIX
    y, x = np.meshgrid(c, c, indexing="ij")
    u, v = rot(x, y, epa)
    k = prof(np.hypot(u * math.sqrt(1 - e), v / math.sqrt(1 - e)) * fw / fwhm)
    k *= np.cos(0.5 * np.pi * np.clip((np.hypot(x, y) - 4.0) / 1.4, 0, 1)) ** 2  # taper
    return k / k.sum()


def draw_conditions(rng: Rng) -> dict:
    kind = str(rng.choice(["moffat", "vonkarman", "kolmogorov", "corehalo"],
                          p=[0.35, 0.25, 0.15, 0.25]))
    while True:
        fi = 0.68 * math.exp(rng.normal(0, 0.2))
        if 0.5 <= fi <= 1.1:
            break
    fw = [fi * rng.uniform(1.05, 1.3), fi * rng.uniform(1.0, 1.12), fi]
    e, epa = (rng.uniform(0, 0.08) if rng.random() < 0.4 else 0.0), rng.uniform(0, np.pi)
    beta, lr = rng.uniform(2, 5), float(rng.choice([30.0, 100.0, 300.0]))
    fh, w, hb = rng.uniform(0.05, 0.25), rng.uniform(2, 4.5), rng.uniform(1.8, 3.0)
    psf = []
    for b in range(3):
        par = {"moffat": (beta * rng.uniform(0.95, 1.05),), "vonkarman": (lr,),
               "kolmogorov": (math.inf,), "corehalo": (fh * rng.uniform(0.9, 1.1), w, hb)}[kind]
        eb, pab = e * rng.uniform(0.8, 1.2), epa + rng.normal(0, 0.1)
        psf.append(psf_kernel(kind, par, fw[b], eb, pab))
    sigma = flux(DEPTH + rng.normal(0, 0.15) + rng.normal(0, 0.1, 3)) / (5 * math.sqrt(NAP))
    sky = flux(SKY_MU + rng.normal(0, 0.2)) * PIX**2
    noise = str(rng.choice(["white", "corr-lanczos3", "corr-bilinear"], p=[0.5, 0.25, 0.25]))
    return {"kind": kind, "fwhm": fw, "psf": psf, "sigma": sigma, "gain": sky / sigma**2,
            "noise": noise, "grad": bool(rng.random() < 0.25), "over": bool(rng.random() < 0.2)}


def observe(rng: Rng, sc: Arr, cond: dict, cflux: Arr, cx: float, cy: float) -> tuple[Arr, str]:
    nk, kern = cond["noise"], None
    if nk != "white":
        def taps(d: float) -> Arr:
            if nk == "corr-bilinear":
                return np.array([1 - d, d])
            w = np.sinc(np.arange(-2, 4) - d) * np.sinc((np.arange(-2, 4) - d) / 3)
            return w / w.sum()
        dx, dy = rng.uniform(0, 1, 2)
        kern = np.outer(taps(dy), taps(dx))
        kern /= np.sqrt((kern**2).sum())
    gang, gamp = rng.uniform(0, 2 * np.pi), rng.uniform(0.1, 0.5)
    hs, hf = rng.uniform(1.5, 4.0), rng.uniform(0.01, 0.04)
    halo = np.exp(-((XN - cx) ** 2 + (YN - cy) ** 2) / (2 * hs**2))  # peak 1
    out = np.empty((3, NPIX, NPIX), np.float32)
    for b in range(3):
        m, s = fftconvolve(sc[b], cond["psf"][b], mode="same"), cond["sigma"][b]
        wn = rng.standard_normal((NPIX + 6, NPIX + 6))
        if kern is not None:
            wn = fftconvolve(wn, kern, mode="same")
        img = m + wn[3:-3, 3:-3] * np.sqrt(s**2 + np.clip(m, 0, None) / cond["gain"][b])
        if cond["grad"]:
            img += gamp * s * (XN * math.cos(gang) + YN * math.sin(gang)) / HALF
        if cond["over"]:
            img -= min(hf * cflux[b] * PIX**2 / (2 * np.pi * hs**2), 2 * s) * halo
        out[b] = img
    return out, "+".join([nk] + ["grad"] * cond["grad"] + ["oversub"] * cond["over"])


# ----------------------------------------------------------------------------- non-lenses
def nonlens_scene(rng: Rng, kind: str) -> tuple[Arr, dict, Arr, float, float]:
    sc, info, u = np.zeros((3, NPIX, NPIX)), {"subkind": kind}, rng.uniform
    if kind in ("elliptical", "red_companion", "ring"):
        d = draw_deflector(rng)
        sc, cx, cy, cf = render_deflector(d), d["x0"], d["y0"], col(d["gr"], d["ri"], d["r"])
        info |= dinfo(d)
        if kind == "red_companion" and rng.random() < 0.6:
            info["subkind"] = "blue_companion"
            for _ in range(1 if rng.random() < 0.7 else 2):
                sep, a = u(0.8, 3.0), u(0, 2 * np.pi)
                add_sersic(rng, sc, cx + sep * math.cos(a), cy + sep * math.sin(a),
                           col(u(-0.1, 0.5), u(-0.1, 0.3), min(d["r"] + u(0.5, 3.5), 24.5)),
                           u(0.1, 0.4), u(0.5, 1.5), pa=a + np.pi / 2 if u() < 0.5 else None)
        elif kind == "red_companion":
            info["subkind"] = "tidal_arc"
            rr, a0, da, t = u(1.0, 3.0), u(0, 2 * np.pi), u(0.7, 2.4), np.linspace(0, 1, 30)
            add(sc, col(u(0.4, 1.3), u(0.2, 0.5), min(d["r"] + u(1.0, 3.5), 24.5)),
                chain(cx + rr * np.cos(a0 + da * t) + rng.normal(0, 0.03, 30),
                      cy + rr * np.sin(a0 + da * t) + rng.normal(0, 0.03, 30), u(0.08, 0.25),
                      np.sin(np.pi * (t * 0.9 + 0.05)) ** 0.5))
        elif kind == "ring":
            rr, qr, par, (ox, oy) = u(0.5, 2.5), u(0.2, 1.0), u(0, np.pi), rng.normal(0, 0.1, 2)
            wd = max(0.06, rr * u(0.06, 0.2))
            rg = np.linspace(0, rr + 8 * wd, 2000)
            norm = qr * 2 * np.pi * np.trapezoid(rg * np.exp(-((rg - rr) ** 2) / (2 * wd**2)), rg)

            def ring(x: Arr, y: Arr) -> Arr:
                x, y = rot(x, y, par)
                return np.exp(-((np.hypot(x, y / qr) - rr) ** 2) / (2 * wd**2)) / norm
            fk = u(0.2, 0.6) if rng.random() < 0.5 else 0.0
            img = (1 - fk) * render(ring, cx + ox, cy + oy, refine=False)
            if fk:
                nk = int(rng.integers(3, 13))
                t = u(0, 2 * np.pi, nk)
                a, b = rot(rr * np.cos(t), qr * rr * np.sin(t), -par)
                w = rng.lognormal(0, 0.5, nk)
                img += fk * chain(cx + ox + a, cy + oy + b, u(0.05, 0.12, nk), w)
            add(sc, col(u(0.0, 0.5), u(-0.1, 0.3), min(d["r"] + u(0.0, 2.5), 24.0)), img)
            info["subkind"] = f"ring_R{rr:.2f}_q{qr:.2f}"
        return sc, info, cf, cx, cy
    cx, cy = u(-0.5, 0.5, 2) * PIX
    if kind == "spiral":
        r, rd, qi, pa = u(18, 22), 10 ** u(-0.45, 0.18), u(0.3, 1.0), u(0, np.pi)
        m, tp, amp = (2 if rng.random() < 0.7 else 3), math.tan(u(0.17, 0.52)), u(0.3, 0.9)
        fb, fk, nk = u(0.05, 0.35), u(0.1, 0.3), int(rng.integers(8, 31))

        def disk(x: Arr, y: Arr) -> Arr:
            x, y = rot(x, y, pa)
            rr, y = np.hypot(x, y / qi) + 1e-3, y / qi
            arm = 1 + amp * np.cos(m * (np.arctan2(y, x) - np.log(rr / rd) / tp))
            return np.exp(-rr / rd) * arm / (2 * np.pi * rd**2 * qi)
        rk = rd * u(0.5, 3.0, nk)
        ph = np.log(rk / rd) / tp + 2 * np.pi * rng.integers(0, m, nk) / m + rng.normal(0, 0.15, nk)
        a, b = rot(rk * np.cos(ph), qi * rk * np.sin(ph), -pa)
        add(sc, col(u(0.4, 0.8), u(0.15, 0.35), r) * (1 - fb - fk), render(disk, cx, cy))
        add(sc, col(u(-0.1, 0.3), u(-0.2, 0.15), r) * fk,
            chain(cx + a, cy + b, u(0.04, 0.1, nk), rng.lognormal(0, 0.7, nk)))
        add_sersic(rng, sc, cx, cy, col(u(1.0, 1.5), u(0.35, 0.6), r) * fb, rd * u(0.3, 0.7),
                   u(1.5, 4.0), q=u(0.6, 1.0))
        info |= {"r_mag": r, "reff_arcsec": 1.678 * rd, "sersic_n": 1.0, "q_light": qi}
    elif kind == "merger":
        ra, sep, a = u(18, 21.5), u(0.7, 3.2), u(0, 2 * np.pi)
        gals = [(cx, cy, ra), (cx + sep * math.cos(a), cy + sep * math.sin(a), ra + u(0, 1.5))]
        for k, (x, y, m) in enumerate(gals):
            red, re, n = rng.random() < 0.5, u(0.25, 1.2), u(1.0, 4.0)
            add_sersic(rng, sc, x, y, col(u(1.1, 1.7), u(0.35, 0.6), m) if red else
                       col(u(0.4, 0.9), u(0.15, 0.4), m), re, n)
            if k == 0:
                info |= {"r_mag": m, "reff_arcsec": re, "sersic_n": n}
        for k in range(1 if rng.random() < 0.5 else 2):
            x, y, _ = gals[k]
            head = a + np.pi * (k == 0) + rng.choice([-1, 1]) * u(0.5, 1.5)
            ln, curv = u(1.5, 4.0), rng.choice([-1, 1]) * u(0.3, 0.9)
            t = np.linspace(0, ln, 30)
            add(sc, col(u(0.3, 1.0), u(0.1, 0.4), ra) * 1.5 * u(0.04, 0.15),
                chain(x + np.cumsum(np.cos(head + curv * t)) * ln / 30,
                      y + np.cumsum(np.sin(head + curv * t)) * ln / 30,
                      u(0.1, 0.2) * (1 + t / ln), np.exp(-t / ln)))
        info["subkind"] = f"merger_sep{sep:.2f}"
    elif kind == "edge_on":
        r, re, q, pa = u(17.5, 21.5), 10 ** u(-0.22, 0.4), u(0.07, 0.2), u(0, np.pi)
        fb, rb, nb, qb, nd = u(0, 0.3), re * u(0.15, 0.35), u(1.5, 4.0), u(0.6, 0.9), u(0.7, 1.3)
        tau = u(0.5, 1.5) * np.array([1.0, 0.75, 0.55]) * (rng.random() < 0.5)
        lw, lo = u(0.03, 0.08), rng.normal(0, 0.03)
        cd, cb = col(u(0.6, 1.0), u(0.3, 0.5), r), col(u(1.1, 1.6), u(0.4, 0.6), r)
        for b in range(3):
            def eo(x: Arr, y: Arr, b: int = b) -> Arr:
                ext = np.exp(-tau[b] * np.exp(-((rot(x, y, pa)[1] - lo) ** 2) / (2 * lw**2)))
                return ext * ((1 - fb) * cd[b] * sersic_sb(x, y, re, nd, q, pa)
                              + fb * cb[b] * sersic_sb(x, y, rb, nb, qb, pa))
            sc[b] += render(eo, cx, cy)
        info |= {"r_mag": r, "reff_arcsec": re, "sersic_n": nd, "q_light": q,
                 "subkind": "edge_on_dust" if tau[0] else "edge_on"}
    elif kind == "star":
        info["r_mag"] = u(17, 22)
        star(rng, sc, cx, cy, info["r_mag"])
    else:  # blank sky: extra faint objects anywhere
        neighbours(rng, sc, rmin=0.0, nmean=3.0, mr=(22.0, 25.5))
    return sc, info, sc.sum((1, 2)), cx, cy


# ----------------------------------------------------------------------------- driver
def make_object(seed: int, label: int, idx: int, kind: str) -> tuple[Arr, dict]:
    rng = np.random.default_rng([seed, label, idx])
    if label:
        d = draw_deflector(rng)
        cond = draw_conditions(rng)
        sc, cx, cy, cf = render_deflector(d), d["x0"], d["y0"], col(d["gr"], d["ri"], d["r"])
        nn, ns = neighbours(rng, sc)
        lp = draw_lens(rng, d)
        src = draw_source(rng, lp)
        arc = lensed(lp, src, cx, cy)
        snr0 = math.sqrt(float((fftconvolve(arc[1], cond["psf"][1], mode="same") ** 2).sum()))
        snr0 /= cond["sigma"][1]
        scale = math.exp(rng.uniform(math.log(10), math.log(200))) / max(snr0, 1e-12)
        scale = min(scale, float(flux(20.5)))
        sc += arc * scale
        info = dinfo(d) | {
            "subkind": src["kind"], "theta_e_arcsec": lp["te"], "mass_slope": lp["s"],
            "q_mass": lp["q"], "shear": math.hypot(lp["g1"], lp["g2"]), "multipole_a4": lp["a4"],
            "subhalo": int(lp["sub"]), "src_kind": src["kind"], "src_size_arcsec": src["size"],
            "src_r_mag": 27 - 2.5 * math.log10(scale), "src_offset_arcsec": src["rad"],
            "magnification": float(arc[1].sum()), "arc_snr": snr0 * scale}
    else:
        cond = draw_conditions(rng)
        sc, info, cf, cx, cy = nonlens_scene(rng, kind)
        nn, ns = neighbours(rng, sc)
    img, ntag = observe(rng, sc, cond, cf, cx, cy)
    info |= {"label": label, "kind": "lens" if label else kind, "psf_kind": cond["kind"],
             "noise_kind": ntag, "n_neighbours": nn, "star_neighbour": ns}
    for b, name in enumerate("gri"):
        info[f"seeing_fwhm_{name}_arcsec"] = cond["fwhm"][b]
        info[f"sigma_{name}"] = float(cond["sigma"][b])
    return img, info


def nonlens_kind(seed: int, idx: int) -> str:
    u, acc = (0.7548776662 * seed + 0.6180339887498949 * idx) % 1.0, 0.0
    for name, share in NONLENS:
        acc += share
        if u < acc:
            return name
    return NONLENS[-1][0]


def write_layout(out: str | Path, lenses: int, nonlenses: int, seed: int,
                 progress: bool = False, mapper: Callable = map) -> Path:
    """The DeepLense test layout of ``lenses`` and ``nonlenses`` cutouts, and ``truth.csv``
    (``object_id`` as ``lensscan import-npy`` names them); returns the truth file's path.
    ``mapper``: ``map`` or a process pool's, which renders the same bytes (one seed per object)."""
    out, rows, t0 = Path(out), [], time.time()
    jobs = [(1, i, "lens") for i in range(lenses)]
    jobs += [(0, i, nonlens_kind(seed, i)) for i in range(nonlenses)]
    for folder in ("test_lenses", "test_nonlenses"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    made = mapper(make_object, [seed] * len(jobs), *zip(*jobs, strict=True))
    for k, ((label, i, _), (img, info)) in enumerate(zip(jobs, made, strict=True)):
        oid = f"test_lenses/L{i:06d}" if label else f"test_nonlenses/N{i:06d}"
        if img.shape != (3, NPIX, NPIX) or not np.isfinite(img).all():
            raise RuntimeError(f"bad image {oid}")
        np.save(out / f"{oid}.npy", img.astype(np.float32))
        rows.append({"object_id": oid} | info)
        if progress and (k + 1) % 500 == 0:
            print(f"{k + 1}/{len(jobs)} done, {time.time() - t0:.0f} s", flush=True)
    with open(out / "truth.csv", "w", newline="") as fh:
        wr = csv.DictWriter(fh, fieldnames=COLS)
        wr.writeheader()
        for row in rows:
            wr.writerow({c: (f"{v:.6g}" if isinstance(v, float) else v)
                         for c, v in row.items() if c in COLS})
    return out / "truth.csv"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--lenses", type=int, default=300)
    ap.add_argument("--nonlenses", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    print(write_layout(a.out, a.lenses, a.nonlenses, a.seed, progress=True))


if __name__ == "__main__":
    main()
