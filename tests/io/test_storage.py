"""Storage URLs: local paths, file://, memory:// and s3:// on the test server."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow.dataset as pads
import pytest

from lensscan.errors import RESUME_HINT
from lensscan.io import storage
from lensscan.score import commit


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


ORDER = ["object_id", "ra", "dec", "score", "shard", "row", "status"]


def _rows(n: int = 20) -> dict:
    return {"object_id": np.arange(n), "ra": np.zeros(n), "dec": np.zeros(n),
            "score": np.full(n, 0.5, np.float32), "shard": np.full(n, "s", dtype=object),
            "row": np.arange(n), "status": np.full(n, "ok", dtype=object)}


def _readable(scores) -> int:
    """Rows of the scores folder as pyarrow's dataset reader and pandas see it."""
    n = pads.dataset(str(scores), format="parquet").to_table().num_rows
    assert len(pd.read_parquet(str(scores))) == n
    return n


def test_failed_atomic_write_removes_its_temporary_file(tmp_path):
    """A commit that fails after its temporary file exists (here the rename: a folder holds the
    part's name) leaves nothing behind, and the scores folder stays readable."""
    out = str(tmp_path / "out")
    commit.write_unit(out, "a", _rows(), ORDER)
    blocker = tmp_path / "out" / "scores" / "part-b.parquet"
    blocker.mkdir()
    (blocker / "keep").write_text("x")
    with pytest.raises(OSError):
        commit.write_unit(out, "b", _rows(), ORDER)
    shutil.rmtree(blocker)
    assert sorted(os.listdir(tmp_path / "out" / "scores")) == ["part-a.parquet"]
    assert _readable(tmp_path / "out" / "scores") == 20


def test_writer_killed_mid_write_leaves_readers_working(tmp_path):
    """A writer killed mid-write (SIGXFSZ: file size limit) cannot clean up; its partial
    temporary file is hidden (dot name), so dataset readers skip it."""
    out = str(tmp_path / "out")
    commit.write_unit(out, "a", _rows(), ORDER)
    target = str(tmp_path / "out" / "scores" / "part-b.parquet")
    code = ("import resource, signal\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_DFL)  # Python ignores it by default\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))\n"
            "from lensscan.io import storage\n"
            f"storage.write_bytes_atomic({target!r}, b'x' * 1_000_000)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert r.returncode == -signal.SIGXFSZ
    left = [p for p in os.listdir(tmp_path / "out" / "scores") if p != "part-a.parquet"]
    assert len(left) == 1 and left[0].startswith(".part-b.parquet.tmp-")  # the partial file
    assert _readable(tmp_path / "out" / "scores") == 20


def test_disk_full_names_the_file_and_cleans_up(tmp_path):
    """A write to a full filesystem (a 64 KiB tmpfs in a private mount namespace) raises one
    StorageError naming the file and removes its temporary file."""
    if not shutil.which("unshare"):
        pytest.skip("no unshare for a small full filesystem")
    full = tmp_path / "full"
    full.mkdir()
    code = ("import os, sys\n"
            "from lensscan.errors import StorageError\n"
            "from lensscan.io import storage\n"
            "try:\n"
            f"    storage.write_bytes_atomic({str(full / 'part-x.parquet')!r}, b'x' * 200_000)\n"
            "except StorageError as e:\n"
            f"    print(e); print(os.listdir({str(full)!r}))\n")
    prefix = ["unshare", "--mount"] + ([] if os.geteuid() == 0 else ["--map-root-user"])
    if subprocess.run([*prefix, "true"], capture_output=True).returncode:
        pytest.skip("no mount namespace here")
    r = subprocess.run([*prefix, "sh", "-c", f'mount -t tmpfs -o size=64k tmpfs "{full}" && '
                        f'exec "{sys.executable}" -c "$0"', code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    message, listing = r.stdout.strip().splitlines()
    assert message.startswith(str(full / "part-x.parquet") + ": cannot write (")
    assert "No space left on device" in message and message.endswith(RESUME_HINT)
    assert listing == "[]"


@pytest.mark.parametrize("code,storage_failure", [
    ("SlowDown", True), ("503", True), ("InternalError", True), ("500", True),
    ("PreconditionFailed", True),  # rewritten since it was listed: stop, and rerun
    ("InvalidRange", False),  # a footer that points past a truncated file's end: the file's
    ("NoSuchKey", False),  # a missing file: the file's
])
def test_an_object_stores_passing_refusals_stop_the_run_never_quarantine(code, storage_failure):
    """s3fs turns a throttled or failing request into an OSError (SlowDown: EBUSY, 500:
    EREMOTEIO, PreconditionFailed: EINVAL); quarantining the unit for it would lose good rows
    for good, since a rerun skips committed units."""
    from botocore.exceptions import ClientError
    from s3fs.errors import translate_boto_error

    from lensscan.io.storage import is_storage_failure

    exc = translate_boto_error(ClientError({"Error": {"Code": code, "Message": "m"}}, "GetObject"))
    assert is_storage_failure(exc) is storage_failure


def test_a_filesystem_that_cannot_be_reached_is_named():
    """fsspec's ftp:// connects when the filesystem is made: its socket error named no URL."""
    from lensscan.errors import StorageError
    from lensscan.io.storage import filesystem

    with pytest.raises(StorageError, match=r"ftp://127\.0\.0\.1:9/x: cannot open its filesystem"):
        filesystem("ftp://127.0.0.1:9/x")
