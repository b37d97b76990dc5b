"""Catalogues in astronomers' conventions: IAU-style names checked against astropy, and FITS,
VOTable and Parquet files read back with astropy/pyarrow for units, UCDs and provenance."""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.io.votable import parse
from astropy.io.votable.ucd import check_ucd
from astropy.table import Table
from support import finish_output

from lensscan.catalog import formats
from lensscan.catalog.names import iau_names
from lensscan.catalog.provenance import provenance
from lensscan.cli import main
from lensscan.io import storage
from lensscan.score import commit

ORDER = ["object_id", "ra", "dec", "score", "score_m0", "shard", "row", "status"]
MANIFEST = {"lensscan_version": "0.1.0", "input": "s3://survey/cutouts/",
            "model": {"url": "default", "name": "default_model", "checksum": "ab" * 32},
            "fingerprint": "cd" * 32, "started": "2025-01-02T03:04:05Z",
            "finished": "2025-01-02T03:09:00Z", "threshold": 0.86, "top": None}


def _truncated(ra: float, dec: float) -> str:
    """The IAU name from astropy's sexagesimal string at 6 decimals, truncated by hand."""
    text = SkyCoord(ra * u.deg, dec * u.deg).to_string("hmsdms", sep="", precision=6, pad=True)
    r, d = text.split()
    return f"J{r[:r.index('.') + 3]}{d[:d.index('.') + 2]}"


def test_names_match_astropy_truncated():
    rng = np.random.default_rng(1)
    ra, dec = rng.uniform(0, 360, 2000), np.degrees(np.arcsin(rng.uniform(-1, 1, 2000)))
    names = iau_names(ra, dec)
    assert names == [_truncated(a, d) for a, d in zip(ra, dec, strict=True)]


@pytest.mark.parametrize(("ra", "dec", "name"), [
    (149.99920833333333, 2.2000833333333333, "J095959.81+021200.3"),  # exactly on boundaries
    (149.9999833, 2.0, "J095959.99+020000.0"),  # 09:59:59.996 truncates, never rounds up
    (359.99999999999, 0.0, "J235959.99+000000.0"),  # RA just below 24h stays below it
    (0.0, -0.00001, "J000000.00-000000.0"),  # south of the equator keeps its sign
    (0.0, 0.0, "J000000.00+000000.0"),
    (180.0, -89.99999999, "J120000.00-895959.9"),
    (10.684708, 41.26875, "J004244.32+411607.5"),  # M31 (truncated from 44.33, 07.50)
    (83.633083, -5.391111, "J053431.93-052327.9"),  # Dec 27.9996" truncates to 27.9
])
def test_name_edge_cases(ra, dec, name):
    assert iau_names([ra], [dec]) == [name]
    assert iau_names([ra], [dec], prefix="LENSSCAN") == [f"LENSSCAN {name}"]


def test_names_null_where_position_is_null():
    assert iau_names([None, 1.0, np.nan], [1.0, None, 1.0]) == [None, None, None]


def _output(tmp_path, n=12) -> str:
    out = str(tmp_path / "run")
    rng = np.random.default_rng(2)
    ra, dec = rng.uniform(0, 360, n), rng.uniform(-80, 80, n)
    ra[3] = np.nan  # an object without a position
    score = np.linspace(0.99, 0.1, n).astype(np.float32)
    rows = {"object_id": np.arange(n, dtype=np.int64), "ra": ra, "dec": dec, "score": score,
            "score_m0": score, "shard": np.full(n, "s.parquet", dtype=object),
            "row": np.arange(n), "status": np.full(n, "ok", dtype=object)}
    commit.write_unit(out, "u0", rows, ORDER)
    commit.finalize(out, ["u0"], 0.5, None)
    finish_output(out)
    commit.write_json(storage.join(out, commit.MANIFEST), MANIFEST)
    return out


def test_fits_has_units_ucds_and_provenance(tmp_path):
    out = _output(tmp_path)
    dest = str(tmp_path / "top.fits")
    assert main(["query", out, "--top", "5", "--format", "fits", "-o", dest,
                 "--name-prefix", "LENSSCAN"]) == 0
    t = Table.read(dest)
    assert t.colnames[:3] == ["rank", "object_id", "name"]
    assert t["ra"].unit == u.deg and t["dec"].unit == u.deg and t["score"].unit is None
    with fits.open(dest, checksum=True) as hdul:  # CHECKSUM/DATASUM verified on open
        head = hdul["LENSSCAN"].header
        assert "CHECKSUM" in head and "DATASUM" in head
        ucds = {head[f"TTYPE{k}"]: head[f"TUCD{k}"] for k in range(1, head["TFIELDS"] + 1)}
        assert ucds["object_id"] == "meta.id;meta.main"
        assert ucds["ra"] == "pos.eq.ra;meta.main" and ucds["dec"] == "pos.eq.dec;meta.main"
        assert ucds["score"] == ucds["score_m0"] == "stat.probability"
        assert ucds["rank"] == "meta.record"
        assert all(check_ucd(v, check_controlled_vocabulary=True) for v in ucds.values())
        assert head["MODEL"] == "default_model" and head["MODELSUM"] == "ab" * 32
        assert head["RUNID"] == "cd" * 32 and head["RUNSTART"] == MANIFEST["started"]
        assert head["RUNEND"] == MANIFEST["finished"] and head["LSVERS"] == "0.1.0"
        assert head["COMPLETE"] is True and head["THRESH"] == 0.86
        assert head["CREATOR"].startswith("lensscan ")
    ra = t["ra"].data.astype(float)
    dec = t["dec"].data.astype(float)
    want = [f"LENSSCAN {n}" if n else "" for n in iau_names(ra, dec)]
    shown = t["name"].filled("") if hasattr(t["name"], "filled") else t["name"]
    assert list(shown) == want and want[3] == ""  # object 3 has no position


