"""Turn a URL or path into an fsspec filesystem, list shards, and write files atomically.

Every input and output of lensscan goes through :func:`filesystem`. S3 credentials come from the
standard AWS chain; ``AWS_ENDPOINT_URL`` points S3 clients at any S3-compatible store.
"""

from __future__ import annotations

import io
import os
import posixpath
import uuid
from collections.abc import Iterable

import fsspec
from fsspec import AbstractFileSystem

#: File name endings of cutout shards, in the order they are tried.
SHARD_SUFFIXES = (".parquet", ".fits", ".fits.gz", ".fit", ".npy")


def _storage_options(protocol: str) -> dict:
    """Extra options for a protocol: only what the standard environment says."""
    if protocol in ("s3", "s3a"):
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            return {"client_kwargs": {"endpoint_url": endpoint}}
    return {}


def filesystem(url: str) -> tuple[AbstractFileSystem, str]:
    """Return ``(fs, path)`` for a URL or local path.

    Parameters
    ----------
    url : str
        ``/local/path``, ``file://...``, ``s3://bucket/key``, ``gs://...`` or ``memory://...``.
    """
    protocol = fsspec.core.split_protocol(str(url))[0] or "file"
    fs, path = fsspec.core.url_to_fs(str(url), **_storage_options(protocol))
    return fs, path


def is_local(url: str) -> bool:
    """True when ``url`` is a path on this machine."""
    protocol = fsspec.core.split_protocol(str(url))[0]
    return protocol in (None, "file", "local")


def unstrip(fs: AbstractFileSystem, path: str) -> str:
    """Turn a filesystem path back into a full URL (``s3://b/k``, or an absolute local path)."""
    proto = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    if proto in ("file", "local"):
        return path
    return fs.unstrip_protocol(path)


def absolute(url: str) -> str:
    """Local paths made absolute (Ray workers do not share the driver's working directory);
    object-store URLs unchanged."""
    url = str(url)
    if is_local(url):
        return os.path.abspath(url.removeprefix("file://"))
    return url


def join(url: str, *parts: str) -> str:
    """Join URL parts with ``/`` (works for local paths and object stores)."""
    url = str(url)
    if is_local(url):
        return os.path.join(url.removeprefix("file://"), *parts)
    return posixpath.join(url.rstrip("/"), *parts)


def shard_suffix(path: str) -> str | None:
    """The shard format suffix of ``path`` or None when it is not a shard."""
    low = path.lower()
    for suffix in SHARD_SUFFIXES:
        if low.endswith(suffix):
            return suffix
    return None


def list_shards(url: str, suffixes: Iterable[str] = SHARD_SUFFIXES) -> list[str]:
    """List shard URLs under a prefix, a glob, or a single file, sorted.

    Raises
    ------
    FileNotFoundError
        When nothing matching is found, naming the URL.
    """
    fs, path = filesystem(url)
    suffixes = tuple(suffixes)
    if any(ch in path for ch in "*?["):
        found = fs.glob(path)
    elif fs.isfile(path):
        found = [path]
    elif fs.isdir(path):
        found = fs.find(path)
    else:
        raise FileNotFoundError(f"{url}: no such file or folder")
    shards = sorted(
        p for p in found
        if p.lower().endswith(suffixes) and not posixpath.basename(p).startswith(("_", "."))
    )
    if not shards:
        raise FileNotFoundError(f"{url}: no cutout shards ({', '.join(suffixes)}) found")
    return [unstrip(fs, p) for p in shards]


def write_bytes_atomic(url: str, data: bytes) -> None:
    """Write ``data`` so that readers see either nothing or the whole file.

    Local files are written to a temporary name and renamed; an object store PUT of one object is
    already atomic.
    """
    fs, path = filesystem(url)
    if is_local(url):
        fs.makedirs(posixpath.dirname(path) or ".", exist_ok=True)
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    else:
        fs.pipe_file(path, data)


def ensure_empty(url: str, overwrite: bool = False) -> None:
    """Make sure the output folder ``url`` is empty: clear it when ``overwrite``, else refuse
    (``ValueError``) when it holds anything."""
    fs, path = filesystem(url)
    if fs.exists(path) and fs.ls(path):
        if not overwrite:
            raise ValueError(f"{url}: the output folder is not empty (--overwrite clears it)")
        fs.rm(path, recursive=True)
    if is_local(url):
        fs.makedirs(path, exist_ok=True)


def read_bytes(url: str) -> bytes:
    """Read a whole file."""
    fs, path = filesystem(url)
    return fs.cat_file(path)


def exists(url: str) -> bool:
    """True when the file or folder exists."""
    fs, path = filesystem(url)
    return fs.exists(path)


def pyarrow_filesystem(url: str):
    """A ``pyarrow.fs.FileSystem`` and path for ``url`` (for Ray Data and Ray Train storage)."""
    import pyarrow.fs as pafs

    fs, path = filesystem(url)
    if is_local(url):
        return pafs.LocalFileSystem(), path
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path


class SpanFile(io.RawIOBase):
    """A seekable binary file over a remote one that serves one prefetched byte span from memory.

    Parquet readers jump between the column chunks of a row group; on object storage each jump is
    a ranged GET. After :meth:`prefetch` (one GET for the rows a task needs), reads inside the
    span are memory copies and only reads outside it go to the underlying file.
    """

    def __init__(self, raw) -> None:
        super().__init__()
        self.raw, self.pos = raw, 0
        self.size = raw.size
        self.lo, self.buf = 0, memoryview(b"")

    def prefetch(self, lo: int, hi: int) -> None:
        self.raw.seek(lo)
        self.lo, self.buf = lo, memoryview(self.raw.read(hi - lo))

    def view(self, start: int, length: int) -> memoryview | None:
        """Zero-copy bytes [start, start + length) when they lie in the prefetched span."""
        a = start - self.lo
        if a >= 0 and a + length <= len(self.buf):
            return self.buf[a:a + length]
        return None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.pos, 2: self.size}[whence]
        self.pos = base + offset
        return self.pos

    def readinto(self, b) -> int:
        n = max(0, min(len(b), self.size - self.pos))
        got = self.view(self.pos, n)
        if got is None:
            self.raw.seek(self.pos)
            n = self.raw.readinto(memoryview(b)[:n])
        else:
            memoryview(b)[:n] = got
        self.pos += n
        return n

    def close(self) -> None:
        self.buf = memoryview(b"")
        self.raw.close()
        super().close()
