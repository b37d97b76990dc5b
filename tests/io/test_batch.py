"""The checked batch: every reader returns the schema of lensscan.io.batch, and rows that cannot
be read are quarantined with the reason."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support import make_batch

from lensscan.data.preprocess import Preprocessing
from lensscan.data.stream import ReadUnits, units_to_items
from lensscan.errors import ShardError
from lensscan.io import fits as fio
from lensscan.io.batch import COLUMNS, DTYPES, OK, id_is_null, ok_mask
from lensscan.io.parquet import batch_to_table, write_parquet
from lensscan.io.shards import Unit, plan_units, read_shard, read_unit
from lensscan.score import commit


def _bad_rows(n: int = 6) -> dict:
    """Rows with one problem each after the first two: NaN pixels, all zeros, RA off the sky,
    an id seen before."""
    batch = make_batch(n, seed=21)
    batch["image"][2, 1, 5, 5] = np.nan
    batch["image"][3] = 0.0
    batch["ra"][4] = 361.0
    batch["object_id"][5] = batch["object_id"][0]
    return batch


def _parquet(tmp_path) -> tuple[str, int, bool]:
    write_parquet(str(tmp_path / "s.parquet"), _bad_rows(), row_group_size=4)
    return str(tmp_path / "s.parquet"), 6, True


def _parquet_float16(tmp_path) -> tuple[str, int, bool]:
    """A shard whose pixels are stored as float16 (a plain fixed-size list)."""
    batch = _bad_rows()
    table = batch_to_table(batch)
    flat = pa.array(batch["image"].astype(np.float16).ravel(), pa.float16())
    table = table.set_column(table.schema.get_field_index("image"), "image",
                             pa.FixedSizeListArray.from_arrays(flat, 3 * 64 * 64))
    pq.write_table(table, tmp_path / "h.parquet", row_group_size=4)
    return str(tmp_path / "h.parquet"), 6, True


def _fits_shard(tmp_path) -> tuple[str, int, bool]:
    fio.write_fits(str(tmp_path / "s.fits"), _bad_rows())
    return str(tmp_path / "s.fits"), 6, True


def _fits_cube(tmp_path) -> tuple[str, int, bool]:
    fio.write_fits_cube(str(tmp_path / "c.fits"), make_batch(1, seed=22)["image"][0], 7, 1.0, 2.0)
    return str(tmp_path / "c.fits"), 1, False


def _npy(tmp_path) -> tuple[str, int, bool]:
    (tmp_path / "lenses").mkdir()
    np.save(tmp_path / "lenses" / "a.npy", make_batch(1, seed=23)["image"][0])
    return str(tmp_path / "lenses" / "a.npy"), 1, False


@pytest.mark.parametrize(("shard", "half"), [
    (_parquet, False), (_parquet_float16, True), (_fits_shard, False), (_fits_cube, False),
    (_npy, False)], ids=["parquet", "parquet-float16", "fits-shard", "fits-cube", "npy"])
def test_every_reader_returns_the_schema(tmp_path, shard, half):
    url, n, labelled = shard(tmp_path)
    for batch in (read_shard(url), *(read_unit(u, half) for u in plan_units(url, 4))):
        want = [c for c in COLUMNS if labelled or c != "label"]
        assert list(batch) == want  # exactly the schema's columns, in its order
        for col, values in batch.items():
            assert values.dtype in DTYPES[col], (col, values.dtype)
            assert len(values) == len(batch["row"])
        assert batch["image"].shape[1:] == (3, 64, 64)
    whole = read_shard(url)
    assert len(whole["row"]) == n and list(whole["row"]) == list(range(n))
    if half:
        assert read_unit(plan_units(url)[0], half=True)["image"].dtype == np.float16


def test_every_format_gives_the_same_statuses(tmp_path):
    """The same rows written as Parquet and as a FITS shard get the same status, row by row."""
    parquet = read_shard(_parquet(tmp_path)[0])["status"]
    fits = read_shard(_fits_shard(tmp_path)[0])["status"]
    assert list(parquet) == list(fits)
    assert list(ok_mask(parquet)) == [True, True, False, False, False, True]
    assert parquet[2] == "non_finite_pixels: 1 NaN/inf values"
    assert parquet[3] == "all_zero: every pixel is 0"
    assert parquet[4].startswith("invalid_coordinates: ra 361, dec ")
    assert parquet[5] == "ok"  # a repeated id: flagged by scoring, among the rows it scored


def test_extra_columns_follow_the_schema(tmp_path):
    batch = make_batch(3, seed=24)
    batch["kind"] = np.array(["lens", "ring", "none"], dtype=object)
    batch["psf_fwhm"] = np.full((3, 3), 0.7)
    write_parquet(str(tmp_path / "s.parquet"), batch)
    got = read_shard(str(tmp_path / "s.parquet"))
    assert list(got) == [*COLUMNS, "kind", "psf_fwhm"]
    assert list(got["kind"]) == ["lens", "ring", "none"] and got["psf_fwhm"].shape == (3, 3)


@pytest.mark.parametrize("id_kind", ["int", "string"])
@pytest.mark.parametrize("stage", ["raw", "model"])
def test_unreadable_unit_rows_carry_the_reason(tmp_path, id_kind, stage):
    (tmp_path / "bad.parquet").write_bytes(b"not a parquet file" * 100)
    unit = Unit(str(tmp_path / "bad.parquet"), "parquet", 4, 9, 0, 1, id_kind)
    with pytest.raises(ShardError) as err:
        read_unit(unit)
    (item,) = units_to_items([unit])
    batch = {k: np.array([v]) for k, v in item.items()}
    (rows,) = ReadUnits(Preprocessing().to_dict(), stage)(batch)
    assert list(rows["status"]) == [f"unreadable: {err.value.reason}"] * 5
    assert "not a readable Parquet file" in err.value.reason
    assert list(rows["row"]) == [4, 5, 6, 7, 8]
    assert id_is_null(rows["status"]).all() and not ok_mask(rows["status"]).any()
    assert list(rows["object_id"]) == ([None] * 5 if id_kind == "string" else [0] * 5)
    assert np.isnan(rows["ra"]).all() and np.isnan(rows["dec"]).all()
    assert not rows["image"].any()


@pytest.mark.parametrize("strings", [False, True])
def test_rejected_shard_rows_committed_with_the_reason(tmp_path, strings):
    order = ["object_id", "ra", "dec", "score", "score_m0", "shard", "row", "status"]
    out = str(tmp_path / "run")
    assert commit.write_rejected(out, "k", "s3://b/x.parquet", 3, "file not found", order,
                                 strings) == 3
    table = pq.read_table(commit.part_url(out, "k"))
    assert table.column_names == order
    assert table.to_pydict() == {
        "object_id": [None] * 3, "ra": [None] * 3, "dec": [None] * 3, "score": [None] * 3,
        "score_m0": [None] * 3, "shard": ["s3://b/x.parquet"] * 3, "row": [0, 1, 2],
        "status": ["unreadable: file not found"] * 3}
    assert str(table.schema.field("object_id").type) == ("string" if strings else "int64")
    assert OK not in table.column("status").to_pylist()
