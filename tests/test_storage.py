"""Storage URLs: local paths, file://, memory:// and s3:// on the test server."""

from __future__ import annotations

import pytest

from lensscan.io import storage


def test_local_and_file_urls_resolve_to_same_file(tmp_path):
    p = tmp_path / "a.bin"
    storage.write_bytes_atomic(str(p), b"xyz")
    assert storage.read_bytes(f"file://{p}") == b"xyz"
    assert storage.exists(str(p))
    assert not list(tmp_path.glob("*.tmp-*")), "temporary file left behind"


def test_list_shards_folder_glob_and_single_file(tmp_path):
    for name in ["b.parquet", "a.fits", "c.fits.gz", "x.npy", "notes.txt", "_manifest.json"]:
        (tmp_path / name).write_bytes(b"0")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.parquet").write_bytes(b"0")
    found = storage.list_shards(str(tmp_path))
    assert [p.split("/")[-1] for p in found] == ["a.fits", "b.parquet", "c.fits.gz", "d.parquet",
                                                 "x.npy"]
    assert storage.list_shards(str(tmp_path / "*.parquet")) == [str(tmp_path / "b.parquet")]
    assert storage.list_shards(str(tmp_path / "a.fits")) == [str(tmp_path / "a.fits")]


def test_list_shards_errors_name_the_url(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        storage.list_shards(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no cutout shards"):
        storage.list_shards(str(tmp_path / "empty"))


def test_memory_url():
    storage.write_bytes_atomic("memory://bucket/x/one.parquet", b"1")
    (found,) = storage.list_shards("memory://bucket/x")
    assert found.startswith("memory://") and found.endswith("/bucket/x/one.parquet")
    assert storage.read_bytes(found) == b"1"


def test_s3_uses_aws_endpoint_url(s3_bucket):
    url = f"{s3_bucket}/prefix/part-0.parquet"
    storage.write_bytes_atomic(url, b"abc")
    assert storage.read_bytes(url) == b"abc"
    assert storage.list_shards(f"{s3_bucket}/prefix/") == [url]
    assert storage.join(s3_bucket, "a", "b") == f"{s3_bucket}/a/b"
