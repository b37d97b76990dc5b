"""A second renderer of HSC-like lenses and non-lenses, written apart from ``lensscan.simulate``.

lensscan's models are trained on ``lensscan.simulate`` (lenstronomy for the lensing). A model
that has learned how that renderer draws galaxies, PSFs and noise rather than what lensing does
fails on anyone else's images (issue 12). This module is a small stand-in for "anyone else": it
shares no code, no profile implementation and no parameter table with ``lensscan.simulate`` and
never trains anything, so it can only judge. Its own choices:

- profiles evaluated on a 3x3 sub-pixel grid by their formulas (Sersic with the Ciotti & Bertin
  1999 ``b_n``), normalised on the grid;
- mass: a singular isothermal ellipsoid by Keeton's (2001) closed-form deflection, plus external
  shear, its Einstein radius tied to the deflector's brightness (Faber-Jackson); the lensed
  source drawn by inverse ray shooting on the sub-pixel grid (surface brightness conserved, so
  the magnification is what the grid gives);
- sources: an elliptical Sersic (n 0.5-1.5) with Gaussian star-forming knots;
- PSF per band: a single or a double Gaussian (core plus a wing twice as wide), convolved by a
  zero-padded FFT on the sub-pixel grid;
- noise: sky from a sky brightness and a 5-sigma depth (2" aperture), source shot noise at the
  effective gain they imply, and a share of images with pixel-correlated noise;
- non-lenses: ellipticals (the lens deflectors' own distribution), red galaxies with an unlensed
  blue companion, ring galaxies, spirals with blue knots, edge-on disks, mergers with a tidal
  tail, stars; faint neighbours in every image.

Run as a script it writes the DeepLense ``.npy`` layout (``test_lenses/``, ``test_nonlenses/``)
plus ``truth.csv``, which is how an outside test set reaches lensscan (``lensscan import-npy``)::

    python tests/support/otherrender.py OUT --lenses 300 --nonlenses 3000 --seed 1
"""

from __future__ import annotations

import argparse
import csv
import os
from dataclasses import dataclass

import numpy as np

PIXEL = 0.168  # arcsec
SIZE = 64
SUB = 3  # sub-pixels per pixel and axis
ZERO_POINT = 27.0
BANDS = ("g", "r", "i")
DEPTH_5SIG = (26.5, 26.1, 25.9)  # 5-sigma in a 2" aperture, HSC Wide
SKY_MAG = (22.0, 21.0, 20.3)  # sky brightness, mag / arcsec^2

#: Non-lens kinds and their shares.
NONLENS_KINDS = {"elliptical": 0.40, "companion": 0.15, "spiral": 0.13, "ring": 0.08,
                 "merger": 0.08, "edge_on": 0.08, "star": 0.08}


def _grid() -> tuple[np.ndarray, np.ndarray]:
    n = SIZE * SUB
    c = (np.arange(n) - (n - 1) / 2.0) * (PIXEL / SUB)
    return np.meshgrid(c, c)  # x, y in arcsec; y up the rows


X, Y = _grid()


def flux(mag: float) -> float:
    return 10.0 ** (-0.4 * (mag - ZERO_POINT))


def _rotate(x, y, phi):
    c, s = np.cos(phi), np.sin(phi)
    return c * x + s * y, -s * x + c * y


def b_n(n: float) -> float:
    """Ciotti & Bertin (1999) asymptotic expansion."""
    return 2 * n - 1 / 3 + 4 / (405 * n) + 46 / (25515 * n * n)


def sersic(x, y, reff, n, q, phi):
    """Unnormalised elliptical Sersic surface brightness at (x, y)."""
    u, v = _rotate(x, y, phi)
    r = np.sqrt(q * u * u + v * v / q)
    return np.exp(-b_n(n) * ((np.maximum(r, 1e-4) / reff) ** (1.0 / n) - 1.0))


def gauss(x, y, sigma, q=1.0, phi=0.0):
    u, v = _rotate(x, y, phi)
    return np.exp(-0.5 * (q * u * u + v * v / q) / sigma**2)


def normed(img: np.ndarray, total: float) -> np.ndarray:
    s = img.sum()
    return img * (total / s) if s > 0 else img


