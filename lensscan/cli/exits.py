"""How a command ends: the exit status and the one-line report of an error, shared by ``lensscan``
and the scripts in ``jobs/``."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import Any

from lensscan.errors import RESUME_HINT, LensscanError, RunInterruptedError, StorageError, printable

#: Exit statuses (README, "Exit status"); 130 is the shell's for a run stopped by Ctrl-C.
EXIT_OK, EXIT_REFUSED, EXIT_STORAGE, EXIT_INTERRUPTED = 0, 2, 3, 130


def run_command(cmd: str, fn: Callable[..., Any], *args: Any) -> int:
    """Run ``fn(*args)`` as ``lensscan CMD``; returns the exit status: 0 done, 2 refused or bad
    input (one line naming the file or URL), 3 storage failed under the run (rerun the same
    command), 130 stopped by Ctrl-C (one line, not a traceback). Warnings that an output is
    incomplete are one line too.

    A Ctrl-C is counted as well as raised: Python drops the ``KeyboardInterrupt`` when its
    handler runs inside a finalizer (a ``__del__`` or a garbage-collector callback, which
    file-like objects of fsspec and others have), and the command would then run on and end
    as if nobody had pressed it. One counted during ``fn`` ends it with 130 (Ray Train's own
    handler, installed while a member trains, reports its Ctrl-C itself)."""
    line = ""
    with warnings.catch_warnings(record=True) as caught, _sigint_counted() as pressed:
        warnings.simplefilter("always", UserWarning)
        try:
            fn(*args)
            if pressed:  # the KeyboardInterrupt was swallowed on its way: the work ran on
                raise RunInterruptedError(
                    "Ctrl-C was pressed while the command ran on to its end; rerun the same "
                    "command to check that everything is done")
            status = EXIT_OK
        except (KeyboardInterrupt, LensscanError, ValueError, OSError) as exc:
            status, line = _ending(cmd, exc)
        except Exception as exc:  # Ray's own (an actor or node lost past its retries, memory)
            if not type(exc).__module__.startswith("ray."):
                raise
            status, line = _ending(cmd, exc)
    for w in caught:  # each on one line; another library's named by its class and module
        ours = type(w.message).__module__.startswith("lensscan") or f"{os.sep}lensscan{os.sep}" in (
            w.filename or "")
        origin = "" if ours else f"{type(w.message).__name__} ({_module(w.filename)}): "
        text = str(w.message).strip()
        first = printable(text.splitlines()[0] if text else type(w.message).__name__)
        first = first if len(first) <= 400 else first[:397] + "..."
        print(f"lensscan {cmd}: warning: {origin}{first}", file=sys.stderr)
    if line:  # last: the line that says what went wrong and what to do
        print(line, file=sys.stderr)
    return status


def _ending(cmd: str, exc: BaseException) -> tuple[int, str]:
    """The exit status and the one line of a command that ended with ``exc``."""
    if isinstance(exc, RunInterruptedError | KeyboardInterrupt):
        return EXIT_INTERRUPTED, f"lensscan {cmd}: interrupted" + (
            f": {_line(exc)}" if str(exc) else "")
    if isinstance(exc, StorageError):
        return EXIT_STORAGE, f"lensscan {cmd}: error: {_line(exc)}"
    if isinstance(exc, LensscanError | ValueError | OSError):
        return EXIT_REFUSED, f"lensscan {cmd}: error: {_line(exc)}"
    first = (_line(exc).split("\\n") or [""])[0][:300]  # Ray's: its first line
    return EXIT_STORAGE, f"lensscan {cmd}: error: Ray: {type(exc).__name__}: {first}; {RESUME_HINT}"


@contextlib.contextmanager
def _sigint_counted() -> Iterator[list[bool]]:
    """While the block runs, Ctrl-C raises ``KeyboardInterrupt`` as Python's own handler does
    and also appends to the list yielded (a plain list: a lock taken in a signal handler would
    deadlock on a second Ctrl-C). Only where Python's default handler is installed (the main
    thread; a caller's own handler, or an ignored SIGINT, is left alone)."""
    pressed: list[bool] = []
    main = threading.current_thread() is threading.main_thread()
    before = signal.getsignal(signal.SIGINT) if main else None
    if before is not signal.default_int_handler:
        yield pressed
        return

    def handler(signum: int, frame: object) -> None:
        pressed.append(True)
        raise KeyboardInterrupt

    hook = sys.unraisablehook

    def quiet(u: Any) -> None:  # the dropped Ctrl-C is counted: no "Exception ignored" traceback
        if not (pressed and isinstance(u.exc_value, KeyboardInterrupt)):
            hook(u)

    signal.signal(signal.SIGINT, handler)
    sys.unraisablehook = quiet
    try:
        yield pressed
    finally:
        if sys.unraisablehook is quiet:  # another hook installed meanwhile stays
            sys.unraisablehook = hook
        if signal.getsignal(signal.SIGINT) is handler:  # not replaced for good under us
            signal.signal(signal.SIGINT, before)


def _module(filename: str | None) -> str:
    """Where a warning came from: the top package of its file, e.g. ``astropy``."""
    parts = (filename or "?").replace(os.sep, "/").split("/")
    return next((parts[k + 1] for k in range(len(parts) - 1)
                 if parts[k] in ("site-packages", "dist-packages")), parts[-1])


def _line(exc: BaseException) -> str:
    """An error's message on one line: characters a terminal acts on written as escapes."""
    return printable(str(exc))
