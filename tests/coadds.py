"""A simulated coadd on disk: two overlapping tiles x three bands of 200 x 200 pixels with TAN
WCS (0.168"/pixel), Gaussian galaxies at known positions, noise and NaN-masked patches.

Tile ``9813|9813-1,1`` (A) is centred on (150.0, 2.0); tile ``9813|9813-2,1`` (B) lies 120
pixels west and is turned by 0.2 degrees, so the tiles overlap by about 80 pixels. Each object is
placed by its pixel position in tile A and the test knows where it must end.
"""

from __future__ import annotations

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

SIZE = 200
SCALE = 0.168  # arcsec / pixel
BANDS = ("G", "R", "I")
A, B = "9813|9813-1,1", "9813|9813-2,1"

#: name -> (x, y) in tile A's pixels, and the fate: a tile key or a missing reason.
OBJECTS = {
    "a_centre": ((60.3, 100.7), A),
    "b_only": ((280.0, 95.2), B),
    "overlap_b": ((175.2, 100.4), B),  # 24 px from A's edge, ~55 from B's
    "overlap_a": ((140.6, 120.1), A),  # ~59 px from A's edge, ~21 from B's
    "edge": ((15.0, 100.0), "edge"),
    "edge_corner": ((100.0, 190.0), "edge"),
    "masked": ((50.0, 45.0), "masked"),  # NaN patch in A's R band
    "masked_fallback": ((155.0, 60.0), B),  # A is best but masked in I: cut from B
    "off": ((900.0, 100.0), "no_tile"),
}


def tile_wcs(key: str) -> WCS:
    """The TAN WCS of a tile (both tiles share the tangent point's declination)."""
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crpix = [SIZE / 2 + 0.5, SIZE / 2 + 0.5]
    w.wcs.cdelt = [-SCALE / 3600, SCALE / 3600]
    w.wcs.radesys = "ICRS"
    if key == A:
        w.wcs.crval = [150.0, 2.0]
    else:
        w.wcs.crval = [150.0 - 120 * SCALE / 3600 / np.cos(np.deg2rad(2.0)), 2.0]
        t = np.deg2rad(0.2)
        w.wcs.pc = [[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]
    return w


def positions() -> dict[str, tuple[float, float]]:
    """RA, Dec (degrees) of every object."""
    w = tile_wcs(A)
    out = {}
    for name, ((x, y), _) in OBJECTS.items():
        sky = w.pixel_to_world(x, y)
        out[name] = (float(sky.ra.deg), float(sky.dec.deg))
    return out


def _image(key: str, band: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[:SIZE, :SIZE].astype(float)
    img = rng.normal(0.0, 0.05, (SIZE, SIZE))
    w = tile_wcs(key)
    for k, (ra, dec) in enumerate(positions().values()):
        x, y = w.world_to_pixel_values(ra, dec)
        img += (5.0 + 3 * band + k) * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 2.0**2))
    if key == A and band == 1:
        img[40:50, 40:50] = np.nan
    if key == A and band == 2:
        img[55:58, 150:156] = np.nan
    return img.astype(">f4")


def write_coadd(root, zeropoint_i: float | None = None) -> str:
    """Write the coadd under ``root`` (plus a lone G image of an incomplete tile); returns the
    image glob with its {band} placeholder. ``zeropoint_i`` sets ``MAGZERO`` of tile A's I."""
    rng = np.random.default_rng(3)
    for key in (A, B):
        tract, patch = key.split("|")
        for b, band in enumerate(BANDS):
            primary = fits.PrimaryHDU()
            primary.header["FLUXMAG0"] = 10 ** (0.4 * 27.0)
            hdr = tile_wcs(key).to_header()
            if zeropoint_i is not None and key == A and band == "I":
                hdr["MAGZERO"] = zeropoint_i
            image = fits.ImageHDU(_image(key, b, rng), header=hdr, name="IMAGE")
            path = root / tract / f"calexp-HSC-{band}-{patch}.fits"
            path.parent.mkdir(parents=True, exist_ok=True)
            fits.HDUList([primary, image]).writeto(path)
    lone = root / "9813" / "calexp-HSC-G-9813-3,1.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros((8, 8), ">f4"),
                                                   header=tile_wcs(A).to_header())]).writeto(lone)
    return str(root / "*" / "calexp-HSC-{band}-*.fits")


def tile_image(root, key: str, band: str) -> tuple[np.ndarray, WCS]:
    """A band image of a tile as written, and its WCS."""
    tract, patch = key.split("|")
    with fits.open(root / tract / f"calexp-HSC-{band}-{patch}.fits") as hdul:
        return hdul[1].data.astype(np.float32), WCS(hdul[1].header)


def write_catalog(path) -> None:
    """A CSV catalogue of every object (ids are their names), plus one without a position."""
    with open(path, "w") as fh:
        fh.write("object_id,ra,dec\n")
        for name, (ra, dec) in positions().items():
            fh.write(f"{name},{ra!r},{dec!r}\n")
        fh.write("no_position,,\n")


if __name__ == "__main__":  # python tests/coadds.py DIR: the README's example coadd
    import pathlib
    import sys

    out = pathlib.Path(sys.argv[1])
    print(write_coadd(out / "coadd"))
    write_catalog(out / "catalog.csv")
