"""One writer per output: a live lease refuses a second run; a dead or expired one is taken."""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import time

import pytest
from support import make_batch

from lensscan.cli import main
from lensscan.errors import OutputError
from lensscan.io.parquet import write_parquet
from lensscan.score.lease import LEASE, Lease


def test_second_writer_refused_while_the_first_holds_the_lease(tiny_model, tmp_path):
    out = str(tmp_path / "out")
    write_parquet(str(tmp_path / "in" / "p.parquet"), make_batch(10, seed=1))
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom lensscan.score.lease import Lease\n"
         "Lease(sys.argv[1]).acquire()\nprint('held', flush=True)\ntime.sleep(300)\n", out],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = main(["score", str(tmp_path / "in"), out, "--model", tiny_model])
        assert code == 2
        line = err.getvalue().strip().splitlines()[-1]
        assert f"{out} is being written by another run" in line
        assert f"host {socket.gethostname()}, pid {holder.pid}" in line
        assert not os.path.exists(os.path.join(out, "scores"))  # nothing done twice
    finally:
        holder.kill()
        holder.wait()
    # the holder died on this host: its lease is taken over at once
    lease = Lease(out).acquire()
    lease.release()
    assert not os.path.exists(os.path.join(out, LEASE))


@pytest.mark.parametrize("expired", [True, False])
def test_lease_of_another_host_is_kept_until_it_expires(tmp_path, expired):
    out = str(tmp_path / "out")
    os.makedirs(out)
    t = time.time() + (-5 if expired else 60)
    with open(os.path.join(out, LEASE), "w") as fh:
        json.dump({"host": "elsewhere", "pid": 1, "token": "x", "started": "then",
                   "expires": "later", "expires_epoch": t}, fh)
    if expired:
        Lease(out).acquire().release()
    else:
        with pytest.raises(OutputError, match="host elsewhere, pid 1"):
            Lease(out).acquire()


def test_a_run_whose_lease_was_taken_over_stops_renewing_and_writing(tmp_path):
    """A run whose renewals stopped past its lease's lifetime (a long pause) finds another
    run's lease in its place: it leaves that lease alone and refuses to commit."""
    out = str(tmp_path / "out")
    lease = Lease(out, ttl_s=0.4).acquire()  # renews every 0.1 s
    try:
        other = {"host": "elsewhere", "pid": 7, "token": "theirs", "started": "now",
                 "expires": "later", "expires_epoch": time.time() + 60}
        # in place at once, as a run's lease is written: a renewal reading a half-written file
        # takes it for no lease and writes its own over it
        with open(os.path.join(out, "theirs.tmp"), "w") as fh:
            json.dump(other, fh)
        os.replace(os.path.join(out, "theirs.tmp"), os.path.join(out, LEASE))
        assert lease.lost.wait(5)
        time.sleep(0.3)  # renewals would have overwritten it by now
        with open(os.path.join(out, LEASE)) as fh:
            assert json.load(fh)["token"] == "theirs"
        with pytest.raises(OutputError, match="another run took the folder over .host "
                                              "elsewhere, pid 7"):
            lease.check()
    finally:
        lease.release()
    assert os.path.exists(os.path.join(out, LEASE))  # theirs: not removed by our release


def test_a_killed_writer_not_yet_reaped_holds_no_lease():
    """A process killed but not reaped (a zombie: what `timeout -s KILL` leaves) writes
    nothing more: its lease is free at once, not after the TTL."""
    from lensscan.score.lease import _alive

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert _alive(child.pid)
        child.kill()
        deadline = time.time() + 10
        while _alive(child.pid) and time.time() < deadline:  # killed, not waited for
            time.sleep(0.05)
        assert not _alive(child.pid)
        with open(f"/proc/{child.pid}/stat") as fh:
            assert fh.read().rsplit(")", 1)[1].split()[0] == "Z"  # still there, a zombie
    finally:
        child.kill()
        child.wait()


def test_a_run_whose_renewals_keep_failing_stops_before_its_lease_expires(tmp_path):
    """Renewals that fail (storage down, credentials expired) were skipped silently: the lease
    expired, another run could take the folder while this one went on committing."""
    from lensscan.errors import StorageError

    out = str(tmp_path / "out")
    lease = Lease(out, ttl_s=4.0).acquire()  # renews every second; stops with 1 s left
    try:
        lease.check()  # renewed: fine
        os.remove(os.path.join(out, LEASE))
        os.mkdir(os.path.join(out, LEASE))  # every renewal now fails to read or write it
        time.sleep(3.5)
        with pytest.raises(StorageError, match=r"_lease.json: this run's lease could not be "
                                               r"renewed \(.+\) and expires in \d+ s; the run "
                                               r"stops"):
            lease.check()
    finally:
        lease.release()


@pytest.mark.parametrize("doc", ['"x"', "[1, 2]", '{"pid": null, "expires_epoch": 1e12}',
                                 '{"expires_epoch": "x"}', '{"pid": "x", "expires_epoch": 1e12}',
                                 '{"pid": 0, "expires_epoch": 1e12}'])
def test_a_lease_file_of_another_shape_is_no_live_lease(tmp_path, doc):
    """JSON of another shape in _lease.json (a foreign or hand-edited file) raised a traceback
    in score, query and gallery; a missing pid counted as a live process (pid 0 signals the
    caller's own group)."""
    out = tmp_path / "out"
    out.mkdir()
    held = json.loads(doc)
    if isinstance(held, dict):
        held["host"] = socket.gethostname()
        doc = json.dumps(held)
    (out / LEASE).write_text(doc)
    assert Lease(str(out)).holder() is None
    Lease(str(out)).acquire().release()
