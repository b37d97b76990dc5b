"""Turn a URL or path into an fsspec filesystem, list shards, and write files atomically.

Every input and output of lensscan goes through :func:`filesystem`. S3 credentials come from the
standard AWS chain; ``AWS_ENDPOINT_URL`` points S3 clients at any S3-compatible store.
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import urllib.parse
import uuid
from collections.abc import Iterable, Iterator
from typing import NamedTuple

import fsspec
from fsspec import AbstractFileSystem

from lensscan.errors import LensscanError, StorageError

#: File name endings of cutout shards, in the order they are tried.
SHARD_SUFFIXES = (".parquet", ".fits", ".fits.gz", ".fit", ".npy")
#: Packages whose exceptions are failures of the storage system, never of a file's content.
_STORAGE_PACKAGES = ("botocore", "aiobotocore", "aiohttp", "urllib3", "requests", "google")
#: OS errors of a disk or network filesystem (full, read-only, quota, I/O, file too large), and
#: those s3fs gives a store's refusals that pass (throttling, busy or failing servers: SlowDown
#: and 503 are EBUSY, InternalError and 500 EREMOTEIO).
_STORAGE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EFBIG, errno.EBUSY,
                   getattr(errno, "EREMOTEIO", errno.EIO), errno.EAGAIN, errno.ETIMEDOUT,
                   errno.ECONNRESET)
#: Error codes of an object store that say something of the file's bytes, not of the store:
#: a range past the object's end is a footer pointing outside a truncated file.
_CONTENT_CODES = frozenset({"InvalidRange", "416"})


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
    _refuse_empty(str(url))
    protocol = fsspec.core.split_protocol(str(url))[0] or "file"
    _refuse_credentials(str(url), protocol)
    try:
        fs, path = fsspec.core.url_to_fs(str(url), **_storage_options(protocol))
    except (OSError, ImportError) as exc:  # a filesystem that connects when made (ftp://)
        raise StorageError(str(url), f"cannot open its filesystem ({short(exc)})") from None
    return fs, path


def _refuse_empty(url: str) -> None:
    """An empty path is the current folder to fsspec and to ``os.path``: which --overwrite
    would clear."""
    if not url.strip() or url.strip() in ("file://", "file:"):
        raise ValueError(f"{url!r}: an empty path; give a file or folder")


def _refuse_credentials(url: str, protocol: str) -> None:
    """Refuse a URL that carries a password (``ftp://user:pw@host/...``), naming it without
    the password: credentials come from the standard chains only, and a URL is written into
    manifests, provenance and every scored row's ``shard``."""
    if protocol == "file" or "@" not in url:
        return
    segments = url.split("::")  # a chained URL (simplecache::s3://...): each part its own URL
    for i, segment in enumerate(segments):
        parts = urllib.parse.urlsplit(segment)
        if parts.password is None:
            continue
        segments[i] = parts._replace(
            netloc=f"{parts.username}:***@{parts.netloc.rpartition('@')[2]}").geturl()
        raise ValueError(f"{'::'.join(segments)}: the URL carries a password; lensscan takes "
                         "credentials from the standard chains (environment, profile files, "
                         "instance roles), never from a URL, which it writes into its outputs")


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
    _refuse_empty(url)
    if is_local(url):
        return os.path.abspath(url.removeprefix("file://"))
    return url


def inside(url: str, folder: str) -> bool:
    """True when ``url`` is ``folder`` or lies below it (object-store URLs as written; local
    paths made absolute with their links resolved)."""
    def real(u: str) -> str:
        return os.path.realpath(absolute(u)) if is_local(u) else str(u).rstrip("/")

    a, b = real(url), real(folder)
    return a == b or a.startswith(b + "/")


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
    return list(shard_stamps(url, suffixes))


def shard_stamps(url: str, suffixes: Iterable[str] = SHARD_SUFFIXES) -> dict[str, Stamp]:
    """Like :func:`list_shards`, with each shard's :class:`Stamp` from the same listing (one
    LIST request per 1,000 objects on object stores, no request per file). The listing is
    fresh: every listing the filesystem kept is dropped first, so a shard rewritten since this
    process last listed it is seen, and read, as its new version, not refused for a stale
    ETag."""
    fs, path = filesystem(url)
    suffixes = tuple(suffixes)
    with failures_named(url, "list"):
        fs.invalidate_cache()
        if any(ch in path for ch in "*?["):
            found = fs.glob(path, detail=True)
        elif fs.isfile(path):
            found = {path: fs.info(path)}
        elif fs.isdir(path):
            found = fs.find(path, detail=True)
        else:
            raise FileNotFoundError(f"{url}: no such file or folder")
    shards = sorted(
        p for p, info in found.items()
        if p.lower().endswith(suffixes) and not posixpath.basename(p).startswith(("_", "."))
        and info.get("type", "file") != "directory"
    )
    if not shards:
        raise FileNotFoundError(f"{url}: no cutout shards ({', '.join(suffixes)}) found")
    return {unstrip(fs, p): Stamp.of(found[p]) for p in shards}


class Stamp(NamedTuple):
    """A file's version as a listing reports it."""

    size: int  # bytes
    version: str  # "etag <ETag>" on object stores, "mtime <seconds>" on local disks

    @classmethod
    def of(cls, info: dict) -> Stamp:
        """From an fsspec ``info`` dict (s3fs ``ETag``, gcsfs ``etag``, local ``mtime``)."""
        etag = info.get("ETag") or info.get("etag") or info.get("md5Hash")
        if etag:
            return cls(int(info.get("size") or 0), f"etag {str(etag).strip(chr(34))}")
        mtime = info.get("mtime") or info.get("LastModified") or info.get("created")
        if hasattr(mtime, "timestamp"):
            mtime = mtime.timestamp()
        return cls(int(info.get("size") or 0), f"mtime {float(mtime or 0):.6f}")


def stamp(url: str) -> Stamp:
    """The current :class:`Stamp` of one file (FileNotFoundError when it is gone)."""
    fs, path = filesystem(url)
    with failures_named(url, "read"):
        return Stamp.of(fs.info(path))


def is_storage_failure(exc: BaseException) -> bool:
    """True for a failure of the storage system (network, endpoint, credentials, full disk),
    False for a problem of a file's content or a missing file."""
    if isinstance(exc, FileNotFoundError | IsADirectoryError | NotADirectoryError):
        return False
    if isinstance(exc, ConnectionError | TimeoutError | PermissionError):
        return True
    if isinstance(exc, OSError) and exc.errno in _STORAGE_ERRNOS:
        return True
    # s3fs and gcsfs re-raise a client's error as an OSError (an object rewritten since it was
    # listed: PreconditionFailed, EINVAL): the client's exception behind it decides
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        if type(link).__module__.split(".")[0] in _STORAGE_PACKAGES:
            response = getattr(link, "response", None)
            code = response.get("Error", {}).get("Code") if isinstance(response, dict) else None
            return code not in _CONTENT_CODES
        link = link.__cause__ or link.__context__
    return False


def short(exc: BaseException) -> str:
    """An exception's first line, at most 200 characters."""
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


@contextlib.contextmanager
def failures_named(url: str, action: str = "read") -> Iterator[None]:
    """Turn a storage failure inside the block into a :class:`StorageError` naming ``url``
    (one line, with the hint to rerun); other errors pass unchanged."""
    try:
        yield
    except LensscanError:
        raise
    except Exception as exc:
        if is_storage_failure(exc):
            raise StorageError(url, f"cannot {action} ({short(exc)})") from exc
        raise


def write_bytes_atomic(url: str, data: bytes) -> None:
    """Write ``data`` so that readers see either nothing or the whole file.

    Local files are written to a hidden temporary name beside the target (``.<name>.tmp-<hex>``:
    dataset readers skip names starting with a dot) and renamed; the temporary file is removed
    on any error. An object store PUT of one object is already atomic.

    Raises
    ------
    StorageError
        When storage fails (disk full, endpoint unreachable), naming ``url``.
    """
    if not str(url).strip():
        raise ValueError("an empty path was given to write to; name a file")
    if str(url).endswith(("/", os.sep)):
        raise IsADirectoryError(f"{url}: names a folder; name a file to write")
    fs, path = filesystem(url)
    with failures_named(url, "write"):
        if is_local(url):
            if os.path.isdir(path):
                raise IsADirectoryError(f"{url}: is a folder; name a file to write")
            _write_local(path, data)
        else:
            fs.pipe_file(path, data)


def _write_local(path: str, data: bytes) -> None:
    folder, name = os.path.split(path)
    os.makedirs(folder or ".", exist_ok=True)
    tmp = os.path.join(folder, f".{name}.tmp-{uuid.uuid4().hex}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def remove(url: str) -> None:
    """Remove a file or a folder with everything under it (nothing when it does not exist)."""
    fs, path = filesystem(url)
    with failures_named(url, "remove"):
        if fs.exists(path):
            fs.rm(path, recursive=fs.isdir(path))


@contextlib.contextmanager
def removed_if_left_empty(url: str) -> Iterator[None]:
    """A local folder that does not exist yet and that the block, failing, leaves empty (a run
    refused once it had taken the output's lease: an input that does not exist) is removed:
    a typo leaves no empty folder behind. Object stores have no empty folders."""
    path = filesystem(url)[1] if is_local(url) else None
    fresh = path is not None and not os.path.lexists(path)
    try:
        yield
    except BaseException:
        if fresh:
            with contextlib.suppress(OSError):  # not empty: the run wrote something, keep it
                os.rmdir(path)
        raise


def check_folder(url: str) -> str:
    """``url`` as given, or a local folder's absolute path (``file://`` taken off), for a
    folder to write into: refused in one line (``ValueError``) when it is a file (a dangling
    link) or lies under one, before anything is written (``--overwrite`` would delete it)."""
    fs, path = filesystem(url)
    if not is_local(url):
        return url
    path = probe = os.path.abspath(path)
    while not os.path.lexists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise ValueError(f"{url} is a file, not a folder" if probe == path else
                         f"{url}: {probe} is a file, not a folder")
    return path


def ensure_empty(url: str, overwrite: bool = False) -> None:
    """Make sure the output folder ``url`` is empty: clear it when ``overwrite``, else refuse
    (``ValueError``) when it holds anything; a file (an object, on a store) is refused, never
    cleared."""
    check_folder(url)
    fs, path = filesystem(url)
    if not is_local(url) and fs.isfile(path):
        raise ValueError(f"{url} is a file, not a folder")
    if fs.exists(path) and fs.ls(path):
        if not overwrite:
            raise ValueError(f"{url}: the output folder is not empty (--overwrite clears it)")
        fs.rm(path, recursive=True)
    if is_local(url):
        fs.makedirs(path, exist_ok=True)


def read_bytes(url: str) -> bytes:
    """Read a whole file."""
    fs, path = filesystem(url)
    with failures_named(url, "read"):
        return fs.cat_file(path)


def read_head(url: str, size: int) -> tuple[bytes, int]:
    """The first ``size`` bytes of a file (all of it when shorter) and the file's length: a
    header can be checked before the rest is fetched. One request when the file is shorter
    than ``size`` (a cutout's ``.npy``), two otherwise."""
    fs, path = filesystem(url)
    with failures_named(url, "read"):
        head = fs.cat_file(path, 0, size)
        return head, len(head) if len(head) < size else int(fs.size(path))


def list_into_cache(url: str) -> None:
    """List the folder ``url`` of an object store (one request per thousand files), so that the
    filesystem's later ``info`` calls on its files come from the listing instead of one HEAD
    request each: DuckDB asks for every file's size and version on every query. Nothing to do
    on a local disk. A write into the folder drops the listing (fsspec invalidates it)."""
    if is_local(url):
        return
    fs, path = filesystem(url)
    with failures_named(url, "list"):
        fs.invalidate_cache(path)
        fs.ls(path, detail=True)


def exists(url: str) -> bool:
    """True when the file or folder exists."""
    fs, path = filesystem(url)
    with failures_named(url, "read"):
        return fs.exists(path)


def pyarrow_filesystem(url: str):
    """A ``pyarrow.fs.FileSystem`` and path for ``url`` (for Ray Data and Ray Train storage)."""
    import pyarrow.fs as pafs

    fs, path = filesystem(url)
    if is_local(url):
        return pafs.LocalFileSystem(), path
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path
