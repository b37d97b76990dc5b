"""Parquet shards: exact round trips, accepted variants and clear errors for bad input."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support import make_batch, s3_calls

from lensscan.errors import ShardError
from lensscan.io import parquet as pio
from lensscan.io.shards import plan_units, read_unit


def _assert_same(batch, got):
    np.testing.assert_array_equal(got["object_id"], batch["object_id"])
    np.testing.assert_array_equal(got["ra"], batch["ra"])
    np.testing.assert_array_equal(got["dec"], batch["dec"])
    np.testing.assert_array_equal(got["label"], batch["label"])
    assert got["image"].dtype == np.float32 and got["image"].shape == batch["image"].shape
    np.testing.assert_array_equal(got["image"], batch["image"])
    assert (got["status"] == "ok").all()


@pytest.mark.parametrize("where", ["local", "s3"])
def test_round_trip_exact(tmp_path, s3_bucket, where):
    batch = make_batch(300, seed=1)
    url = str(tmp_path / "s.parquet") if where == "local" else f"{s3_bucket}/c/s.parquet"
    pio.write_parquet(url, batch, row_group_size=128)
    info = pio.parquet_info(url)
    assert info.row_group_rows == (128, 128, 44) and info.bands == ("g", "r", "i")
    _assert_same(batch, pio.read_parquet(url))
    part = pio.read_parquet(url, [1, 2])  # one prefetched byte span on S3
    np.testing.assert_array_equal(part["image"], batch["image"][128:])
    np.testing.assert_array_equal(part["object_id"], batch["object_id"][128:])
    np.testing.assert_array_equal(part["row"], np.arange(128, 300))
    schema = pq.read_schema(str(tmp_path / "s.parquet")) if where == "local" else None
    if schema is not None:
        assert isinstance(schema.field("image").type, pa.FixedShapeTensorType)


def test_units_cover_every_row_once(tmp_path):
    batch = make_batch(300, seed=2)
    url = str(tmp_path / "s.parquet")
    pio.write_parquet(url, batch, row_group_size=64)
    units = plan_units(url, rows_per_unit=100)
    rows = np.concatenate([read_unit(u)["row"] for u in units])
    np.testing.assert_array_equal(rows, np.arange(300))
    ids = np.concatenate([read_unit(u)["object_id"] for u in units])
    np.testing.assert_array_equal(ids, batch["object_id"])


@pytest.mark.parametrize("dtype", [pa.float32(), pa.float16()])
def test_fixed_size_list_and_float16_accepted(tmp_path, dtype):
    batch = make_batch(10, seed=3)
    values = batch["image"].astype(np.float16 if dtype == pa.float16() else np.float32)
    flat = pa.array(values.reshape(-1), type=dtype)
    table = pa.table({"object_id": batch["object_id"],
                      "image": pa.FixedSizeListArray.from_arrays(flat, 3 * 64 * 64)})
    url = str(tmp_path / "f.parquet")
    pq.write_table(table, url)
    got = pio.read_parquet(url)
    assert got["image"].dtype == np.float32
    np.testing.assert_array_equal(got["image"], values.astype(np.float32))
    assert np.isnan(got["ra"]).all()


def test_float16_shards_half_the_bytes_clipped_not_infinite(tmp_path):
    batch = make_batch(20, seed=4)
    batch["image"][0, 1, 5, 5] = 1e6  # a saturated core: beyond float16's 65504
    batch["image"][1, 0, 0, 0] = np.nan  # stays NaN: the reader still quarantines the row
    full, half = str(tmp_path / "f32.parquet"), str(tmp_path / "f16.parquet")
    pio.write_parquet(full, batch)
    pio.write_parquet(half, batch, pixels="float16")
    assert pio.parquet_info(half).image_dtype == "float16"
    assert pio.parquet_info(full).image_dtype == "float32"
    sizes = [pq.ParquetFile(u).metadata.row_group(0).column(3).total_uncompressed_size
             for u in (full, half)]
    assert sizes[1] < 0.55 * sizes[0]
    got = pio.read_parquet(half)  # decoded as float32 by default, float16 with half=True
    assert got["image"].dtype == np.float32 and pio.read_parquet(half, half=True)[
        "image"].dtype == np.float16
    assert got["image"][0, 1, 5, 5] == 65504.0
    assert list(got["status"][:3]) == ["ok", "non_finite_pixels: 1 NaN/inf values", "ok"]
    ok = np.ones(20, bool)
    ok[:2] = False
    np.testing.assert_allclose(got["image"][ok], batch["image"][ok], rtol=2 ** -11, atol=1e-7)
    with pytest.raises(ValueError, match="pixels must be one of float32, float16"):
        pio.write_parquet(half, batch, pixels="int8")


def test_string_ids_and_null_coordinates(tmp_path):
    batch = make_batch(4, seed=4)
    batch["object_id"] = np.array(["a", "b", "c", "d"], dtype=object)
    batch["ra"] = np.array([1.0, np.nan, 3.0, 4.0])
    url = str(tmp_path / "s.parquet")
    pio.write_parquet(url, batch)
    got = pio.read_parquet(url)
    assert list(got["object_id"]) == ["a", "b", "c", "d"]
    assert np.isnan(got["ra"][1]) and got["ra"][2] == 3.0


def test_bad_rows_are_flagged_not_dropped(tmp_path):
    batch = make_batch(6, seed=5)
    batch["image"][1, 0, 5, 5] = np.nan
    batch["image"][2, 2, 0, 0] = np.inf
    batch["image"][3] = 0.0
    batch["object_id"][5] = batch["object_id"][0]
    url = str(tmp_path / "bad.parquet")
    pio.write_parquet(url, batch)
    got = pio.read_parquet(url)
    assert len(got["status"]) == 6
    assert got["status"][0] == "ok" and got["status"][4] == "ok"
    assert got["status"][1].startswith("non_finite_pixels: 1")
    assert got["status"][2].startswith("non_finite_pixels: 1")
    assert got["status"][3].startswith("all_zero")
    assert got["status"][5] == "ok"  # a repeated id is scoring's to flag, after the model


def test_null_image_and_missing_id_flagged(tmp_path):
    images = make_batch(3)["image"]
    arr = pa.FixedShapeTensorArray.from_numpy_ndarray(images)
    storage_arr = arr.storage
    masked = pa.FixedSizeListArray.from_arrays(storage_arr.values, 12288,
                                               mask=pa.array([False, True, False]))
    table = pa.table({"object_id": pa.array([1, 2, None], pa.int64()), "image": masked})
    url = str(tmp_path / "n.parquet")
    pq.write_table(table, url)
    got = pio.read_parquet(url)
    assert list(got["status"]) == ["ok", "null_image", "missing_object_id"]
    assert list(got["object_id"]) == [1, 2, None]  # a null id stays null, never 0


def test_wrong_shape_named(tmp_path):
    flat = pa.array(np.zeros(2 * 4 * 64 * 64, np.float32))
    table = pa.table({"object_id": [1, 2],
                      "image": pa.FixedSizeListArray.from_arrays(flat, 4 * 64 * 64)})
    url = str(tmp_path / "shape.parquet")
    pq.write_table(table, url)
    with pytest.raises(ShardError, match=r"shape\.parquet: column 'image' holds 16384 values"):
        pio.read_parquet(url)


def test_wrong_tensor_shape_named(tmp_path):
    arr = pa.FixedShapeTensorArray.from_numpy_ndarray(np.zeros((2, 3, 32, 32), np.float32))
    url = str(tmp_path / "t.parquet")
    pq.write_table(pa.table({"object_id": [1, 2], "image": arr}), url)
    with pytest.raises(ShardError, match=r"t\.parquet: .*tensor shape \(3, 32, 32\)"):
        pio.parquet_info(url)


def test_missing_column_named(tmp_path):
    url = str(tmp_path / "noid.parquet")
    pq.write_table(pa.table({"x": [1]}), url)
    with pytest.raises(ShardError, match=r"noid\.parquet: missing required column 'object_id'"):
        pio.parquet_info(url)


def test_bad_band_metadata_named(tmp_path):
    url = str(tmp_path / "bands.parquet")
    pio.write_parquet(url, make_batch(2), bands=("g", "r"))
    with pytest.raises(ShardError, match=r"bands\.parquet: metadata lensscan.bands names 2"):
        pio.parquet_info(url)


def test_truncated_and_garbage_files_named(tmp_path):
    good = tmp_path / "good.parquet"
    pio.write_parquet(str(good), make_batch(20))
    data = good.read_bytes()
    trunc = tmp_path / "trunc.parquet"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(ShardError, match=r"trunc\.parquet: not a readable Parquet file"):
        pio.read_parquet(str(trunc))
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"hello world, not parquet")
    with pytest.raises(ShardError, match=r"junk\.parquet: not a readable Parquet file"):
        pio.parquet_info(str(junk))
    with pytest.raises(ShardError, match=r"absent\.parquet: file not found"):
        pio.parquet_info(str(tmp_path / "absent.parquet"))


def _pyarrow_images(url):
    images, _, _ = pio.decode_images(url, pq.read_table(url).column("image"))
    return images


@pytest.mark.parametrize("version", ["1.0", "2.0"])
def test_plain_page_fast_path_matches_pyarrow(tmp_path, version):
    from lensscan.io import plainpages

    batch = make_batch(200, seed=11)
    table = pio.batch_to_table(batch)
    url = str(tmp_path / f"v{version}.parquet")
    # several pages per row group (64 KiB pages, 4 cutouts each) and a short last row group
    pq.write_table(table, url, row_group_size=64, compression="none", use_dictionary=False,
                   data_page_version=version, data_page_size=1 << 16)
    pf = pq.ParquetFile(url)
    assert plainpages.plan(pf, [0, 1, 2, 3]) is not None  # the fast path is taken
    got = pio.read_parquet(url)
    np.testing.assert_array_equal(got["image"], _pyarrow_images(url))
    _assert_same(batch, got)
    part = pio.read_parquet(url, [1, 2])
    np.testing.assert_array_equal(part["image"], batch["image"][64:192])
    np.testing.assert_array_equal(part["row"], np.arange(64, 192))


def test_compressed_image_column_takes_the_pyarrow_path(tmp_path):
    from lensscan.io import plainpages

    batch = make_batch(40, seed=12)
    url = str(tmp_path / "z.parquet")
    pq.write_table(pio.batch_to_table(batch), url, compression="zstd", row_group_size=16)
    assert plainpages.plan(pq.ParquetFile(url), [0, 1, 2]) is None
    _assert_same(batch, pio.read_parquet(url))


def test_corrupt_image_page_named(tmp_path):
    url = tmp_path / "bad.parquet"
    pio.write_parquet(str(url), make_batch(20), row_group_size=10)
    pf = pq.ParquetFile(str(url))
    leaf = [pf.schema.column(i).path for i in range(len(pf.schema))].index("image.list.element")
    offset = pf.metadata.row_group(1).column(leaf).data_page_offset
    data = bytearray(url.read_bytes())
    data[offset:offset + 8] = b"\x15\x04\x15\xfe\xff\xff\xff\x0f"  # header: page size 2**31
    url.write_bytes(bytes(data))
    with pytest.raises(ShardError, match=r"bad\.parquet: corrupt image data \(row group 1"):
        pio.read_parquet(str(url))
    np.testing.assert_array_equal(pio.read_parquet(str(url), [0])["row"], np.arange(10))


def _parquet_bytes(table: pa.Table, rows_per_group: int, pad: int = 0) -> bytes:
    """``table`` as Parquet bytes, uncompressed and without dictionaries (the size depends on
    the layout only), with ``pad`` bytes of metadata in the footer."""
    sink = pa.BufferOutputStream()
    with pq.ParquetWriter(sink, table.schema, compression="none", use_dictionary=False) as w:
        w.write_table(table, row_group_size=rows_per_group)
        w.add_key_value_metadata({"pad": "x" * pad})  # in the footer, byte for byte
    return sink.getvalue().to_pybytes()


def _same_size(tmp_path, a, a_rows: int, b, b_rows: int) -> tuple[bytes, bytes]:
    """Batches ``a`` and ``b`` as Parquet files of one size, in row groups of ``a_rows``
    and ``b_rows`` rows (the smaller one padded in its footer)."""
    files = []
    for k, (batch, rows) in enumerate([(a, a_rows), (b, b_rows)]):
        pio.write_parquet(str(tmp_path / f"{k}.parquet"), batch)  # lensscan's schema
        table = pq.read_table(str(tmp_path / f"{k}.parquet"))
        files.append([table, rows, _parquet_bytes(table, rows)])
    small, big = sorted(files, key=lambda f: len(f[2]))
    for pad in range(max(0, len(big[2]) - len(small[2]) - 64), len(big[2]) - len(small[2]) + 1):
        small[2] = _parquet_bytes(small[0], small[1], pad)  # the pad's framing takes bytes too
        if len(small[2]) == len(big[2]):
            return files[0][2], files[1][2]
    raise AssertionError("no padding gives the same size")


def test_remote_footer_read_once_per_version(tmp_path, s3_bucket):
    """A unit of a shard on object storage costs one GET (its rows) once this process has read
    the shard's footer; a shard rewritten with the same size but other row groups is read with
    its new footer, never the kept one."""
    from lensscan.data.stream import plan_survey
    from lensscan.io import footers, storage

    url = f"{s3_bucket}/f/s.parquet"
    old, new = make_batch(60, seed=4), make_batch(60, seed=5, start_id=1000)
    first, second = _same_size(tmp_path, old, 20, new, 30)
    assert len(first) == len(second)
    storage.write_bytes_atomic(url, first)
    footers.clear()
    with s3_calls(url) as calls:
        units = plan_survey(f"{s3_bucket}/f/", rows_per_unit=20).units
        got = [read_unit(u) for u in units]
    assert len(units) == 3 and calls["GetObject"] == 1 + 3, calls
    np.testing.assert_array_equal(np.concatenate([g["image"] for g in got]), old["image"])

    # the same URL and size, another ETag and other row groups: the kept footer would decode
    # it wrongly; the planner's fresh listing has the new ETag, so it is not used
    storage.write_bytes_atomic(url, second)
    units = plan_survey(f"{s3_bucket}/f/", rows_per_unit=20).units
    got = [read_unit(u) for u in units]
    assert [u.rows for u in units] == [30, 30]
    np.testing.assert_array_equal(np.concatenate([g["object_id"] for g in got]),
                                  new["object_id"])
    np.testing.assert_array_equal(np.concatenate([g["image"] for g in got]), new["image"])


def test_repeated_columns_and_ids_that_are_not_utf8_are_named(tmp_path):
    """Two columns of one name (which is meant cannot be told) refuse the file; string ids
    that are not UTF-8 refuse the unit, naming the column, instead of stopping the run."""
    batch = make_batch(4, seed=3)
    table = pio.batch_to_table(batch)
    twice = pa.Table.from_arrays([*table.columns, table.column("ra")],
                                 names=[*table.column_names, "ra"])
    pq.write_table(twice, tmp_path / "twice.parquet")
    with pytest.raises(ShardError, match=r"twice\.parquet: columns \['ra'\] appear more than"):
        pio.parquet_info(str(tmp_path / "twice.parquet"))
    ids = pa.array([b"ok1", b"\xff\xfe", b"ok2", b"ok3"], pa.binary()).view(pa.string())
    bad = table.set_column(table.column_names.index("object_id"), "object_id", ids)
    pq.write_table(bad, tmp_path / "utf8.parquet")
    with pytest.raises(ShardError, match=r"utf8\.parquet: column 'object_id' cannot be read"):
        pio.read_parquet(str(tmp_path / "utf8.parquet"))


def test_float_labels_are_classes_or_named_by_row(tmp_path):
    """A float label column (pandas writes one when a label is missing): NaN is unknown (-1),
    whole numbers are classes, 0.7 is refused naming its row (it quarantined the whole shard in
    a message naming none); a class that is not 1, 0 or -1 quarantines its row."""
    from lensscan.io.batch import flag_labels
    from lensscan.io.shards import read_shard

    b = make_batch(4, seed=1)
    table = pa.table({"object_id": b["object_id"], "label": [1.0, float("nan"), 0.0, 2.0],
                      "image": pa.FixedShapeTensorArray.from_numpy_ndarray(b["image"])})
    pq.write_table(table, tmp_path / "f.parquet")
    got = read_shard(str(tmp_path / "f.parquet"))
    assert got["label"].tolist() == [1, -1, 0, 2]
    assert got["status"].tolist() == ["ok"] * 4  # scoring keeps every row: labels are not read
    flagged = flag_labels(got)["status"]  # what the readers of labelled data see
    assert flagged[3].startswith("invalid_label: 2 is not a class") and got["status"][3] == "ok"
    assert flagged[:3].tolist() == ["ok"] * 3
    from lensscan.io import fits as fio

    fio.write_fits(str(tmp_path / "l.fits"), {**got, "label": np.array([1, -1, 0, 1])})
    assert read_shard(str(tmp_path / "l.fits"))["label"].tolist() == [1, -1, 0, 1]  # not 255
    pq.write_table(table.set_column(1, "label", pa.array([1.0, 0.7, 0.0, 1.0])),
                   tmp_path / "g.parquet")
    with pytest.raises(ShardError, match=r"g.parquet.*column 'label' of row 1 \(0-based\) is "
                                         r"0.7, not a class"):
        read_shard(str(tmp_path / "g.parquet"))