def test_votable_has_units_ucds_and_infos(tmp_path):
    out = _output(tmp_path)
    dest = str(tmp_path / "near.xml")
    assert main(["query", out, "--top", "6", "--format", "votable", "-o", dest]) == 0
    vot = parse(dest)
    fields = {f.name: f for f in vot.get_first_table().fields}
    assert str(fields["ra"].unit) == "deg" and str(fields["dec"].unit) == "deg"
    assert fields["ra"].ucd == "pos.eq.ra;meta.main"
    assert fields["object_id"].ucd == "meta.id;meta.main"
    assert fields["score"].ucd == "stat.probability" and fields["score"].unit is None
    assert fields["name"].ucd == "meta.id" and "IAU" in fields["name"].description
    infos = {i.name: i.value for i in vot.resources[0].infos}
    assert infos["model_checksum"] == "ab" * 32 and infos["run_fingerprint"] == "cd" * 32
    assert infos["model_name"] == "default_model" and infos["run_started"] == MANIFEST["started"]
    t = vot.get_first_table().to_table()
    names = t["name"].filled("") if hasattr(t["name"], "filled") else t["name"]
    row3 = [i for i, oid in enumerate(t["object_id"]) if oid == 3]
    assert row3 and names[row3[0]] == ""  # no position: no name
    assert all(n.startswith("J") for k, n in enumerate(names) if k not in row3)


def test_cone_distance_in_arcsec_and_parquet_metadata(tmp_path):
    out = _output(tmp_path)
    dest = str(tmp_path / "cone.parquet")
    t0 = pq.read_table(storage.join(out, commit.CANDIDATES))
    ra, dec = t0.column("ra")[0].as_py(), t0.column("dec")[0].as_py()
    assert main(["query", out, "--cone", str(ra), str(dec), "5", "--format", "parquet",
                 "-o", dest]) == 0
    t = pq.read_table(dest)
    field = t.schema.field("distance_arcsec")
    assert field.metadata[b"unit"] == b"arcsec" and field.metadata[b"ucd"] == b"pos.angDistance"
    assert t.schema.field("ra").metadata[b"unit"] == b"deg"
    prov = json.loads(t.schema.metadata[b"lensscan.provenance"])
    assert prov["model_checksum"] == "ab" * 32 and prov["complete"] is True


def test_incomplete_output_says_so(tmp_path):
    out = _output(tmp_path)
    storage.remove(storage.join(out, commit.MANIFEST))
    prov = provenance(out)
    assert not prov.complete and prov.run_fingerprint and prov.model_checksum == "test"
    buf = formats._fits(pa.table({"ra": [1.0], "dec": [2.0]}), prov)
    head = fits.open(io.BytesIO(buf))[1].header
    assert head["COMPLETE"] is False and "MODEL" not in head


def test_fits_and_votable_on_s3(tmp_path, s3_bucket):
    out = _output(tmp_path)
    for fmt, name in (("fits", "top.fits"), ("votable", "top.xml")):
        url = f"{s3_bucket}/cat/{name}"
        assert main(["query", out, "--top", "4", "--format", fmt, "-o", url]) == 0
        blob = storage.read_bytes(url)
        t = Table.read(io.BytesIO(blob), format="fits" if fmt == "fits" else "votable")
        assert len(t) == 4 and t["ra"].unit == u.deg
        if fmt == "fits":
            assert fits.open(io.BytesIO(blob))[1].header["RUNID"] == "cd" * 32


def test_fits_header_percent_encodes_a_non_ascii_path_and_votable_refuses_a_cr(tmp_path):
    """A FITS header holds printable ASCII only: an output path in Unicode is written
    percent-encoded (RFC 3986) instead of refusing the catalogue. XML turns a CR into LF on
    reading, so an id holding one is refused for VOTable, not changed."""
    from urllib.parse import unquote

    out = _output(tmp_path / "rün 100%")
    dest = str(tmp_path / "u.fits")
    assert main(["query", out, "--top", "3", "--format", "fits", "-o", dest]) == 0
    with fits.open(dest) as hdul:
        value = hdul["LENSSCAN"].header["SCOREOUT"]
        assert value.isascii() and unquote(value) == out
    t = pa.table({"object_id": ["a\rb"], "score": [0.5]})
    with pytest.raises(ValueError, match="row 1 holds control characters"):
        formats.write(t, "votable", str(tmp_path / "cr.xml"), None)
    for char in ("\ufffe", "\uffff"):  # not XML 1.0 characters: the file would not parse
        t = pa.table({"object_id": ["a", f"x{char}"], "score": [0.5, 0.4]})
        with pytest.raises(ValueError, match="row 2 holds control characters or U.FFFE"):
            formats.write(t, "votable", str(tmp_path / "ff.xml"), None)


@pytest.mark.parametrize("fmt", ["fits", "votable"])
def test_an_integer_column_with_nulls_stays_integer(tmp_path, fmt):
    """Recovery ranks are null for known lenses not found: FITS and VOTable keep the column an
    integer with those rows null (TNULL / a null value), not floats with NaN."""
    t = pa.table({"known_id": ["a", "b"], "rank": pa.array([3, None], pa.int64())})
    dest = str(tmp_path / ("r.fits" if fmt == "fits" else "r.xml"))
    formats.write(t, fmt, dest, None)
    back = Table.read(dest, format="fits" if fmt == "fits" else "votable")
    assert back["rank"].dtype.kind == "i" and int(back["rank"][0]) == 3
    assert bool(np.ma.getmaskarray(back["rank"])[1]) and not np.ma.getmaskarray(back["rank"])[0]
