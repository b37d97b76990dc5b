"""Checks before reading a scoring output: that there is one, whether it is complete, and that
the input shards it points at (``shard``/``row``) are still the ones that were scored."""

from __future__ import annotations

import posixpath
import warnings
from collections.abc import Iterable

from lensscan.errors import OutputError
from lensscan.io import storage
from lensscan.score import commit, fingerprint
from lensscan.score.lease import Lease


class IncompleteOutputWarning(UserWarning):
    """The output has no manifest: its run was interrupted, failed or is still running."""


def check_output(out: str) -> None:
    """Raise :class:`OutputError` when ``out`` holds no scoring output; warn
    (:class:`IncompleteOutputWarning`) when it has no manifest."""
    if not storage.exists(storage.join(out, commit.SCORES)):
        raise OutputError(f"{out}: no scoring output here (no {commit.SCORES}/ folder); score a "
                          f"survey into it first: lensscan score IN {out}")
    if storage.exists(storage.join(out, commit.MANIFEST)):
        return
    held = Lease(out).holder()
    why = (f"a run on {held.get('host')} (pid {held.get('pid')}) is writing it now" if held
           else "its run was interrupted or failed")
    warnings.warn(IncompleteOutputWarning(
        f"{out} is incomplete (no {commit.MANIFEST}: {why}); results cover only the units "
        "committed so far. Rerun the same lensscan score command to finish it"), stacklevel=3)


def check_export(out: str, path: str | None, option: str = "--output") -> None:
    """Refuse an export written over one of the scoring output's own files, into its
    ``scores/`` folder (where every later query would read it as scores) or over one of the
    input shards it scored (whose rows the output points at)."""
    if path is None:
        return
    for name in fingerprint.OUTPUTS:
        if storage.inside(path, storage.join(out, name)):
            raise ValueError(f"{option} {path}: it would write into the scoring output's own "
                             f"{name} ({out}); write it elsewhere")
    name = posixpath.basename(str(path).rstrip("/"))
    for shard in fingerprint.read_shards(out) or {}:  # resolve only shards of that name
        if posixpath.basename(shard) == name and storage.inside(path, shard):
            raise ValueError(f"{option} {path}: it would write over {shard}, an input shard "
                             f"of the run in {out}; write it elsewhere")


def check_shards(out: str, shards: Iterable[str]) -> None:
    """Refuse shards that changed (size, ETag or mtime) or vanished since ``out`` was scored:
    their rows would no longer be the scored objects.

    Raises
    ------
    OutputError
        Naming the first changed shard and how it changed.
    """
    recorded = fingerprint.read_shards(out)
    if recorded is None:
        warnings.warn(IncompleteOutputWarning(
            f"{out} records no input shards ({fingerprint.SHARDS}): cannot check that the "
            "shards are unchanged since scoring"), stacklevel=3)
        return
    for shard in shards:
        want = recorded.get(shard)
        if want is None:
            raise OutputError(f"{shard}: not an input shard of the run in {out}")
        try:
            now = storage.stamp(shard)
        except FileNotFoundError:
            raise OutputError(f"{shard}: the shard is gone since {out} was scored") from None
        if now != want:
            raise OutputError(
                f"{shard}: changed since {out} was scored (size {want.size} -> {now.size} "
                f"bytes, {want.version} -> {now.version}); its rows may be other objects now: "
                "rescore the survey (lensscan score ... --overwrite)")
