"""Fast path for the image column: copy PLAIN float pages straight out of a Parquet file.

lensscan writes ``image`` uncompressed and PLAIN-encoded (noisy float pixels do not compress).
Such a column chunk is a run of pages whose values are the raw little-endian float32 pixels, so
decoding is a copy. pyarrow instead rebuilds the nested list (repetition and definition levels
for every pixel) and reads several times slower than the disk. Here each page header (Thrift
compact protocol, the Parquet footer's own encoding) is parsed and the values are copied into one
(N, 3, 64, 64) array.

Only chunks the metadata proves simple take this path: FLOAT values (or float16: Parquet's
FIXED_LEN_BYTE_ARRAY(2) with the FLOAT16 logical type, whose PLAIN values are the raw half
floats), UNCOMPRESSED, no dictionary, no nulls, exactly ``rows x 12288`` values. Anything else
(float64 pixels, compression, nulls, other writers' layouts) returns ``None`` and the caller
decodes with pyarrow; a page that contradicts the metadata raises ``ValueError``.
"""

from __future__ import annotations

import struct

import numpy as np
import pyarrow.parquet as pq

NPIX = 3 * 64 * 64

# Thrift compact protocol type ids
_STOP, _TRUE, _FALSE, _BYTE, _I16, _I32, _I64, _DOUBLE, _BINARY, _LIST, _SET, _MAP, _STRUCT = (
    range(13))
# Parquet page types and encodings (parquet.thrift)
DATA_PAGE, INDEX_PAGE, DICTIONARY_PAGE, DATA_PAGE_V2 = 0, 1, 2, 3
PLAIN = 0


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 64 bits")


def _zigzag(buf: memoryview, pos: int) -> tuple[int, int]:
    n, pos = _varint(buf, pos)
    return (n >> 1) ^ -(n & 1), pos


def _value(buf: memoryview, pos: int, typ: int):
    """One value of compact-protocol type ``typ`` at ``pos``: (value, next position)."""
    if typ in (_TRUE, _FALSE):  # only reached inside lists, where a bool is one byte
        return buf[pos] == 1, pos + 1
    if typ == _BYTE:
        return buf[pos], pos + 1
    if typ in (_I16, _I32, _I64):
        return _zigzag(buf, pos)
    if typ == _DOUBLE:
        return struct.unpack_from("<d", buf, pos)[0], pos + 8
    if typ == _BINARY:
        n, pos = _varint(buf, pos)
        return bytes(buf[pos:pos + n]), pos + n
    if typ in (_LIST, _SET):
        head = buf[pos]
        pos += 1
        size, etype = head >> 4, head & 0x0F
        if size == 15:
            size, pos = _varint(buf, pos)
        items = []
        for _ in range(size):
            item, pos = _value(buf, pos, etype)
            items.append(item)
        return items, pos
    if typ == _MAP:
        size, pos = _varint(buf, pos)
        if size == 0:
            return {}, pos
        kinds = buf[pos]
        pos += 1
        out = {}
        for _ in range(size):
            k, pos = _value(buf, pos, kinds >> 4)
            v, pos = _value(buf, pos, kinds & 0x0F)
            out[k] = v
        return out, pos
    if typ == _STRUCT:
        return read_struct(buf, pos)
    raise ValueError(f"unknown Thrift compact type {typ}")


def read_struct(buf: memoryview, pos: int = 0) -> tuple[dict[int, object], int]:
    """A compact-protocol struct as {field id: value} (nested structs as dicts)."""
    fields: dict[int, object] = {}
    last = 0
    while True:
        head = buf[pos]
        pos += 1
        typ = head & 0x0F
        if typ == _STOP:
            return fields, pos
        delta = head >> 4
        if delta:
            fid = last + delta
        else:
            fid, pos = _zigzag(buf, pos)
        if typ in (_TRUE, _FALSE):
            fields[fid] = typ == _TRUE
        else:
            fields[fid], pos = _value(buf, pos, typ)
        last = fid


def _plain_chunk(md: pq.RowGroupMetaData, column: int, half: bool) -> tuple[int, int] | None:
    """(offset, size) of a column chunk that qualifies for the fast path, else None."""
    cc = md.column(column)
    stats = cc.statistics if cc.is_stats_set else None
    physical = "FIXED_LEN_BYTE_ARRAY" if half else "FLOAT"
    if (cc.physical_type != physical or cc.compression != "UNCOMPRESSED"
            or cc.has_dictionary_page or cc.num_values != md.num_rows * NPIX
            or stats is None or not stats.has_null_count or stats.null_count != 0
            or not set(cc.encodings) <= {"PLAIN", "RLE", "BIT_PACKED"}):
        return None
    return cc.data_page_offset, cc.total_compressed_size


