"""``lensscan bench --read-only``: Parquet decoding against raw reads of the same bytes."""

from __future__ import annotations

import os
import shutil
import time

from lensscan.bench.data import write_survey


def _drop_page_cache() -> bool:
    """Empty the OS page cache (Linux, root only) so the next read comes from the disk."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as fh:
            fh.write("3")
        return True
    except OSError:
        return False


def read_speed(n: int, workdir: str, cold: bool = False) -> dict:
    """Decode ``n`` cutouts from local Parquet vs reading the same files' raw bytes.

    Both passes read every shard whole; the Parquet pass also checks every row (status) and
    returns float32 (N, 3, 64, 64) arrays. With ``cold`` the page cache is emptied before each
    pass (root only), so both read from the disk; otherwise both read a warm cache.
    """
    from lensscan.io.parquet import read_parquet
    from lensscan.io.storage import list_shards

    src = os.path.join(workdir, "read")
    write_survey(src, n, shard_size=10_000)
    files = list_shards(src)
    size = sum(os.path.getsize(f) for f in files)
    for f in files:  # warm the page cache for both passes
        with open(f, "rb") as fh:
            while fh.read(1 << 24):
                pass
    dropped = cold and _drop_page_cache()
    t0 = time.perf_counter()
    for f in files:
        with open(f, "rb") as fh:
            while fh.read(1 << 24):
                pass
    raw = time.perf_counter() - t0
    if cold:
        _drop_page_cache()
    t0 = time.perf_counter()
    rows = sum(len(read_parquet(f)["image"]) for f in files)
    decoded = time.perf_counter() - t0
    shutil.rmtree(src, ignore_errors=True)
    return {"read_n": rows, "read_bytes": size, "cache": "cold" if dropped else "warm",
            "raw_read_mb_s": size / raw / 2**20,
            "parquet_read_mb_s": size / decoded / 2**20,
            "parquet_read_cutouts_s": rows / decoded,
            "parquet_over_raw": raw / decoded}
