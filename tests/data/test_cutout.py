"""`lensscan cutout` on a simulated coadd (two overlapping tiles x three bands, TAN WCS):
cutouts equal astropy's Cutout2D, every catalogue row ends exactly once, locally and on S3."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from astropy.coordinates import SkyCoord
from astropy.nddata import Cutout2D
from support.coadds import BANDS, OBJECTS, A, B, positions, tile_image, tile_wcs, write_coadd

from lensscan.cli import main
from lensscan.config import CutoutConfig
from lensscan.data.cutout import check_tiles
from lensscan.io import coadd
from lensscan.io.parquet import parquet_info
from lensscan.io.shards import read_shard
from lensscan.io.storage import filesystem, list_shards, read_bytes


def _catalog(path, off_sky: bool = False) -> str:
    """Every object of the coadd plus one without a position; with ``off_sky``, two rows whose
    positions are not on the sky: a_centre's RA plus 360 (a WCS would wrap it onto tile A) and
    a declination of 95."""
    pos = positions()
    names = [*pos, "nan_pos"]
    ra = [p[0] for p in pos.values()] + [float("nan")]
    dec = [p[1] for p in pos.values()] + [2.0]
    if off_sky:
        names += ["ra_wrapped", "dec_95"]
        ra += [pos["a_centre"][0] + 360, 150.0]
        dec += [pos["a_centre"][1], 95.0]
    pq.write_table(pa.table({"ID": names, "RA": ra, "DEC": dec}), path)
    return str(path)


def _read_output(out: str) -> tuple[dict, dict]:
    rows = {}
    for url in list_shards(out):
        b = read_shard(url)
        for i, oid in enumerate(b["object_id"]):
            assert oid not in rows, f"{oid} written twice"
            rows[oid] = {k: b[k][i] for k in ("image", "offset_x", "offset_y", "tile")}
    fs, path = filesystem(out)
    missing = pq.read_table(pa.BufferReader(read_bytes(out.rstrip("/") + "/_missing.parquet")))
    return rows, dict(zip(missing.column("object_id").to_pylist(),
                          missing.column("reason").to_pylist(), strict=True))


def _check(out: str, root, float16: bool = False) -> None:
    """Every object where its fate puts it; pixels exact, or to float16's precision (11 bits,
    an absolute 2**-25 below 2**-14)."""
    rtol, atol = (2.0 ** -11, 2.0 ** -25) if float16 else (0.0, 0.0)
    rows, missing = _read_output(out)
    expected = {**{k: fate for k, (_, fate) in OBJECTS.items()}, "nan_pos": "no_tile"}
    assert set(rows) | set(missing) == set(expected) and not set(rows) & set(missing)
    pos = positions()
    for name, fate in expected.items():
        if fate not in ("no_tile", "edge", "masked"):
            assert rows[name]["tile"] == fate, name
            for b, band in enumerate(BANDS):
                image, wcs = tile_image(root, fate, band)
                ref = Cutout2D(image, SkyCoord(*pos[name], unit="deg"), (64, 64), wcs=wcs)
                np.testing.assert_allclose(rows[name]["image"][b], ref.data, rtol=rtol, atol=atol,
                                           err_msg=name)
            cx, cy = ref.input_position_cutout
            assert rows[name]["offset_x"] == pytest.approx(cx - 31.5, abs=1e-5)
            assert rows[name]["offset_y"] == pytest.approx(cy - 31.5, abs=1e-5)
            assert -0.5 < rows[name]["offset_x"] <= 0.5
        else:
            assert missing[name] == fate, name
    meta = pq.read_schema(pa.BufferReader(read_bytes(list_shards(out)[0]))).metadata
    assert meta[b"lensscan.bands"] == b"g,r,i"
    assert float(meta[b"lensscan.pixel_scale"]) == 0.168
    assert float(meta[b"lensscan.zeropoint"]) == 27.0


def test_tiles_pair_bands_by_wildcards(tmp_path):
    pattern = write_coadd(tmp_path)
    tiles, partial = coadd.discover_tiles(pattern, BANDS)
    assert [t.key for t in tiles] == ["9813|9813-1,1", "9813|9813-2,1"]
    assert [b.url.split("/")[-1] for b in tiles[0].bands] == [
        "calexp-HSC-G-9813-1,1.fits", "calexp-HSC-R-9813-1,1.fits", "calexp-HSC-I-9813-1,1.fits"]
    assert partial == [str(tmp_path / "9813" / "calexp-HSC-G-9813-3,1.fits")]
    band = tiles[0].bands[0]
    assert band.hdu == 1 and band.shape == (200, 200) and band.zeropoint == pytest.approx(27.0)
    assert band.pixel_scale == pytest.approx((0.168, 0.168))
    check_tiles(tiles, CutoutConfig("c", pattern, "o"))  # same grid in every band: accepted
    with pytest.raises(ValueError, match="--resample"):
        check_tiles(tiles, CutoutConfig("c", pattern, "o", pixel_scale=0.2))


def test_cutouts_equal_cutout2d_and_every_row_ends_once(tmp_path, ray_local, capsys):
    pattern = write_coadd(tmp_path / "coadd", zeropoint_i=27.5)
    out = tmp_path / "shards"
    assert main(["cutout", _catalog(tmp_path / "cat.parquet"), pattern, "--out", str(out),
                 "--band-names", "G,R,I", "--id-col", "ID", "--ra-col", "RA", "--dec-col", "DEC",
                 "--psf-fwhm", "0.9,0.8,0.7"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["counts"] == {"catalog_rows": 10, "cutouts": 5, "missing": 5, "no_tile": 2,
                                 "off_sky": 0, "edge": 2, "masked": 1, "unreadable": 0}
    rows, _ = _read_output(str(out))
    image, wcs = tile_image(tmp_path / "coadd", A, "I")
    ref = Cutout2D(image, SkyCoord(*positions()["a_centre"], unit="deg"), (64, 64), wcs=wcs)
    # tile A's I image says MAGZERO = 27.5: its fluxes are scaled to the survey's 27
    np.testing.assert_allclose(rows["a_centre"]["image"][2], ref.data * 10 ** (-0.2), rtol=1e-6)
    batch = read_shard(list_shards(str(out))[0])
    np.testing.assert_allclose(batch["psf_fwhm"][0], [0.9, 0.8, 0.7], rtol=1e-6)
    assert main(["cutout", _catalog(tmp_path / "cat.parquet"), pattern, "--out", str(out),
                 "--band-names", "G,R,I", "--id-col", "ID"]) == 2  # not empty: refused
    assert "--overwrite" in capsys.readouterr().err


def test_truncated_tile_image_is_named_and_its_objects_fall_back_or_end_unreadable(
        tmp_path, ray_local, capsys):
    pattern = write_coadd(tmp_path / "coadd")
    tract, patch = A.split("|")
    bad = tmp_path / "coadd" / tract / f"calexp-HSC-R-{patch}.fits"
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 3])  # headers intact, pixels cut short
    out = str(tmp_path / "shards")
    assert main(["cutout", _catalog(tmp_path / "cat.parquet"), pattern, "--out", out,
                 "--band-names", "G,R,I", "--id-col", "ID"]) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert "unreadable tile" in captured.err and str(bad) in captured.err
    counts = json.loads(captured.out)["counts"]
    assert counts["cutouts"] + counts["missing"] == 10 and counts["unreadable"] >= 1
    rows, missing = _read_output(out)
    assert missing["a_centre"] == "unreadable"  # on tile A alone
    assert rows["masked_fallback"]["tile"] == B  # A was its best tile: cut from B instead
    assert missing["overlap_a"] == "unreadable"  # too near B's edge: A's reason is kept
    summary = json.loads(read_bytes(out + "/_cutout.json"))
    assert any(str(bad) in line for line in summary["unreadable_tiles"])


def test_cutouts_on_s3(tmp_path, s3_bucket, ray_local, capsys):
    write_coadd(tmp_path / "coadd")
    fs, _ = filesystem(s3_bucket)
    fs.put(str(tmp_path / "coadd"), f"{s3_bucket[5:]}/coadd", recursive=True)
    fs.put(_catalog(tmp_path / "cat.parquet"), f"{s3_bucket[5:]}/cat.parquet")
    out = f"{s3_bucket}/shards"
    assert main(["cutout", f"{s3_bucket}/cat.parquet",
                 f"{s3_bucket}/coadd/*/calexp-HSC-{{band}}-*.fits", "--out", out,
                 "--band-names", "G,R,I", "--id-col", "ID", "--pixels", "float16"]) == 0
    assert json.loads(capsys.readouterr().out)["counts"]["cutouts"] == 5
    fs.invalidate_cache()
    assert {parquet_info(u).image_dtype for u in list_shards(out)} == {"float16"}
    _check(out, tmp_path / "coadd", float16=True)


def test_local_output_matches_expectations(tmp_path, ray_local, capsys):
    pattern = write_coadd(tmp_path / "coadd")
    out = str(tmp_path / "shards")
    assert main(["cutout", _catalog(tmp_path / "cat.parquet"), pattern, "--out", out,
                 "--band-names", "G,R,I", "--bands", "g,r,i", "--id-col", "ID",
                 "--shard-size", "2"]) == 0  # tasks work 2 rows at a time
    capsys.readouterr()
    _check(out, tmp_path / "coadd")
    assert max(len(read_shard(u)["object_id"]) for u in list_shards(out)) == 2
    assert parquet_info(list_shards(out)[0]).pixel_scale == 0.168


def test_resample_reprojects_other_pixel_scales(tmp_path, ray_local, capsys):
    pytest.importorskip("reproject")
    from astropy.io import fits

    w = tile_wcs(A)
    w.wcs.cdelt = [-0.2 / 3600, 0.2 / 3600]
    yy, xx = np.mgrid[:200, :200]
    blob = 10.0 * np.exp(-((xx - 100.0) ** 2 + (yy - 100.0) ** 2) / (2 * 2.0**2))
    for band in BANDS:
        (tmp_path / "img").mkdir(exist_ok=True)
        fits.PrimaryHDU(blob.astype(">f4"), header=w.to_header()).writeto(
            tmp_path / "img" / f"c-{band}.fits")
    sky = w.pixel_to_world(100.0, 100.0)
    pq.write_table(pa.table({"object_id": [1], "ra": [sky.ra.deg], "dec": [sky.dec.deg]}),
                   tmp_path / "cat.parquet")
    args = ["cutout", str(tmp_path / "cat.parquet"), str(tmp_path / "img" / "c-{band}.fits"),
            "--band-names", "G,R,I"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 2
    assert "--resample" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "b"), "--resample"]) == 0
    capsys.readouterr()
    batch = read_shard(list_shards(str(tmp_path / "b"))[0])
    img = batch["image"][0, 1]
    assert img.sum() == pytest.approx(blob.sum(), rel=0.01)  # flux conserved
    peak = np.unravel_index(np.argmax(img), img.shape)
    assert peak in {(31, 31), (31, 32), (32, 31), (32, 32)}  # the object at the centre


def test_positions_off_the_sky_end_missing_and_are_named(tmp_path, ray_local, capsys):
    pattern = write_coadd(tmp_path / "coadd")
    out = tmp_path / "shards"
    cat = _catalog(tmp_path / "cat.parquet", off_sky=True)
    assert main(["cutout", cat, pattern, "--out", str(out), "--band-names", "G,R,I",
                 "--id-col", "ID", "--ra-col", "RA", "--dec-col", "DEC"]) == 0
    captured = capsys.readouterr()
    counts = json.loads(captured.out)["counts"]
    assert counts["catalog_rows"] == 12 and counts["off_sky"] == 2
    assert counts["cutouts"] + counts["missing"] == 12
    rows, missing = _read_output(str(out))
    assert missing["ra_wrapped"] == "off_sky" and missing["dec_95"] == "off_sky"
    assert "ra_wrapped" not in rows and "a_centre" in rows
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and "2 row(s) have a position off the sky" in err[0]
    assert "cat.parquet" in err[0] and "ra_wrapped" in err[0]


def test_band_images_that_cannot_be_read_or_scaled_are_named(tmp_path):
    """A zero-byte band, a zero-point that is not a number or is no survey's (it would scale
    every stamp to nothing), and a FLUXMAG0 that is not positive: one line naming the file."""
    from astropy.io import fits

    (tmp_path / "empty.fits").write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.fits: not a readable FITS image"):
        coadd.read_band_image(str(tmp_path / "empty.fits"))
    for key, value, why in (("MAGZERO", "abc", "is not a number"),
                            ("MAGZERO", 1e308, "outside 10-45"),
                            ("FLUXMAG0", -5.0, "must be a positive number")):
        hdu = fits.PrimaryHDU(np.zeros((8, 8), np.float32), header=tile_wcs(A).to_header())
        hdu.header[key] = value
        url = str(tmp_path / f"{key}.fits")
        hdu.writeto(url, overwrite=True)
        with pytest.raises(ValueError, match=rf"{key}\.fits: header {key} = .*{why}"):
            coadd.read_band_image(url)
    hdu.header["FLUXMAG0"] = 10 ** (0.4 * 27.0)
    hdu.writeto(url, overwrite=True)
    assert coadd.read_band_image(url).zeropoint == pytest.approx(27.0)
    # FLUXMAG0 = 0 says "not known": the primary header's MAGZERO is used, as before the check
    hdu.header["FLUXMAG0"] = 0
    fits.HDUList([fits.PrimaryHDU(header=fits.Header([("MAGZERO", 27.5)])),
                  fits.ImageHDU(hdu.data, hdu.header)]).writeto(url, overwrite=True)
    assert coadd.read_band_image(url).zeropoint == pytest.approx(27.5)


def _rewrite(path, change) -> None:
    """Rewrite a band image through ``change(hdul)``."""
    from astropy.io import fits

    with fits.open(path) as hdul:
        hdul = change(fits.HDUList([h.copy() for h in hdul]))
    hdul.writeto(path, overwrite=True)


def test_headers_that_are_no_wcs_are_one_line_naming_the_file(tmp_path):
    """wcslib's refusals (an unknown projection, a singular matrix) name the file in one line,
    without wcslib's C source lines; a distortion that cannot be inverted likewise."""
    pattern = write_coadd(tmp_path / "coadd")
    tract, patch = A.split("|")
    band = tmp_path / "coadd" / tract / f"calexp-HSC-R-{patch}.fits"
    for cards, why in (({"CTYPE1": "RA---XYZ", "CTYPE2": "DEC--XYZ"}, "Unrecognized projection"),
                       ({"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "PC1_1": 0.0,
                         "PC2_2": 0.0}, "matrix is singular")):
        _rewrite(band, lambda h, cards=cards: (h[1].header.update(cards), h)[1])
        with pytest.raises(ValueError) as err:
            coadd.read_band_image(str(band))
        assert str(err.value).startswith(f"{band}: invalid WCS in the image header (")
        assert why in str(err.value) and "\n" not in str(err.value)
        assert "wcs.c" not in str(err.value)
    write_coadd(tmp_path / "sip")
    sip = {"CTYPE1": "RA---TAN-SIP", "CTYPE2": "DEC--TAN-SIP", "A_ORDER": 3, "B_ORDER": 3,
           "A_3_0": 3e-4, "B_0_3": 3e-4, "A_2_0": 1e-2}
    for b in BANDS:
        _rewrite(tmp_path / "sip" / tract / f"calexp-HSC-{b}-{patch}.fits",
                 lambda h: (h[1].header.update(sip), h)[1])
    tiles, _ = coadd.discover_tiles(str(tmp_path / "sip" / tract / "calexp-HSC-{band}-*.fits"),
                                    BANDS)
    with pytest.raises(ValueError, match=r"calexp-HSC-R-.*: the WCS's distortion \(SIP/TPV\) "
                                         "cannot be inverted"):
        check_tiles(tiles, CutoutConfig("c.csv", pattern, "o"))


