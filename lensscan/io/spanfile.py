"""A seekable file over a remote one that serves one prefetched byte span from memory."""

from __future__ import annotations

import io


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
