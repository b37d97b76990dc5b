"""FITS shards and single-object cubes, locally and over the S3 test server."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from support import make_batch

from lensscan.errors import ShardError
from lensscan.io import fits as fio
from lensscan.io.shards import plan_units, read_shard, read_unit


@pytest.mark.parametrize("where", ["local", "s3"])
def test_shard_round_trip_exact(tmp_path, s3_bucket, where):
    batch = make_batch(50, seed=11)
    url = str(tmp_path / "s.fits") if where == "local" else f"{s3_bucket}/f/s.fits"
    fio.write_fits(url, batch)
    info = fio.fits_info(url)
    assert info.num_rows == 50 and info.is_shard
    got = read_shard(url)
    np.testing.assert_array_equal(got["object_id"], batch["object_id"])
    np.testing.assert_array_equal(got["ra"], batch["ra"])
    np.testing.assert_array_equal(got["label"], batch["label"])
    assert got["image"].dtype == np.float32 and got["image"].dtype.isnative
    np.testing.assert_array_equal(got["image"], batch["image"])
    part = fio.read_fits(url, 10, 20)  # ranged (section) read
    np.testing.assert_array_equal(part["image"], batch["image"][10:20])
    np.testing.assert_array_equal(part["row"], np.arange(10, 20))


def test_units_of_fits_shard(tmp_path):
    batch = make_batch(45, seed=12)
    url = str(tmp_path / "s.fits")
    fio.write_fits(url, batch)
    units = plan_units(url, rows_per_unit=20)
    assert [(u.start, u.stop) for u in units] == [(0, 20), (20, 40), (40, 45)]
    got = np.concatenate([read_unit(u)["object_id"] for u in units])
    np.testing.assert_array_equal(got, batch["object_id"])


@pytest.mark.parametrize("where", ["local", "s3"])
def test_single_cube_with_and_without_header_id(tmp_path, s3_bucket, where):
    img = make_batch(1, seed=13)["image"][0]
    base = str(tmp_path) if where == "local" else f"{s3_bucket}/cubes"
    fio.write_fits_cube(f"{base}/obj1.fits", img, object_id=424242, ra=10.5, dec=-3.25)
    got = read_shard(f"{base}/obj1.fits")
    assert got["object_id"][0] == 424242 and got["ra"][0] == 10.5 and got["dec"][0] == -3.25
    np.testing.assert_array_equal(got["image"][0], img)
    # a cube as a cutout service returns it: no id in the header -> the file stem
    if where == "local":
        fits.PrimaryHDU(img.astype(">f4")).writeto(tmp_path / "J1234+5678.fits")
        got = read_shard(str(tmp_path / "J1234+5678.fits"))
        assert got["object_id"][0] == "J1234+5678"
        np.testing.assert_array_equal(got["image"][0], img)


def test_gzipped_fits(tmp_path):
    import gzip

    batch = make_batch(5, seed=14)
    fio.write_fits(str(tmp_path / "s.fits"), batch)
    (tmp_path / "s.fits.gz").write_bytes(gzip.compress((tmp_path / "s.fits").read_bytes()))
    got = read_shard(str(tmp_path / "s.fits.gz"))
    np.testing.assert_array_equal(got["image"], batch["image"])


def test_bad_fits_inputs_named(tmp_path):
    fits.PrimaryHDU(np.zeros((4, 64, 64), np.float32)).writeto(tmp_path / "bands.fits")
    with pytest.raises(ShardError, match=r"bands\.fits: image HDU has shape \(4, 64, 64\)"):
        read_shard(str(tmp_path / "bands.fits"))
    fio.write_fits(str(tmp_path / "ok.fits"), make_batch(30))
    data = (tmp_path / "ok.fits").read_bytes()
    (tmp_path / "trunc.fits").write_bytes(data[: len(data) // 3])
    with pytest.raises(ShardError, match=r"trunc\.fits: "):
        read_shard(str(tmp_path / "trunc.fits"))
    (tmp_path / "junk.fits").write_bytes(b"not a fits file at all" * 10)
    with pytest.raises(ShardError, match=r"junk\.fits: "):
        fio.fits_info(str(tmp_path / "junk.fits"))


def test_non_finite_rows_flagged(tmp_path):
    batch = make_batch(3, seed=15)
    batch["image"][2, 1, 3, 3] = np.nan
    fio.write_fits(str(tmp_path / "s.fits"), batch)
    got = read_shard(str(tmp_path / "s.fits"))
    assert list(got["status"][:2]) == ["ok", "ok"]
    assert got["status"][2].startswith("non_finite_pixels")


def test_labels_a_class_cannot_hold_are_named_and_compressed_cubes_read(tmp_path):
    """A LABEL of 300, 0.7 or NaN is no class: refused (as Parquet's cast refuses it), not
    wrapped to 44 or cut to 0. A tile-compressed cube, shorter on disk than its pixels, reads."""
    from astropy.table import Table

    batch = make_batch(3, seed=5)
    for value in (300, 0.7, np.nan):
        fio.write_fits(str(tmp_path / "l.fits"), batch)
        with fits.open(tmp_path / "l.fits") as hdul:
            objects = Table(hdul["OBJECTS"].data)
            objects["LABEL"] = np.array([1, value, 0], dtype=float)
            new = fits.HDUList([hdul[0].copy(), hdul["CUTOUTS"].copy(),
                                fits.table_to_hdu(objects)])
            new[2].name = "OBJECTS"
            new.writeto(tmp_path / "l.fits", overwrite=True)
        with pytest.raises(ShardError, match=rf"l\.fits: LABEL of row 1 \(0-based\) is {value:g}"):
            read_shard(str(tmp_path / "l.fits"))
    fio.write_fits(str(tmp_path / "pad.fits"), batch)  # complete data, final padding cut off
    with fits.open(tmp_path / "pad.fits") as hdul:
        last = len(hdul) - 1
        end = hdul.fileinfo(last)["datLoc"] + hdul[last].size
    data = (tmp_path / "pad.fits").read_bytes()
    assert end < len(data)
    (tmp_path / "nopad.fits").write_bytes(data[:end])
    assert fio.fits_info(str(tmp_path / "nopad.fits")).num_rows == 3
    (tmp_path / "short.fits").write_bytes(data[:end - 1])
    with pytest.raises(ShardError, match="truncated FITS file"):
        fio.fits_info(str(tmp_path / "short.fits"))
    cube = np.zeros((3, 64, 64), np.float32)
    cube[:, 30:34, 30:34] = 1.0  # compresses to far fewer bytes than its 48 KiB
    comp = fits.CompImageHDU(cube, compression_type="GZIP_1", quantize_level=0)
    fits.HDUList([fits.PrimaryHDU(), comp]).writeto(tmp_path / "c.fits")
    assert fio.fits_info(str(tmp_path / "c.fits")).num_rows == 1
    (unit,) = plan_units(str(tmp_path / "c.fits"), rows_per_unit=10)
    np.testing.assert_array_equal(read_unit(unit)["image"][0], cube)