def test_out_holding_the_inputs_is_refused_before_anything_is_deleted(tmp_path, capsys):
    pattern = write_coadd(tmp_path / "coadd")
    cat = _catalog(tmp_path / "cat.parquet")
    lone = tmp_path / "coadd" / "7777"  # the G image of an incomplete tile, alone here
    lone.mkdir()
    (lone / "calexp-HSC-G-7777-1,1.fits").write_bytes(
        (tmp_path / "coadd" / "9813" / "calexp-HSC-G-9813-3,1.fits").read_bytes())
    before = sorted(p.name for p in tmp_path.rglob("*"))
    for out in (tmp_path, tmp_path / "coadd", lone):
        assert main(["cutout", cat, pattern, "--out", str(out), "--overwrite",
                     "--band-names", "G,R,I", "--id-col", "ID"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "the input lies inside --out" in err[0]
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    assert main(["cutout", cat, pattern, "--out", str(tmp_path / "o"), "--band-names", "G,R,R",
                 "--id-col", "ID"]) == 2
    assert "--band-names G,R,R: each band once" in capsys.readouterr().err


def test_a_corrupt_compressed_tile_is_unreadable_and_a_run_with_no_cutout_fails(
        tmp_path, ray_local, capsys):
    """A tile-compressed image whose compressed bytes are damaged (zlib's error) counts its
    rows as unreadable and names the tile; when no row can be cut the run fails in one line,
    its _missing.parquet and _cutout.json written."""
    from astropy.io import fits

    pattern = write_coadd(tmp_path / "coadd")
    tract, patch = A.split("|")
    band = tmp_path / "coadd" / tract / f"calexp-HSC-R-{patch}.fits"
    _rewrite(band, lambda h: fits.HDUList([h[0], fits.CompImageHDU(
        h[1].data, header=h[1].header, compression_type="GZIP_1")]))
    data = bytearray(band.read_bytes())
    start, end = len(data) // 2, len(data) - 3000
    data[start:end] = np.random.default_rng(1).integers(0, 256, end - start, np.uint8).tobytes()
    band.write_bytes(bytes(data))
    out = str(tmp_path / "shards")
    cat = _catalog(tmp_path / "cat.parquet")
    assert main(["cutout", cat, pattern, "--out", out, "--band-names", "G,R,I",
                 "--id-col", "ID"]) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and str(band) in captured.err
    counts = json.loads(captured.out)["counts"]
    assert counts["unreadable"] >= 1 and counts["cutouts"] + counts["missing"] == 10
    only_a = str(tmp_path / "coadd" / tract / "calexp-HSC-{band}-" / "..").replace("/..", "")
    assert main(["cutout", cat, only_a + f"{patch}.fits", "--out", str(tmp_path / "none"),
                 "--band-names", "G,R,I", "--id-col", "ID"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"lensscan cutout: error: {cat}: no cutout was written")
    assert "unreadable" in err[-1] and "Traceback" not in "\n".join(err)
    assert (tmp_path / "none" / "_missing.parquet").exists()