def sie_deflection(x, y, theta_e, q, phi, gamma1, gamma2):
    """Keeton (2001) SIE deflection (core-less), major axis at angle ``phi``, plus shear."""
    u, v = _rotate(x, y, phi)
    q = min(q, 0.999)
    e = np.sqrt(1 - q * q)
    psi = np.sqrt(q * q * u * u + v * v) + 1e-9
    au = theta_e * np.sqrt(q) / e * np.arctan(e * u / psi)
    av = theta_e * np.sqrt(q) / e * np.arctanh(np.clip(e * v / psi, -0.999999, 0.999999))
    c, s = np.cos(phi), np.sin(phi)
    ax, ay = c * au - s * av, s * au + c * av
    return ax + gamma1 * x + gamma2 * y, ay + gamma2 * x - gamma1 * y


@dataclass
class Conditions:
    fwhm: np.ndarray  # per band, arcsec
    wing: float  # 0: single Gaussian; else the flux share of a wing twice as wide
    sigma_sky: np.ndarray  # per band, flux per pixel
    gain: np.ndarray  # per band: variance of a pixel's source flux = flux / gain
    correlated: bool


def draw_conditions(rng) -> Conditions:
    fwhm_i = rng.uniform(0.5, 0.95)
    fwhm = np.array([fwhm_i * rng.uniform(1.05, 1.3), fwhm_i * rng.uniform(1.0, 1.15), fwhm_i])
    depth = np.array(DEPTH_5SIG) + rng.normal(0, 0.25)
    aperture_pixels = np.pi * 1.0**2 / PIXEL**2
    sigma = np.array([flux(d) for d in depth]) / (5 * np.sqrt(aperture_pixels))
    sky = np.array([flux(m) * PIXEL**2 for m in SKY_MAG])
    return Conditions(fwhm, float(rng.uniform(0.08, 0.2)) if rng.random() < 0.5 else 0.0,
                      sigma, sky / sigma**2, bool(rng.random() < 0.3))


