"""Single-cutout ``.npy`` files and the DeepLense lens-finding layout.

The layout is a folder with ``train_lenses/``, ``train_nonlenses/``, ``test_lenses/`` and
``test_nonlenses/``, each holding one ``(3, 64, 64)`` array per ``.npy`` file.
:func:`import_npy` streams it into Parquet shards with bounded memory.
"""

from __future__ import annotations

import io
import posixpath
from collections.abc import Callable

import numpy as np

from lensscan.errors import NothingReadableError, ShardError
from lensscan.io import storage
from lensscan.io.batch import CUTOUT_SHAPE, Batch, make_batch
from lensscan.io.parquet import write_parquet

#: Sub-folder -> (split, label).
DEEPLENSE_FOLDERS = {
    "train_lenses": ("train", 1),
    "train_nonlenses": ("train", 0),
    "test_lenses": ("test", 1),
    "test_nonlenses": ("test", 0),
}


#: bytes that hold any ``.npy`` header of a cutout: magic and version (8), its length (2 or 4)
#: and the header itself (at most 64 KiB in format 1.0); the pixels come after
NPY_HEAD = 65_548


def load_npy(url: str) -> np.ndarray:
    """Load one cutout as float32 ``(3, 64, 64)``; never unpickles, and reads the header's shape
    and dtype before any pixel (a header may claim exabytes).

    Raises
    ------
    ShardError
        When the file is not a plain numeric ``.npy`` array of that shape.
    """
    try:
        head, size = storage.read_head(url, NPY_HEAD)
    except FileNotFoundError as exc:
        raise ShardError(url, "file not found") from exc
    except OSError as exc:  # a link loop, a folder named .npy: this file, not the import
        raise ShardError(url, f"cannot be read ({exc.strerror or storage.short(exc)})") from exc
    try:
        buf = io.BytesIO(head)
        shape, dtype = _header(buf)
        if shape != CUTOUT_SHAPE:
            raise ShardError(url, f"array has shape {shape}, expected {CUTOUT_SHAPE}")
        if dtype.kind not in "fiu":
            raise ShardError(url, f"array has dtype {dtype}, expected floating point")
        need = buf.tell() + int(np.prod(shape)) * dtype.itemsize
        if size < need:
            raise ShardError(url, f"truncated: {size} bytes, the header's array needs {need}")
        data = head if len(head) >= need else storage.read_bytes(url)
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ShardError(url, f"not a readable .npy array ({str(exc)[:200]})") from exc
    finite = np.isfinite(arr)
    if np.abs(np.where(finite, arr, 0)).max() > np.finfo(np.float32).max:
        raise ShardError(url, "pixel values beyond float32's range (+-3.4e38)")
    return arr.astype(np.float32, copy=False)


