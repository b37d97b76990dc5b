"""What the bench samples while a run goes: memory of the process tree, and the GPUs."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
import time

import psutil


class PeakMemory:
    """Sample the memory of this process and all its children (Ray workers) while running.

    ``pss``: proportional set size, shared pages (Ray's object store, shared libraries) split
    between the processes that map them, so the sum is the tree's real footprint (Linux; falls
    back to RSS elsewhere). ``rss``: the plain sum of resident sizes, which counts every shared
    page once per process.
    """

    def __init__(self, interval: float = 0.5) -> None:
        self.interval, self._stop = interval, threading.Event()
        self.pss = self.rss = 0
        self._lap = 0  # peak PSS since the last :meth:`lap`

    @staticmethod
    def _one(p: psutil.Process) -> tuple[int, int]:
        try:  # the kernel's own sums: far cheaper than psutil's parse of the full smaps
            with open(f"/proc/{p.pid}/smaps_rollup", "rb") as fh:
                kb = {ln.split(b":")[0]: int(ln.split()[1]) for ln in fh if ln[:4] in (b"Pss:",
                                                                                      b"Rss:")}
            return kb[b"Pss"] * 1024, kb[b"Rss"] * 1024
        except (OSError, KeyError, ValueError):
            rss = p.memory_info().rss
            return rss, rss

    def _sample(self) -> tuple[int, int]:
        me = psutil.Process()
        pss = rss = 0
        for p in [me, *me.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                a, b = self._one(p)
                pss, rss = pss + a, rss + b
        return pss, rss

    def _run(self) -> None:
        with contextlib.suppress(OSError, AttributeError):  # Linux: nice this thread only
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        while not self._stop.is_set():
            pss, rss = self._sample()
            self.pss, self.rss = max(self.pss, pss), max(self.rss, rss)
            self._lap = max(self._lap, pss)
            self._stop.wait(self.interval)

    def lap(self) -> float:
        """Peak PSS in MB since the previous call (or the start), from the same samples: one
        run's own peak inside a longer measurement, without a second sampler."""
        pss, _ = self._sample()
        peak, self._lap = max(self._lap, pss), 0
        return peak / 2**20

    def __enter__(self) -> PeakMemory:
        self.pss, self.rss = self._sample()
        self._lap = self.pss
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def mb(self) -> float:
        return self.pss / 2**20

    @property
    def rss_mb(self) -> float:
        return self.rss / 2**20


class GpuSampler:
    """Sample every GPU's utilisation (%) and memory in use (MB) while running: NVML
    (``nvidia-ml-py``) when it is installed, else ``nvidia-smi`` every ``interval`` seconds;
    nothing where there is neither. ``samples``: (seconds since start, util %, MB) per GPU."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval, self._stop = interval, threading.Event()
        self.samples: list[tuple[float, float, float]] = []
        self.source = "none"

    def _read_nvml(self) -> list[tuple[float, float]]:
        import pynvml

        out = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            out.append((float(pynvml.nvmlDeviceGetUtilizationRates(h).gpu),
                        pynvml.nvmlDeviceGetMemoryInfo(h).used / 2**20))
        return out

    @staticmethod
    def _read_smi() -> list[tuple[float, float]]:
        r = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used",
                            "--format=csv,noheader,nounits"], capture_output=True, text=True,
                           timeout=10)
        return [(float(a), float(b)) for a, b in
                (line.split(",") for line in r.stdout.strip().splitlines() if "," in line)]

    def _reader(self):
        try:
            import pynvml

            pynvml.nvmlInit()
            self.source = "nvml"
            return self._read_nvml
        except Exception:  # noqa: BLE001  (not installed, or no driver)
            if shutil.which("nvidia-smi"):
                self.source = "nvidia-smi"
                return self._read_smi
        return None

    def _run(self, read) -> None:
        t0 = time.time()
        while not self._stop.is_set():
            with contextlib.suppress(Exception):
                for util, mb in read():
                    self.samples.append((time.time() - t0, util, mb))
            self._stop.wait(self.interval)

    def __enter__(self) -> GpuSampler:
        read = self._reader()
        self._thread = threading.Thread(target=self._run, args=(read,), daemon=True) \
            if read else None
        if self._thread:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()

    def summary(self, after: float = 0.0) -> dict:
        """Mean and peak utilisation (also from ``after`` seconds on: the steady part) and
        peak memory in use."""
        if not self.samples:
            return {"source": self.source}
        util = [u for _, u, _ in self.samples]
        steady = [u for t, u, _ in self.samples if t >= after] or util
        return {"source": self.source, "samples": len(util),
                "util_mean_pct": round(sum(util) / len(util), 1),
                "util_steady_mean_pct": round(sum(steady) / len(steady), 1),
                "util_max_pct": max(util),
                "memory_peak_mb": max(m for _, _, m in self.samples)}
