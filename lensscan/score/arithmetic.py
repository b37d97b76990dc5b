"""One output, one arithmetic: the scores of an output are all computed in fp32, or all in fp16,
or all in bf16 (``--precision auto`` is fp16 on a GPU and fp32 on a CPU, whose scores differ in
the last digits and so in their ranks).

Each part's footer names its arithmetic (:data:`lensscan.score.commit.ARITHMETIC_KEY`); the
rows an actor returns name theirs (``arithmetic``). :class:`OneArithmetic` pins the output's
arithmetic (the parts an earlier run committed, else this run's first unit) and refuses a unit of
another: a run begun on GPUs finished on a CPU, or an actor given a GPU its torch cannot use.
"""

from __future__ import annotations

from collections.abc import Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from lensscan.errors import OutputError
from lensscan.io import storage
from lensscan.score import commit

#: What a part written before parts named their arithmetic (an older lensscan) computed in.
UNKNOWN = "unknown"


def part_arithmetic(out: str, key: str) -> str:
    """The arithmetic unit ``key``'s committed part names (:data:`UNKNOWN` if none;
    :data:`~lensscan.score.commit.NO_SCORES` for a part without scores).

    Raises
    ------
    OutputError
        When the part is not a Parquet file (damaged): named, with what to do.
    """
    url = commit.part_url(out, key)
    fs, path = storage.filesystem(url)
    try:
        with storage.failures_named(url), fs.open(path, "rb") as fh:
            meta = pq.read_schema(fh).metadata or {}
    except pa.ArrowInvalid as exc:
        raise OutputError(f"{url}: damaged part ({exc}); rerun with --overwrite to score anew"
                          ) from None
    value = meta.get(commit.ARITHMETIC_KEY.encode())
    return value.decode() if value is not None else UNKNOWN


def committed_arithmetic(out: str, keys: Iterable[str]) -> list[str]:
    """What the committed parts ``keys`` were computed in, read until the first part that
    names an arithmetic (the output holds one; usually one footer read): :data:`UNKNOWN` first
    if parts of an older lensscan came before it; empty when no part has scores."""
    seen: list[str] = []
    for key in sorted(keys):
        value = part_arithmetic(out, key)
        if value == UNKNOWN and not seen:
            seen.append(value)
        elif value not in (UNKNOWN, commit.NO_SCORES):
            return [*seen, value]
    return seen


class OneArithmetic:
    """Pins an output's arithmetic and refuses units of another.

    Parameters
    ----------
    out : str
        Output folder URL.
    committed : iterable of str
        Keys of the parts an earlier run of the same scoring committed: their arithmetic, read
        at the first unit, is the output's.
    """

    def __init__(self, out: str, committed: Iterable[str]) -> None:
        self.out, self.committed = out, sorted(committed)
        self.expected: str | None = None  # the output's arithmetic, once known
        self.earlier = False  # whether an earlier run's parts set it
        self.read = False  # whether the committed parts were read
        self.seen: set[str] = set()  # what the output's scores computed in (for the manifest)

    def check(self, unit: str, got: set[str]) -> str | None:
        """The arithmetic of unit ``unit`` (its scored rows computed in ``got``; None when it
        has none).

        Raises
        ------
        OutputError
            When the unit's rows mix arithmetics, or theirs is not the output's.
        """
        if not self.read:
            self.read = True
            before = committed_arithmetic(self.out, self.committed) if self.committed else []
            self.seen.update(before)  # UNKNOWN among them: an older lensscan's parts
            if before and before[-1] != UNKNOWN:
                self.expected, self.earlier = before[-1], True
        if not got:
            return None
        if self.expected is None and len(got) == 1:
            self.expected = next(iter(got))
        if got != {self.expected}:
            raise OutputError(self._refusal(unit, got))
        self.seen.add(self.expected)
        return self.expected

    def _refusal(self, unit: str, got: set[str]) -> str:
        these = " and ".join(sorted(got))
        if self.earlier:
            return (f"{self.out}: the units an earlier run of this scoring committed were "
                    f"computed in {self.expected}; this run computes in {these} (--precision "
                    "auto is fp16 on a GPU, fp32 on a CPU): resume where the first run ran, or "
                    "pass --overwrite to score every row again")
        what = (f"unit {unit} was computed in {these}, the run's first units in "
                f"{self.expected}" if self.expected else
                f"the rows of unit {unit} were computed in {these}")
        return (f"{self.out}: {what}: every actor must compute in one arithmetic (an actor "
                "given a GPU that its torch cannot use computes in fp32 on its CPU); pass "
                "--precision fp32 --overwrite to score all in fp32")
