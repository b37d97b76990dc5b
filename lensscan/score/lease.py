"""One writer per output folder: a lease object (``_lease.json``) with host, pid and expiry.

A run takes the lease before it touches the output and renews it in a background thread while
it runs; a second run finds a live lease and is refused, naming the holder. A lease is stale
(and taken over) once it has expired, or at once when its holder ran on this host and its
process is gone (a killed driver's rerun resumes without waiting).

Object stores offer no create-if-absent here, so taking the lease writes it, waits a moment and
reads it back: of two runs that start together, the one whose lease was overwritten backs off.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from datetime import UTC, datetime

from lensscan.errors import OutputError, StorageError
from lensscan.io import storage

LEASE = "_lease.json"
TTL_S = 60.0  # a lease not renewed for this long is stale
RENEW_S = 15.0  # renewal period of a held lease
SETTLE_S = 0.5  # wait between writing a lease and reading it back


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")


def _alive(pid: int) -> bool:
    """True while process ``pid`` of this host runs; a zombie (killed, not yet reaped: an
    orphan of ``timeout -s KILL``) writes nothing more, so it is not alive."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:  # "pid (name) state ...": the state after ")"
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):  # no /proc (macOS): the signal's answer
        return True


class Lease:
    """The write lease of output folder ``out`` (a context manager).

    Parameters
    ----------
    out : str
        Output folder URL.
    ttl_s : float
        Seconds after the last renewal at which the lease counts as abandoned.
    """

    def __init__(self, out: str, ttl_s: float = TTL_S) -> None:
        self.out, self.url, self.ttl_s = out, storage.join(out, LEASE), ttl_s
        self.token = uuid.uuid4().hex
        self.started = time.time()
        self._stop = threading.Event()
        self.lost = threading.Event()  # another run took the lease over: stop writing
        self.expires = 0.0  # expiry of the lease as last written (taken or renewed)
        self.renew_error = ""  # why the renewals since then failed
        self._thread: threading.Thread | None = None

    def _period(self) -> float:
        return min(RENEW_S, self.ttl_s / 4)

    def _doc(self) -> dict:
        now = time.time()
        return {"host": socket.gethostname(), "pid": os.getpid(), "token": self.token,
                "started": _iso(self.started), "renewed": _iso(now),
                "expires": _iso(now + self.ttl_s), "expires_epoch": now + self.ttl_s}

    def _read(self) -> dict | None:
        try:
            doc = json.loads(storage.read_bytes(self.url))
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None  # a torn or foreign file: not a live lease
        return doc if isinstance(doc, dict) else None  # JSON of another shape: foreign too

    def holder(self) -> dict | None:
        """The live lease of another run, or None (a file of another shape is no live
        lease)."""
        held = self._read()
        if not held or held.get("token") == self.token:
            return None
        try:
            if time.time() > float(held.get("expires_epoch", 0)):
                return None
            pid = int(held.get("pid") or 0)
        except (TypeError, ValueError, OverflowError):
            return None
        if held.get("host") == socket.gethostname() and (pid <= 0 or not _alive(pid)):
            return None
        return held

    def _refuse(self, held: dict) -> OutputError:
        return OutputError(
            f"{self.out} is being written by another run (host {held.get('host')}, pid "
            f"{held.get('pid')}, since {held.get('started')}); wait for it to finish. If that "
            f"run is dead, its lease {self.url} expires at {held.get('expires')}")

    def acquire(self) -> Lease:
        """Take the lease or raise :class:`OutputError` naming the live holder."""
        held = self.holder()
        if held:
            raise self._refuse(held)
        self._write()
        time.sleep(SETTLE_S)
        now = self._read()
        if not now or now.get("token") != self.token:
            raise self._refuse(now or {})
        self._thread = threading.Thread(target=self._renew, name="lensscan-lease", daemon=True)
        self._thread.start()
        return self

    def _write(self) -> None:
        doc = self._doc()
        storage.write_bytes_atomic(self.url, json.dumps(doc).encode())
        self.expires, self.renew_error = doc["expires_epoch"], ""

    def _renew(self) -> None:
        wait = self._period()
        while not self._stop.wait(wait):
            try:
                held = self._read()
                if held and held.get("token") != self.token:  # ours expired and was taken
                    self.lost.set()
                    return
                self._write()
                wait = self._period()
            except Exception as exc:  # noqa: BLE001 - a missed renewal shortens the lease:
                # tried again soon, and check() stops the run before the lease expires
                self.renew_error = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
                wait = self._period() / 5

    def check(self) -> None:
        """Raise :class:`OutputError` when another run has taken the lease over (this run's
        renewals stopped for longer than its lifetime), and :class:`StorageError` when the
        renewals have failed for so long that the lease is about to expire (storage failing,
        credentials expired): this run must not write further."""
        if self.lost.is_set():
            held = self._read() or {}
            raise OutputError(
                f"{self.out}: this run's lease expired and another run took the folder over "
                f"(host {held.get('host')}, pid {held.get('pid')}); this run stops without "
                "committing")
        left = self.expires - time.time()
        if self.expires and left < self._period():
            why = self.renew_error or "a renewal has not returned"
            raise StorageError(self.url, f"this run's lease could not be renewed ({why}) and "
                               f"expires in {max(left, 0):.0f} s; the run stops before another "
                               "could take the folder")

    def release(self) -> None:
        """Stop renewing and remove the lease if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        try:
            held = self._read()
            if held and held.get("token") == self.token:
                storage.remove(self.url)
        except Exception:  # noqa: BLE001 - storage is failing: the lease expires on its own
            pass

    def __enter__(self) -> Lease:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
