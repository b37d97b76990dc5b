"""What a scoring run shows while it runs: a progress line redrawn in place on a terminal, plain
lines elsewhere, nothing when quiet; and Ray's messages that mean nothing to a user kept off
the terminal while real ones show. The last test is a real run under a pseudo-terminal."""

from __future__ import annotations

import io
import json
import logging
import os
import pty
import subprocess
import sys
import threading

import pytest
from support import make_batch

from lensscan import runtime
from lensscan.io.parquet import write_parquet
from lensscan.score import progress as P


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_text():
    assert P.progress_text(0, 4000, 12.3, None) == \
        "0/4000 rows scored, starting the scoring actors (12s)"
    assert P.progress_text(1000, 4000, 30, None) == "1000/4000 rows scored (25%)"
    assert P.progress_text(1000, 4000, 30, 50.0) == \
        "1000/4000 rows scored (25%), 50 rows/s, 1m00s left"
    assert P.progress_text(4000, 4000, 90, 12345.6) == "4000/4000 rows scored (100%), 12,346 rows/s"


def test_plain_lines_only_when_rows_moved(monkeypatch):
    monkeypatch.setattr(P, "EVERY_S", 0.0)
    out = io.StringIO()
    p = P.Progress(stream=out)
    p.say("7 units, 0 already committed, 300 rows to score")
    p.start(300)
    for rows in (0, 100, 100, 300):
        p.update(rows)
    p.close()
    lines = out.getvalue().splitlines()
    assert lines[0] == "[lensscan] 7 units, 0 already committed, 300 rows to score"
    assert [x.split(" rows scored")[0] for x in lines[1:]] == ["[lensscan] 100/300",
                                                                "[lensscan] 300/300"]
    assert "\r" not in out.getvalue()


def test_terminal_line_is_redrawn_in_place_and_finished():
    term = _Terminal()
    p = P.Progress(stream=term)
    p.begin("starting Ray")
    p.start(200)
    p.update(120)
    p.say("a line of its own")
    p.update(200)
    p.close()
    text = term.getvalue()
    assert text.startswith("\r[lensscan] starting Ray (0s)\x1b[K")
    assert "\r[lensscan] 0/200 rows scored, starting the scoring actors" in text
    assert "\r\x1b[K[lensscan] a line of its own\n" in text  # the progress line cleared first
    last = text.split("\n")[-2]  # the progress line, finished by close()
    assert last.startswith("[lensscan] 200/200 rows scored (100%)") and text.endswith("\n")


def test_quiet_shows_nothing_and_a_run_without_rows_leaves_no_line():
    term = _Terminal()
    p = P.Progress(enabled=False, stream=term)
    p.say("x")
    p.begin("starting Ray")
    p.start(10)
    p.update(10)
    p.close()
    assert term.getvalue() == ""
    with P.Progress(stream=term) as p:
        p.begin("starting Ray")
    assert term.getvalue() == "\r[lensscan] starting Ray (0s)\x1b[K\r\x1b[K"  # cleared


def test_ray_noise_dropped_from_ray_loggers_real_warnings_kept(capsys):
    import ray.data  # noqa: F401  (configures Ray Data's console handler)

    runtime.hide_ray_noise()
    runtime.hide_ray_noise()  # idempotent
    for name in ("ray", "ray.data"):
        console = [h for h in logging.getLogger(name).handlers
                   if type(h).__name__ == "PlainRayHandler"]  # Ray's own, to the terminal
        assert console and all(h.filters.count(runtime._NOISE_FILTER) == 1 for h in console)
        assert not runtime._NOISE_FILTER.filter(logging.makeLogRecord(
            {"msg": "Token authentication is enabled for this Ray cluster. Set ..."}))
        assert runtime._NOISE_FILTER.filter(logging.makeLogRecord({"msg": "object store full"}))


_PUMP = r"""
import os, sys, time
from lensscan import runtime
with runtime.native_stderr_filtered():
    os.write(2, b"[2026 E 1 1] core_worker.cc:2465: Actor with class name: 'M' has constructor "
                b"arguments in the object store and max_restarts > 0. If ...\n")
    os.write(2, b"a real error\n")
    os.write(2, b"\r[lensscan] 5/10 rows")  # a progress line, without its end
    time.sleep(1.0)  # read on its own (a loaded machine may be slow to run the reader)
    print("Progress bars disabled. To enable, set ...", file=sys.stderr, flush=True)
    os.write(2, b"\n")
print("after", file=sys.stderr)
"""


def test_native_stderr_drops_noise_and_forwards_the_rest():
    r = subprocess.run([sys.executable, "-c", _PUMP], capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stderr == b"a real error\n\r[lensscan] 5/10 rows\nafter\n"


def _read_all(fd: int, into: list[bytes]) -> None:
    while True:
        try:
            chunk = os.read(fd, 1 << 16)
        except OSError:
            return
        if not chunk:
            return
        into.append(chunk)


@pytest.mark.slow
@pytest.mark.parametrize("engine, begin, waiting", [
    ("ray", "listing the input, starting Ray", "starting the scoring actors"),
    ("auto", "listing the input", "loading the model"),  # 300 rows, no cluster: local
])
def test_real_run_on_a_terminal(tiny_model, tmp_path, engine, begin, waiting):
    """``lensscan score`` with stderr on a pseudo-terminal: a progress line redrawn in place,
    a real error (an unreadable shard) shown, none of Ray's noise; each engine says what it
    waits for."""
    src = tmp_path / "in"
    for k in range(2):
        write_parquet(str(src / f"p{k}.parquet"), make_batch(150, seed=k, start_id=k * 1000),
                      row_group_size=50)
    (src / "broken.parquet").write_bytes(b"PAR1 this is not parquet PAR1")
    master, slave = pty.openpty()
    got: list[bytes] = []
    reader = threading.Thread(target=_read_all, args=(master, got))
    reader.start()
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run([sys.executable, "-m", "lensscan.cli", "score", str(src),
                           str(tmp_path / "out"), "--model", tiny_model, "--batch-size", "50",
                           "--engine", engine],
                          stdout=subprocess.PIPE, stderr=slave, text=True, timeout=600, env=env)
    os.close(slave)
    reader.join(timeout=30)
    os.close(master)
    err = b"".join(got).decode(errors="replace")
    assert proc.returncode == 0, err[-3000:]
    assert "scored 300 of 300 rows" in proc.stdout
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert manifest["resources"]["engine"] == ("ray" if engine == "ray" else "local")
    assert f"\r[lensscan] {begin} (0s)" in err  # from the start
    assert f"\r[lensscan] 0/300 rows scored, {waiting}" in err
    assert "[lensscan] 300/300 rows scored (100%)" in err
    assert "lensscan score: unreadable shard " in err and "broken.parquet" in err
    for noise in runtime.RAY_NOISE:
        assert noise not in err, noise
    assert "Traceback" not in err