def image_leaf(pf: pq.ParquetFile) -> int | None:
    """Index of the image column's leaf in the Parquet schema, when it is a list of floats."""
    schema = pf.schema
    for i in range(len(schema)):
        path = schema.column(i).path.split(".")
        if path[0] == "image" and len(path) == 3:
            return i
    return None


def pixel_type(pf: pq.ParquetFile, leaf: int) -> np.dtype | None:
    """float32 or float16 (FIXED_LEN_BYTE_ARRAY(2), logical FLOAT16) leaves, else None."""
    col = pf.schema.column(leaf)
    if col.physical_type == "FLOAT":
        return np.dtype("<f4")
    if (col.physical_type == "FIXED_LEN_BYTE_ARRAY" and col.length == 2
            and str(col.logical_type.type).upper() == "FLOAT16"):
        return np.dtype("<f2")
    return None


def plan(pf: pq.ParquetFile, row_groups: list[int]) -> list[tuple[int, int, int]] | None:
    """(offset, size, rows) of the image chunk of every row group, or None if any of them does
    not qualify."""
    leaf = image_leaf(pf)
    if leaf is None or pixel_type(pf, leaf) is None:
        return None
    half = pixel_type(pf, leaf).itemsize == 2
    out = []
    for g in row_groups:
        md = pf.metadata.row_group(g)
        chunk = _plain_chunk(md, leaf, half)
        if chunk is None:
            return None
        out.append((*chunk, md.num_rows))
    return out


def copy_pages(chunk: memoryview, dest: np.ndarray, where: str) -> None:
    """Copy the values of the pages of one column chunk into ``dest`` (flat float32, or float16
    for a float16 column)."""
    pos = done = 0
    size_of = dest.dtype.itemsize
    while pos < len(chunk):
        header, body = read_struct(chunk, pos)
        ptype, size = header.get(1), header.get(3)
        if not isinstance(size, int) or size < 0 or body + size > len(chunk):
            raise ValueError(f"{where}: page at byte {pos} has a bad size ({size})")
        if ptype == DATA_PAGE:
            dph = header.get(5)
            if not isinstance(dph, dict) or dph.get(2) != PLAIN:
                raise ValueError(f"{where}: page at byte {pos} is not PLAIN-encoded")
            n = dph[1]
            start = body + size - size_of * n  # levels first, then exactly n values
        elif ptype == DATA_PAGE_V2:
            dph = header.get(8)
            if not isinstance(dph, dict) or dph.get(4) != PLAIN or dph.get(2, 0) != 0:
                raise ValueError(f"{where}: page at byte {pos} is not PLAIN without nulls")
            n = dph[1]
            start = body + dph.get(5, 0) + dph.get(6, 0)
            if start + size_of * n != body + size:
                raise ValueError(f"{where}: page at byte {pos} has {size} bytes for {n} values")
        elif ptype == INDEX_PAGE:
            pos = body + size
            continue
        else:
            raise ValueError(f"{where}: unexpected page type {ptype} at byte {pos}")
        if start < body or done + n > len(dest):
            raise ValueError(f"{where}: page at byte {pos} holds more values than the metadata")
        dest[done:done + n] = np.frombuffer(chunk, dest.dtype.newbyteorder("<"), n, start)
        done += n
        pos = body + size
    if done != len(dest):
        raise ValueError(f"{where}: pages hold {done} values, metadata says {len(dest)}")


def read_images(fh, pf: pq.ParquetFile, row_groups: list[int]) -> np.ndarray | None:
    """Images of ``row_groups`` as stored, float32 or float16 (N, 3, 64, 64), read from the open
    binary file ``fh``; None when the column does not qualify (see the module docstring)."""
    chunks = plan(pf, row_groups)
    if chunks is None:
        return None
    rows = sum(r for _, _, r in chunks)
    out = np.empty((rows, 3, 64, 64), pixel_type(pf, image_leaf(pf)).newbyteorder("="))
    flat = out.reshape(-1)
    scratch = None
    done = 0
    for (offset, size, n), g in zip(chunks, row_groups, strict=True):
        view = fh.view(offset, size) if hasattr(fh, "view") else None  # prefetched: no copy
        if view is None:
            scratch = scratch or bytearray(max(size for _, size, _ in chunks))
            view = memoryview(scratch)[:size]
            fh.seek(offset)
            got = fh.readinto(view)
            if got != size:
                raise ValueError(f"row group {g} is truncated ({got} of {size} bytes)")
        copy_pages(view, flat[done * NPIX:(done + n) * NPIX], f"row group {g}")
        done += n
    return out