PAD = 2 * SIZE * SUB  # the FFT grid: zero-padded, so that no light wraps to the far edge
_K = (np.arange(PAD) - PAD // 2) * (PIXEL / SUB)  # kernel offsets: 0 exactly at PAD // 2
KX, KY = np.meshgrid(_K, _K)


def _psf_fft(fwhm: float, wing: float) -> np.ndarray:
    sigma = fwhm / 2.3548
    k = gauss(KX, KY, sigma)
    k /= k.sum()
    if wing:
        w = gauss(KX, KY, 2 * sigma)
        k = (1 - wing) * k + wing * w / w.sum()
    return np.fft.rfft2(np.fft.ifftshift(k))  # the kernel's centre moved to index (0, 0)


def blur(sub: np.ndarray, fwhm: float, wing: float) -> np.ndarray:
    """One band's sub-pixel fluxes through the PSF (linear, not circular, convolution), binned
    to pixels."""
    n = sub.shape[0]
    padded = np.zeros((PAD, PAD))
    padded[:n, :n] = sub
    sharp = np.fft.irfft2(np.fft.rfft2(padded) * _psf_fft(fwhm, wing), s=padded.shape)[:n, :n]
    return sharp.reshape(SIZE, SUB, SIZE, SUB).sum(axis=(1, 3))


def observe(bands: np.ndarray, cond: Conditions, rng) -> np.ndarray:
    """Sub-pixel (3, 192, 192) fluxes -> PSF, binned to pixels, shot and sky noise."""
    out = np.empty((3, SIZE, SIZE), np.float64)
    for b in range(3):
        img = blur(bands[b], cond.fwhm[b], cond.wing)
        shot = rng.normal(0, 1, img.shape) * np.sqrt(np.maximum(img, 0) / cond.gain[b])
        sky = rng.normal(0, 1, (SIZE + 2, SIZE + 2))
        if cond.correlated:  # resampled coadd: neighbouring pixels share noise
            sky = (sky[1:-1, 1:-1] + 0.35 * (sky[:-2, 1:-1] + sky[2:, 1:-1] + sky[1:-1, :-2]
                                             + sky[1:-1, 2:])) / np.sqrt(1 + 4 * 0.35**2)
        else:
            sky = sky[1:-1, 1:-1]
        out[b] = img + shot + cond.sigma_sky[b] * sky
    return out.astype(np.float32)


def colours(r_mag: float, g_r: float, r_i: float) -> np.ndarray:
    return np.array([flux(r_mag + g_r), flux(r_mag), flux(r_mag - r_i)])


def red_galaxy(rng, x0=0.0, y0=0.0):
    """A deflector / elliptical: the same distribution for lenses and non-lenses; brighter
    ones are larger (a size-luminosity relation with 0.15 dex of scatter)."""
    mag = rng.uniform(18.0, 22.8)
    reff = float(np.clip(0.8 * 10 ** (-0.15 * (mag - 20) + rng.normal(0, 0.15)), 0.25, 3.0))
    prof = sersic(X - x0, Y - y0, reff, rng.uniform(2.5, 5.5), rng.uniform(0.5, 1.0),
                  rng.uniform(0, np.pi))
    cols = colours(mag, rng.uniform(0.95, 1.6), rng.uniform(0.35, 0.6))
    return normed(prof, 1.0)[None] * cols[:, None, None], mag, reff


def source_profile(bx, by, reff, n, q, phi, knots):
    prof = sersic(bx, by, reff, n, q, phi) * np.exp(-b_n(n))  # 1 at the centre
    for kx, ky, ks, kf in knots:
        prof = prof + kf * gauss(bx - kx, by - ky, ks)
    return prof


def draw_knots(rng, reff):
    n = rng.integers(0, 5)
    return [(rng.normal(0, reff), rng.normal(0, reff), rng.uniform(0.03, 0.08),
             rng.uniform(0.3, 1.5)) for _ in range(n)]


def blue_colours(rng, mag):
    return colours(mag, rng.uniform(-0.1, 0.5), rng.uniform(-0.15, 0.3))


def neighbours(rng) -> np.ndarray:
    img = np.zeros((3, SIZE * SUB, SIZE * SUB))
    half = SIZE * PIXEL / 2
    for _ in range(rng.poisson(1.5)):
        x0, y0 = rng.uniform(-half, half, 2)
        if np.hypot(x0, y0) < 2.5:
            continue
        prof = sersic(X - x0, Y - y0, rng.uniform(0.1, 0.6), rng.uniform(0.7, 3),
                      rng.uniform(0.4, 1), rng.uniform(0, np.pi))
        img += normed(prof, 1.0)[None] * colours(rng.uniform(21.5, 25.5), rng.uniform(-0.2, 1.5),
                                                 rng.uniform(-0.1, 0.7))[:, None, None]
    return img


def lens(rng) -> tuple[np.ndarray, dict]:
    x0, y0 = rng.uniform(-0.5, 0.5, 2) * PIXEL
    defl, mag, reff = red_galaxy(rng, x0, y0)
    # Faber-Jackson (L ~ sigma^4) and theta_E ~ sigma^2: theta_E ~ L^0.5 ~ 10^(-0.2 m), flattened
    # to 10^(-0.15 m) for the spread of redshifts, with 0.12 dex of scatter
    theta_e = float(np.clip(1.1 * 10 ** (-0.15 * (mag - 20) + rng.normal(0, 0.12)), 0.5, 2.6))
    q = rng.uniform(0.55, 1.0)
    ax, ay = sie_deflection(X - x0, Y - y0, theta_e, q, rng.uniform(0, np.pi),
                            *rng.normal(0, 0.04, 2))
    rad = 0.6 * theta_e * np.sqrt(rng.random())
    ang = rng.uniform(0, 2 * np.pi)
    sx, sy = rad * np.cos(ang), rad * np.sin(ang)
    s_reff = rng.uniform(0.08, 0.45)
    s_q, s_phi = rng.uniform(0.4, 1.0), rng.uniform(0, np.pi)
    knots = draw_knots(rng, s_reff)
    s_mag = rng.uniform(21.0, 25.5)
    s_n = rng.uniform(0.5, 1.5)
    lensed = source_profile(X - x0 - ax - sx, Y - y0 - ay - sy, s_reff, s_n, s_q, s_phi, knots)
    unlensed = source_profile(X, Y, s_reff, s_n, s_q, s_phi, knots)  # its own normalisation
    mu = float(lensed.sum() / unlensed.sum())
    arc = lensed / unlensed.sum()
    arc = arc[None] * blue_colours(rng, s_mag)[:, None, None]
    return defl + arc, {"kind": "lens", "arc": arc, "deflector_mag_r": mag, "deflector_reff": reff,
                 "theta_e": theta_e, "source_mag_r": s_mag, "magnification": mu,
                 "lensed_mag_r": float(s_mag - 2.5 * np.log10(max(mu, 1e-6)))}


def nonlens(rng, kind: str) -> tuple[np.ndarray, dict]:
    truth = {"kind": kind, "deflector_mag_r": np.nan, "deflector_reff": np.nan,
             "theta_e": np.nan, "source_mag_r": np.nan, "magnification": np.nan,
             "lensed_mag_r": np.nan}
    x0, y0 = rng.uniform(-0.5, 0.5, 2) * PIXEL
    if kind in ("elliptical", "companion", "ring"):
        img, mag, reff = red_galaxy(rng, x0, y0)
        truth.update(deflector_mag_r=mag, deflector_reff=reff)
        if kind == "companion":  # an unlensed blue galaxy beside it, often tangentially long
            d, a = rng.uniform(1.0, 3.2), rng.uniform(0, 2 * np.pi)
            cx, cy = d * np.cos(a), d * np.sin(a)
            reff_c = rng.uniform(0.1, 0.5)
            prof = source_profile(X - cx, Y - cy, reff_c, rng.uniform(0.5, 1.5),
                                  rng.uniform(0.2, 1.0),
                                  a + np.pi / 2 + rng.normal(0, 0.3), draw_knots(rng, reff_c))
            img = img + normed(prof, 1.0)[None] * blue_colours(
                rng, rng.uniform(21.5, 24.5))[:, None, None]
        elif kind == "ring":  # a collisional / resonance ring: an annulus of star formation
            radius, width = rng.uniform(0.8, 2.4), rng.uniform(0.12, 0.4)
            q, phi = rng.uniform(0.6, 1.0), rng.uniform(0, np.pi)
            u, v = _rotate(X - x0, Y - y0, phi)
            rr = np.sqrt(q * u * u + v * v / q)
            clump = 1 + rng.uniform(0, 0.8) * np.cos(rng.integers(1, 5) * np.arctan2(v, u)
                                                      + rng.uniform(0, 6.3))
            prof = np.exp(-0.5 * ((rr - radius) / width) ** 2) * clump
            ring_cols = (blue_colours(rng, rng.uniform(20.5, 23.5)) if rng.random() < 0.6
                         else colours(rng.uniform(20.5, 23.5), rng.uniform(0.6, 1.3),
                                      rng.uniform(0.2, 0.5)))
            img = img + normed(prof, 1.0)[None] * ring_cols[:, None, None]
    elif kind == "spiral":
        reff, q, phi = rng.uniform(0.6, 2.0), rng.uniform(0.35, 1.0), rng.uniform(0, np.pi)
        u, v = _rotate(X - x0, Y - y0, phi)
        rr = np.sqrt(q * u * u + v * v / q) + 1e-6
        pitch = rng.uniform(0.2, 0.5)
        arms = 1 + 0.8 * np.cos(2 * (np.arctan2(v, u) - np.log(rr) / np.tan(pitch)))
        disk = np.exp(-1.678 * rr / reff) * arms
        bulge = sersic(X - x0, Y - y0, 0.2 * reff, 3.0, q, phi)
        mag = rng.uniform(18.5, 22.5)
        img = (normed(disk, 0.75)[None] * blue_colours(rng, mag)[:, None, None]
               + normed(bulge, 0.25)[None] * colours(mag, 1.1, 0.4)[:, None, None])
        for _ in range(rng.integers(2, 8)):  # blue knots in the arms
            kr, ka = rng.uniform(0.3, 1.6) * reff, rng.uniform(0, 2 * np.pi)
            kx, ky = _rotate(kr * np.cos(ka) * np.sqrt(1 / q), kr * np.sin(ka) * np.sqrt(q),
                             -phi)
            img = img + normed(gauss(X - x0 - kx, Y - y0 - ky, rng.uniform(0.04, 0.1)),
                               1.0)[None] * blue_colours(rng, rng.uniform(23, 25.5))[:, None, None]
    elif kind == "edge_on":
        reff = rng.uniform(0.8, 2.5)
        prof = sersic(X - x0, Y - y0, reff, 1.0, rng.uniform(0.08, 0.22), rng.uniform(0, np.pi))
        img = normed(prof, 1.0)[None] * colours(rng.uniform(18.5, 22.5), rng.uniform(0.4, 1.2),
                                                rng.uniform(0.2, 0.5))[:, None, None]
    elif kind == "merger":
        img, mag, reff = red_galaxy(rng, x0, y0)
        d, a = rng.uniform(0.7, 2.2), rng.uniform(0, 2 * np.pi)
        other, _, _ = red_galaxy(rng, x0 + d * np.cos(a), y0 + d * np.sin(a))
        img = img + other * rng.uniform(0.2, 1.0)
        # a curved tidal tail: an arc of a circle centred off the pair
        rad, cen = rng.uniform(1.5, 3.5), a + np.pi + rng.normal(0, 0.5)
        cx, cy = x0 + rad * np.cos(cen), y0 + rad * np.sin(cen)
        rr = np.hypot(X - cx, Y - cy)
        span = np.angle(np.exp(1j * (np.arctan2(Y - cy, X - cx) - (cen + np.pi))))
        tail = np.exp(-0.5 * ((rr - rad) / 0.25) ** 2) * np.exp(-0.5 * (span / 0.6) ** 2)
        img = img + normed(tail, 1.0)[None] * colours(rng.uniform(21.5, 24), rng.uniform(
            0.3, 1.0), rng.uniform(0.1, 0.4))[:, None, None]
    elif kind == "star":
        star = np.zeros((SIZE * SUB, SIZE * SUB))
        star[SIZE * SUB // 2 + rng.integers(-1, 2), SIZE * SUB // 2 + rng.integers(-1, 2)] = 1
        img = star[None] * colours(rng.uniform(17, 23), rng.uniform(-0.2, 1.5),
                                   rng.uniform(-0.1, 0.8))[:, None, None]
    else:
        raise ValueError(f"unknown kind {kind!r}")
    return img, truth


def render(kind: str, seed: int, index: int) -> tuple[np.ndarray, dict]:
    """One (3, 64, 64) float32 cutout of ``kind`` ("lens" or a key of :data:`NONLENS_KINDS`)
    and its truth; the same (seed, index) gives the same bytes."""
    rng = np.random.default_rng([seed, index, 0 if kind == "lens" else 1])
    cond = draw_conditions(rng)
    sub, truth = lens(rng) if kind == "lens" else nonlens(rng, kind)
    arc = truth.pop("arc", None)  # the lensed source alone: its matched-filter S/N in r
    truth["arc_snr"] = (float(np.sqrt(np.sum((blur(arc[1], cond.fwhm[1], cond.wing)
                                               / cond.sigma_sky[1]) ** 2)))
                        if arc is not None else np.nan)
    sub = sub + neighbours(rng)
    truth.update(fwhm_i=float(cond.fwhm[2]), correlated_noise=cond.correlated,
                 psf_wing=cond.wing)
    return observe(sub, cond, rng), truth


def draw_kinds(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng([seed, 999])
    names = list(NONLENS_KINDS)
    return list(rng.choice(names, size=n, p=np.array(list(NONLENS_KINDS.values()))))


def write_layout(out: str, lenses: int, nonlenses: int, seed: int, mapper=map) -> str:
    """The DeepLense test layout of ``lenses`` and ``nonlenses`` cutouts, and ``truth.csv``
    (``object_id`` as ``lensscan import-npy`` names them); returns the truth file's path.
    ``mapper``: ``map`` or a process pool's, which renders the same bytes (one seed per object)."""
    rows = []
    jobs = [("lens", i) for i in range(lenses)] + list(zip(draw_kinds(nonlenses, seed),
                                                           range(nonlenses), strict=True))
    kinds, idx = [k for k, _ in jobs], [i for _, i in jobs]
    for kind, i, (image, truth) in zip(kinds, idx, mapper(render, kinds, [seed] * len(jobs), idx),
                                       strict=True):
        folder = "test_lenses" if kind == "lens" else "test_nonlenses"
        os.makedirs(os.path.join(out, folder), exist_ok=True)
        stem = f"{'L' if kind == 'lens' else 'N'}{i:06d}"
        np.save(os.path.join(out, folder, stem + ".npy"), image)
        rows.append({"object_id": f"{folder}/{stem}", "label": int(kind == "lens"), **truth})
    path = os.path.join(out, "truth.csv")
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--lenses", type=int, default=300)
    p.add_argument("--nonlenses", type=int, default=3000)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    print(write_layout(a.out, a.lenses, a.nonlenses, a.seed))


if __name__ == "__main__":
    main()
