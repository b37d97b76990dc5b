"""Catalogues in every format: CSV, Parquet, FITS (big-endian) and VOTable, any column names."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from astropy.table import Table

from lensscan.io.catalogs import Columns, read_catalog

IDS = np.array([11, 12, 13], dtype=np.int64)
RA = np.array([150.1, 150.2, 150.3])
DEC = np.array([2.1, 2.2, 2.3])


def _write(path, fmt: str, names=("object_id", "ra", "dec"), ids=IDS) -> str:
    data = {names[0]: ids, names[1]: RA, names[2]: DEC}
    if fmt == "csv":
        with open(path, "w") as fh:
            fh.write(",".join(names) + "\n")
            for row in zip(ids, RA, DEC, strict=True):
                fh.write(",".join(str(v) for v in row) + "\n")
    elif fmt == "parquet":
        pq.write_table(pa.table({k: pa.array(list(v)) for k, v in data.items()}), path)
    else:
        Table(data).write(path, format="fits" if fmt == "fits" else "votable")
    return str(path)


@pytest.mark.parametrize("fmt,ext", [("csv", "csv"), ("parquet", "parquet"), ("fits", "fits"),
                                     ("votable", "xml")])
def test_every_format_reads_the_same(tmp_path, fmt, ext):
    cat = read_catalog(_write(tmp_path / f"c.{ext}", fmt))
    assert cat["object_id"].tolist() == IDS.tolist()
    np.testing.assert_array_equal(cat["ra"], RA)
    np.testing.assert_array_equal(cat["dec"], DEC)
    assert cat["ra"].dtype.isnative and cat["ra"].dtype == np.float64


def test_fits_big_endian_other_names_and_string_ids(tmp_path):
    path = tmp_path / "c.fits"
    Table({"NAME": np.array(["a", "b", "c"]), "RA_DEG": RA.astype(">f8"),
           "DEC_DEG": DEC.astype(">f8"), "PSF_FWHM": np.full((3, 3), 0.7, ">f4")}).write(path)
    cat = read_catalog(str(path), Columns("name", "ra_deg", "dec_deg"))
    assert cat["object_id"].tolist() == ["a", "b", "c"]
    assert cat["dec"].dtype.isnative and cat["psf_fwhm"].shape == (3, 3)
    assert cat["psf_fwhm"].dtype == np.float32


def test_per_band_psf_columns(tmp_path):
    path = tmp_path / "c.parquet"
    pq.write_table(pa.table({"object_id": IDS, "ra": RA, "dec": DEC, "psf_fwhm_g": [0.9] * 3,
                             "psf_fwhm_r": [0.8] * 3, "psf_fwhm_i": [0.7] * 3}), path)
    np.testing.assert_allclose(read_catalog(str(path))["psf_fwhm"][0], [0.9, 0.8, 0.7])
    # a value beyond float32 became inf in the shards, with a warning naming no row
    pq.write_table(pa.table({"object_id": IDS, "ra": RA, "dec": DEC, "psf_fwhm_g": [0.9] * 3,
                             "psf_fwhm_r": [0.8, 1e300, 0.8], "psf_fwhm_i": [0.7] * 3}), path)
    with pytest.warns(UserWarning, match=r"c.parquet: 1 rows' psf_fwhm_<band> values are beyond "
                                         r"float32 \(first: row 2, 1e\+300\); kept as unknown"):
        psf = read_catalog(str(path))["psf_fwhm"]
    assert np.isnan(psf[1, 1]) and np.isfinite(psf[[0, 2]]).all()


def test_bad_catalogues_are_refused(tmp_path):
    with pytest.raises(ValueError, match="no column 'ra'"):
        read_catalog(_write(tmp_path / "a.csv", "csv", names=("object_id", "x", "dec")))
    with pytest.raises(ValueError, match="appears 2 times"):
        read_catalog(_write(tmp_path / "b.csv", "csv", ids=np.array([1, 1, 2])))
    with pytest.raises(ValueError, match="must be .csv"):
        read_catalog(str(tmp_path / "c.txt"))


def test_ids_are_never_wrapped_or_rounded(tmp_path):
    """An id beyond int64 in a CSV (which parses the column as floats) is kept as typed; a
    uint64 id beyond 2**63 - 1 and a floating-point id column are refused, naming them."""
    (tmp_path / "big.csv").write_text("object_id,ra,dec\n12345678901234567890,150.1,2.1\n"
                                      "42,150.2,2.2\n")
    assert list(read_catalog(str(tmp_path / "big.csv"))["object_id"]) == [
        "12345678901234567890", "42"]
    assert read_catalog(_write(tmp_path / "a.csv", "csv"))["object_id"].dtype == np.int64
    (tmp_path / "gap.csv").write_text("object_id,ra,dec\n1,150.1,2.1\n,150.2,2.2\n")
    with pytest.raises(ValueError, match="gap.csv: object ids must not be empty"):
        read_catalog(str(tmp_path / "gap.csv"))
    pq.write_table(pa.table({"object_id": pa.array([5, 2**63], pa.uint64()),
                             "ra": RA[:2], "dec": DEC[:2]}), tmp_path / "u.parquet")
    with pytest.raises(ValueError, match=r"u.parquet: column 'object_id' row 2 holds the "
                                         r"unsigned id 9223372036854775808, beyond 2\*\*63 - 1"):
        read_catalog(str(tmp_path / "u.parquet"))
    pq.write_table(pa.table({"object_id": [1.5, 2.0], "ra": RA[:2], "dec": DEC[:2]}),
                   tmp_path / "f.parquet")
    with pytest.raises(ValueError, match="f.parquet: column 'object_id' holds floating-point"):
        read_catalog(str(tmp_path / "f.parquet"))


def test_broken_catalogues_are_one_line_naming_the_file(tmp_path):
    """Unparseable files, text that is not UTF-8, two columns of one name up to case, null ids
    in FITS and non-numeric PSF columns are refused naming the file (and row, column)."""
    bad = {"empty.csv": b"", "ragged.csv": b"object_id,ra,dec\n1,2\n3,4,5,6\n",
           "trunc.parquet": b"PAR1\x00\x00"}
    for name, data in bad.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ValueError, match=rf"{name}: not a readable \w+ catalogue"):
            read_catalog(str(tmp_path / name))
    (tmp_path / "u.csv").write_bytes(b"object_id,ra,dec\n\xff\xfe,10,1\nb,11,1\n")
    with pytest.raises(ValueError, match=r"u.csv: column 'object_id': row 1 is not UTF-8"):
        read_catalog(str(tmp_path / "u.csv"))
    (tmp_path / "d.csv").write_text("object_id,ra,RA,dec,Z,z\n1,10,11,1,0.5,20\n")
    with pytest.raises(ValueError, match=r"d.csv: column 'ra': two columns are named 'ra'"):
        read_catalog(str(tmp_path / "d.csv"))
    (tmp_path / "z.csv").write_text("object_id,ra,dec,Z,z\n1,10,1,0.5,20\n")
    assert read_catalog(str(tmp_path / "z.csv"))["object_id"].tolist() == [1]  # Z, z unused
    t = Table({"object_id": np.ma.masked_array([1, 2, 3], mask=[False, True, False]),
               "ra": RA, "dec": DEC})
    t.write(tmp_path / "m.fits")
    with pytest.raises(ValueError, match="object ids must not be empty"):
        read_catalog(str(tmp_path / "m.fits"))
    (tmp_path / "p.csv").write_text("object_id,ra,dec,psf_fwhm_g,psf_fwhm_r,psf_fwhm_i\n"
                                    "1,10,1,x,0.8,0.7\n")
    with pytest.raises(ValueError, match="p.csv: columns .* must hold numbers"):
        read_catalog(str(tmp_path / "p.csv"))


def test_csv_ids_are_read_as_typed_and_odd_columns_are_one_line(tmp_path):
    """CSV ids with leading zeros stay text (007 is not 7, and 7 and 007 are two objects);
    plain integers are int64; a repeated id is named as typed; array-valued positions and a
    PSF array of the wrong width are refused naming the column; a FITS text column that is not
    UTF-8 only matters if it is used."""
    (tmp_path / "z.csv").write_text("object_id,ra,dec\n 007,150.1,2.1\n0012 ,150.2,2.2\n"
                                    "7,150.3,2.3\n-0,150.4,2.4\n")
    assert read_catalog(str(tmp_path / "z.csv"))["object_id"].tolist() == [
        "007", "0012", "7", "-0"]  # trimmed, as typed
    (tmp_path / "i.csv").write_text("object_id,ra,dec\n-3,150.1,2.1\n0,150.2,2.2\n")
    ids = read_catalog(str(tmp_path / "i.csv"))["object_id"]
    assert ids.dtype == np.int64 and ids.tolist() == [-3, 0]
    (tmp_path / "r.csv").write_text("object_id,ra,dec\n12,150.1,2.1\n12,150.2,2.2\n")
    with pytest.raises(ValueError, match=r"r.csv: object id 12 appears 2 times"):
        read_catalog(str(tmp_path / "r.csv"))
    Table({"object_id": IDS, "ra": np.stack([RA, RA], 1), "dec": DEC}).write(tmp_path / "a.fits")
    with pytest.raises(ValueError, match=r"a.fits: column 'ra' holds arrays"):
        read_catalog(str(tmp_path / "a.fits"))
    pq.write_table(pa.table({"object_id": IDS, "ra": RA, "dec": DEC,
                             "psf_fwhm": [[0.6, 0.7]] * 3}), tmp_path / "p.parquet")
    with pytest.raises(ValueError, match=r"p.parquet: column 'psf_fwhm' holds 2 values a row"):
        read_catalog(str(tmp_path / "p.parquet"))
    t = Table({"object_id": IDS, "ra": RA, "dec": DEC,
               "name": np.array(["Abell 370 \u2013 arc".encode()] * 3)})
    t.write(tmp_path / "n.fits")
    assert read_catalog(str(tmp_path / "n.fits"))["object_id"].tolist() == IDS.tolist()
    t["name"] = np.array([b"\xff\xfe"] * 3)
    t.write(tmp_path / "bad.fits")
    assert read_catalog(str(tmp_path / "bad.fits"))["object_id"].tolist() == IDS.tolist()
    with pytest.raises(ValueError, match=r"bad.fits: column 'name': text that is not UTF-8"):
        read_catalog(str(tmp_path / "bad.fits"), Columns(id="name"))
