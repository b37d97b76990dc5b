"""What a scoring run tells its user on stderr while it runs: a few ``[lensscan]`` lines and the
progress of the rows scored (count, share, rate, time left).

On a terminal the progress is one line redrawn in place twice a second, from the run's start
(what it is doing and for how long: listing the input, starting Ray, starting the actors) to
its last row; elsewhere (a log file, a pipe) it is a plain line every :data:`EVERY_S` seconds
when rows were scored since the last one. A quiet run shows nothing.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

#: What a Ray run does before its first row is scored (the progress line says so).
ACTORS_STARTING = "starting the scoring actors"
EVERY_S = 10.0  # seconds between two progress lines when stderr is not a terminal
REDRAW_S = 0.5  # seconds between two redraws of the progress line on a terminal


def _duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h07m``."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def progress_text(rows: int, total: int, elapsed: float, rate: float | None,
                  waiting: str = ACTORS_STARTING) -> str:
    """The progress of ``rows`` scored of ``total`` after ``elapsed`` seconds, at ``rate``
    rows/s (None while it cannot be told); ``waiting``: what the run does before its first
    row is scored."""
    if not rows:
        return f"0/{total} rows scored, {waiting} ({_duration(elapsed)})"
    text = f"{rows}/{total} rows scored ({100 * rows / max(total, 1):.0f}%)"
    if not rate:
        return text
    left = f", {_duration((total - rows) / rate)} left" if rows < total else ""
    return f"{text}, {rate:,.0f} rows/s{left}"


class Progress:
    """The run's voice on ``stream`` (default: stderr): :meth:`say` a line; :meth:`begin` what
    the run does before its rows flow, then :meth:`start` and :meth:`update` the rows scored;
    :meth:`close` (or the end of a ``with`` block) finishes a terminal's progress line."""

    def __init__(self, enabled: bool = True, stream: TextIO | None = None) -> None:
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.tty = enabled and _isatty(self.stream)
        self.phase: str | None = None  # what the run does before its rows flow
        self.waiting = ACTORS_STARTING  # ... and before its first row is scored
        self.total = self.rows = 0
        self.t0 = self.first = 0.0  # when the phase or stream began; when rows first arrived
        self.first_rows = 0
        self.last_line = 0.0  # when a plain progress line was last written
        self.last_rows = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self._shown = False  # a progress line is on the terminal, unterminated

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def say(self, msg: str) -> None:
        """One ``[lensscan]`` line (on a terminal, on a line of its own)."""
        if self.enabled:
            with self._lock:
                self._write(("\r\x1b[K" if self._shown else "") + f"[lensscan] {msg}\n")
                self._shown = False

    def begin(self, phase: str) -> None:
        """The run does ``phase`` (shown on a terminal with its seconds so far)."""
        self.phase, self.t0 = phase, time.time()
        self._show()

    def start(self, total: int, waiting: str = ACTORS_STARTING) -> None:
        """The stream of ``total`` rows starts; ``waiting``: what it does before its first
        row is scored."""
        self.phase, self.total, self.rows, self.t0 = None, total, 0, time.time()
        self.waiting = waiting
        self.last_line = self.t0
        self._show()

    def update(self, rows: int) -> None:
        """``rows`` rows have been scored so far (cheap: called once per batch)."""
        now = time.time()
        if rows and not self.first_rows:
            self.first, self.first_rows = now, rows
        self.rows = rows
        if self.enabled and not self.tty and now - self.last_line >= EVERY_S \
                and rows != self.last_rows:
            self.last_line, self.last_rows = now, rows
            self.say(self.text(now))

    def text(self, now: float) -> str:
        """The progress line as of ``now``."""
        if self.phase is not None:
            return f"{self.phase} ({_duration(now - self.t0)})"
        # rows/s since the first rows arrived: the actors' start-up is not scoring time
        more, span = self.rows - self.first_rows, now - self.first
        rate = more / span if self.first_rows and more > 0 and span > 0 else None
        return progress_text(self.rows, self.total, now - self.t0, rate, self.waiting)

    def close(self) -> None:
        """A terminal's progress line is drawn a last time and finished (or cleared when no
        row was to be scored: the run ended, or failed, before its stream)."""
        self._stop.set()
        if self._ticker is None:
            return
        self._ticker.join()
        self._ticker = None
        with self._lock:
            last = "" if self.phase is not None else f"[lensscan] {self.text(time.time())}\n"
            self._write(("\r\x1b[K" if self._shown else "") + last)
            self._shown = False

    def _show(self) -> None:
        """Draw the line now and keep redrawing it (a terminal only)."""
        if not self.tty:
            return
        self._draw()
        if self._ticker is None:
            self._stop.clear()
            self._ticker = threading.Thread(target=self._tick, daemon=True,
                                            name="lensscan-progress")
            self._ticker.start()

    def _tick(self) -> None:
        while not self._stop.wait(REDRAW_S):
            self._draw()

    def _draw(self) -> None:
        with self._lock:
            self._write(f"\r[lensscan] {self.text(time.time())}\x1b[K")
            self._shown = True

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # stderr closed under us: the run goes on
            pass


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
