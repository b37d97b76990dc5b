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


def stamp_wcs(size: int, ra: float, dec: float) -> WCS:
    """A north-up, east-left TAN WCS of ``size`` x ``size`` pixels at 0.168"/pixel."""
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crpix = [size / 2 + 0.5, size / 2 + 0.5]
    w.wcs.cdelt = [-SCALE / 3600, SCALE / 3600]
    w.wcs.radesys = "ICRS"
    w.wcs.crval = [ra, dec]
    return w


def write_stamp_tiles(root, stamps: np.ndarray, per_side: int = 4, margin: int = 24,
                      seed: int = 0) -> tuple[str, list[tuple[float, float]]]:
    """Coadd tiles made of given (N, 3, 64, 64) g, r, i stamps (simulated cutouts): each tile
    holds ``per_side`` x ``per_side`` stamps side by side on a noisy sky, G, R and I images with
    a TAN WCS, tiles 0.05 degrees apart in RA. A stamp's object sits at its centre, so that
    ``lensscan cutout`` gives back the very stamp. Returns the image glob with its {band}
    placeholder and each stamp's (RA, Dec) in degrees."""
    rng = np.random.default_rng(seed)
    size = per_side * 64 + 2 * margin
    per_tile = per_side * per_side
    where = []
    for t in range(-(-len(stamps) // per_tile)):
        wcs = stamp_wcs(size, 150.0 + 0.05 * t, 2.0)
        planes = rng.normal(0.0, 0.02, (3, size, size))
        for k, stamp in enumerate(stamps[t * per_tile:(t + 1) * per_tile]):
            x0, y0 = margin + 64 * (k % per_side), margin + 64 * (k // per_side)
            planes[:, y0:y0 + 64, x0:x0 + 64] = stamp
            sky = wcs.pixel_to_world(x0 + 31.5, y0 + 31.5)
            where.append((float(sky.ra.deg), float(sky.dec.deg)))
        for b, band in enumerate(BANDS):
            path = root / "9900" / f"calexp-HSC-{band}-9900-{t},0.fits"
            path.parent.mkdir(parents=True, exist_ok=True)
            image = fits.ImageHDU(planes[b].astype(">f4"), header=wcs.to_header(), name="IMAGE")
            fits.HDUList([fits.PrimaryHDU(), image]).writeto(path)
    return str(root / "*" / "calexp-HSC-{band}-*.fits"), where


#: The loop's survey: (kind, seeds) drawn by the simulator with default_rng([15, kind, seed]).
#: The bundled model ranks the six lenses first, then the hard non-lenses (a blue companion at
#: 0.92, above its 0.86 threshold, others at 0.61, 0.50, 0.26): the false positives to grade.
LOOP_SURVEY = (("lens", (0, 2, 4, 5, 7, 8)), ("companions", (37, 32, 22, 35, 29)),
               ("elliptical", (20, *range(15))), ("spiral", (1, 0)), ("ring", (28, 48)),
               ("merger", (5,)))


def write_loop_survey(root) -> dict[str, str]:
    """The survey of the end-to-end loop (README, "The whole loop"): the simulated objects of
    :data:`LOOP_SURVEY` in two coadd tiles under ``root/coadd``, their catalogue
    (``root/catalog.csv``) and the ellipticals but the one that fools the model as hosts for
    ``lensscan inject`` (``root/hosts.csv``). Returns each object's kind by id."""
    from lensscan.simulate.kinds import KINDS, render_object

    drawn, stamps = [], []
    for kind, seeds in LOOP_SURVEY:
        for seed in seeds:
            image, _ = render_object(kind, np.random.default_rng([15, list(KINDS).index(kind),
                                                                   seed]))
            stamps.append(image)
            drawn.append((kind, seed))
    order = np.random.default_rng(5).permutation(len(stamps))  # kinds mixed over the tiles
    kinds = {f"obj{k:02d}": drawn[i][0] for k, i in enumerate(order)}
    _, where = write_stamp_tiles(root / "coadd", np.stack(stamps)[order])
    with open(root / "catalog.csv", "w") as fh:
        fh.write("object_id,ra,dec\n")
        fh.writelines(f"{i},{ra!r},{dec!r}\n" for i, (ra, dec) in zip(kinds, where, strict=True))
    hosts = [f"obj{k:02d}" for k, i in enumerate(order)
             if drawn[i][0] == "elliptical" and drawn[i][1] != 20]
    (root / "hosts.csv").write_text("object_id\n" + "".join(f"{i}\n" for i in hosts))
    return kinds


if __name__ == "__main__":  # python tests/support/coadds.py DIR [--loop]: the README's coadds
    import json
    import pathlib
    import sys

    out = pathlib.Path(sys.argv[1])
    if "--loop" in sys.argv:
        print(json.dumps(write_loop_survey(out)))
    else:
        print(write_coadd(out / "coadd"))
        write_catalog(out / "catalog.csv")