def _header(buf: io.BytesIO) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from a ``.npy`` header (format 1.0 or 2.0); ValueError for anything else
    (an ``.npz`` archive, a pickle, random bytes)."""
    version = np.lib.format.read_magic(buf)
    read = {(1, 0): np.lib.format.read_array_header_1_0,
            (2, 0): np.lib.format.read_array_header_2_0}.get(version)
    if read is None:
        raise ValueError(f".npy format version {version[0]}.{version[1]}: 1.0 and 2.0 are read")
    shape, _, dtype = read(buf)
    return tuple(shape), dtype


def object_id_for(url: str, depth: int = 1) -> str:
    """``<parent folder>/<stem>`` for ``depth=1`` (the DeepLense id), ``<stem>`` for 0."""
    parts = url.rstrip("/").replace("\\", "/").split("/")
    stem = parts[-1][: -len(".npy")] if parts[-1].endswith(".npy") else parts[-1]
    return "/".join([*parts[-1 - depth:-1], stem])


def read_npy(url: str) -> Batch:
    """Read one ``.npy`` cutout as a one-row checked batch (id ``<folder>/<stem>``)."""
    return make_batch(np.array([object_id_for(url)], dtype=object), load_npy(url)[None])


def _flush(out: str, index: int, rows: list[tuple[str, int, str, np.ndarray]]) -> str:
    ids = np.array([r[0] for r in rows], dtype=object)
    batch = {
        "object_id": ids,
        "image": np.stack([r[3] for r in rows]),
        "label": np.array([r[1] for r in rows], np.int8),
        "split": np.array([r[2] for r in rows], dtype=object),
    }
    url = storage.join(out, f"part-{index:05d}.parquet")
    write_parquet(url, batch)
    return url


def _listing(fs, root: str, folders: list[str]) -> tuple[list[tuple[str, str, str]], list[str]]:
    """(folder, URL, object id) of every ``.npy`` file under the DeepLense ``folders``: the id
    is the file's path under its folder, ``<folder>/<stem>`` for a file directly in it
    (DeepLense's own id) and ``<folder>/<sub>/<stem>`` in a subfolder. Also the URLs of the
    other entries found there (files of other kinds, links to folders, which are not
    followed), passed over."""
    files, others = [], []
    for name in folders:
        top = posixpath.join(root, name)
        for p in sorted(fs.find(top)):
            if not p.endswith(".npy"):
                others.append(storage.unstrip(fs, p))
                continue
            files.append((name, storage.unstrip(fs, p),
                          f"{name}/{posixpath.relpath(p, top)[:-len('.npy')]}"))
    return files, others


def _check_id(url: str, object_id: str) -> None:
    """A file name that is not text (bytes no encoding names, held as surrogates) cannot be an
    id of the Parquet output: refused, naming the file as far as it prints."""
    try:
        object_id.encode()
    except UnicodeEncodeError:
        raise ShardError(url.encode(errors="surrogateescape").decode(errors="replace"),
                         "the file name is not UTF-8 text, which the object_id must be; "
                         "rename the file") from None


def import_npy(
    src: str,
    out: str,
    shard_size: int = 4096,
    progress: bool = True,
    on_error: Callable[[ShardError], None] | None = None,
    on_note: Callable[[str], None] | None = None,
) -> dict[str, int]:
    """Convert a DeepLense-style folder into Parquet shards under ``out``.

    Memory is bounded by one shard (``shard_size`` cutouts, 48 KiB each) whatever the number of
    files. A file that cannot be read raises :class:`ShardError` naming it, unless ``on_error`` is
    given, in which case it is reported there and skipped (and counted as ``skipped``). Entries
    that are not ``.npy`` files are counted as ``passed_over`` and told to ``on_note``. When the
    import fails, the shards it wrote are removed: no partial import is left to be scored.

    Returns
    -------
    dict
        Counts per ``<split>_<lenses|nonlenses>``, ``files``, ``skipped``, ``passed_over`` and
        ``shards``.
    """
    from tqdm import tqdm

    fs, root = storage.filesystem(src)
    present = [name for name in DEEPLENSE_FOLDERS if fs.isdir(posixpath.join(root, name))]
    if not present:
        what = ("no such folder" if not fs.exists(root) else "not a folder" if not fs.isdir(root)
                else f"none of the DeepLense folders {sorted(DEEPLENSE_FOLDERS)} found")
        raise FileNotFoundError(f"{src}: {what}")
    files, others = _listing(fs, root, present)
    if others and on_note is not None:
        on_note(f"passed over {len(others)} entries that are not .npy files (links to folders "
                f"are not followed), first {others[0]}")
    counts = {name: 0 for name in present} | {"files": 0, "skipped": 0,
                                              "passed_over": len(others), "shards": 0}
    written: list[str] = []
    try:
        _import_files(tqdm(files, desc="import-npy", unit="file", disable=not progress), out,
                      shard_size, counts, written, on_error)
    except BaseException:
        for url in written:  # no partial import left behind, to be scored as if whole
            storage.remove(url)
        raise
    if not counts["files"]:
        raise NothingReadableError(
            f"{src}: no readable .npy file in {', '.join(present)} "
            f"({counts['skipped']} skipped as unreadable)")
    return counts


def _import_files(files, out: str, shard_size: int, counts: dict[str, int], written: list[str],
                  on_error: Callable[[ShardError], None] | None) -> None:
    """Write ``files`` as shards, counting into ``counts`` and listing the shards written."""
    rows: list = []
    for name, url, object_id in files:
        split, label = DEEPLENSE_FOLDERS[name]
        try:
            _check_id(url, object_id)
            image = load_npy(url)
        except ShardError as err:
            if on_error is None:
                raise
            on_error(err)
            counts["skipped"] += 1
            continue
        rows.append((object_id, label, split, image))
        counts[name] += 1
        counts["files"] += 1
        if len(rows) >= shard_size:
            written.append(_flush(out, counts["shards"], rows))
            counts["shards"] += 1
            rows = []
    if rows:
        written.append(_flush(out, counts["shards"], rows))
        counts["shards"] += 1
