"""Connect to Ray: a running cluster when there is one (``ray job submit``, ``RAY_ADDRESS``),
else a local instance sized to this machine; keep Ray's messages that mean nothing to a user
(:data:`RAY_NOISE`) off the terminal, while its real warnings and errors still show.

No credential or environment value is ever put in a runtime env: Ray logs runtime envs (the
runtime-env agent's log, on every node), so a secret there leaks. Workers of a local instance
inherit the driver's environment as it was when Ray started (so ``AWS_*`` and
``AWS_ENDPOINT_URL`` reach them); on a cluster, nodes use their own credential chain (instance
role, service account) or the job's ``--runtime-env-json``, which the driver leaves as it is.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import threading
from collections.abc import Iterator

import ray

#: Set by Ray's job manager in a submitted job's driver: the job's config (its runtime env too).
JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"


def driver_runtime_env(local: bool, warm_hook: str | None = None) -> dict:
    """The runtime env this driver adds: a worker start-up hook only, never environment
    variables, and no field that the submitted job's own runtime env already sets (Ray refuses
    to merge two runtime envs that set the same field). ``warm_hook`` is the hook of
    ``LENSSCAN_WARM_WORKERS=1``, named by the package whose workers it warms (it calls
    :func:`local_worker` too)."""
    env: dict = {}
    if warm_hook and os.environ.get("LENSSCAN_WARM_WORKERS") == "1":  # opt-in
        env["worker_process_setup_hook"] = warm_hook
    elif local:
        env["worker_process_setup_hook"] = "lensscan.runtime.local_worker"
    job = json.loads(os.environ.get(JOB_CONFIG_ENV) or "{}").get("runtime_env") or {}
    return {k: v for k, v in env.items() if k not in job}


def ensure_ray(num_cpus: int | None = None, quiet: bool = True,
               warm_hook: str | None = None) -> None:
    """Start or join Ray once per process (``warm_hook``: see :func:`driver_runtime_env`)."""
    hide_ray_noise()  # before ray.init, which warns about token authentication
    if ray.is_initialized():
        return
    local = not os.environ.get("RAY_ADDRESS")
    runtime_env = driver_runtime_env(local, warm_hook)
    kwargs: dict = {"runtime_env": runtime_env} if runtime_env else {}
    if quiet:
        kwargs.update(logging_level=logging.WARNING, log_to_driver=True)
    if local:
        ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, **kwargs)
    else:
        ray.init(address=os.environ["RAY_ADDRESS"], **kwargs)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = not quiet
    ctx.print_on_execution_start = not quiet
    hide_ray_noise()  # Ray Data's console handler too, now that Ray Data is imported


#: Ray Train's placement-group cleaner polls the State API every second and warns each time it
#: is unavailable, which it always is on a local instance started without the dashboard.
_NO_STATE_API_LOGGERS = ("ray.train.v2._internal.execution.controller.placement_group_cleaner",)


def local_worker() -> None:
    """Ray worker start-up hook of the local instance: silence warnings that only say the
    dashboard (and so the State API) is not running. Cheap: imports nothing."""
    for name in _NO_STATE_API_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def cluster_running() -> bool:
    """True when this process runs on a Ray cluster: one named by ``RAY_ADDRESS`` (a submitted
    job's driver, or a user's shell after ``ray start``), or Ray already started in this
    process."""
    return bool(os.environ.get("RAY_ADDRESS")) or ray.is_initialized()


def cluster_cpus() -> float:
    """CPUs of the Ray cluster."""
    return float(ray.cluster_resources().get("CPU", 1.0))


def cluster_gpus() -> float:
    """GPUs of the Ray cluster (including declared fake ones)."""
    return float(ray.cluster_resources().get("GPU", 0.0))


#: Ray's messages that mean nothing to a user of lensscan (Ray's log files keep them): the
#: local instance's token authentication, Ray Data's actor pools' constructor arguments (an
#: error of Ray's C++ core worker, written to this process's stderr, once per process), Ray
#: Data's progress bars being off (lensscan shows its own progress) and its closing line.
RAY_NOISE = (
    "Token authentication is enabled for this Ray cluster",
    "has constructor arguments in the object store and max_restarts > 0",
    "Progress bars disabled. To enable",
    "execution finished in",
)


def is_noise(line: str) -> bool:
    """True for a line holding one of :data:`RAY_NOISE`."""
    return any(n in line for n in RAY_NOISE)


class _RayNoise(logging.Filter):
    """Drops the records of :data:`RAY_NOISE`."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not is_noise(record.getMessage())


_NOISE_FILTER = _RayNoise()


def hide_ray_noise() -> None:
    """Filter :data:`RAY_NOISE` out of the console handlers of Ray's and Ray Data's loggers
    (their log files keep it); idempotent."""
    for name in ("ray", "ray.data"):
        for h in logging.getLogger(name).handlers:
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
                h.addFilter(_NOISE_FILTER)  # a filter already there is not added twice


@contextlib.contextmanager
def native_stderr_filtered() -> Iterator[None]:
    """Pass this process's file descriptor 2 through a thread that drops the lines of
    :data:`RAY_NOISE` and forwards everything else as it comes (partial lines included): Ray's
    C++ core worker writes its errors there, out of reach of Python's logging.

    On a terminal, a line that arrives while an unterminated one (a progress line) is shown
    first clears it. Child processes started inside the block would inherit the pipe: Ray's own
    are started before it (:func:`ensure_ray`). What is written just before the process dies
    at once (``abort``) may not reach the terminal: Ray's log files keep it."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable stderr: nothing to filter
        yield
        return
    r, w = os.pipe()
    os.dup2(w, 2)
    os.close(w)
    pump = threading.Thread(target=_pump, args=(r, saved, os.isatty(saved)), daemon=True,
                            name="lensscan-stderr")
    pump.start()
    try:
        yield
    finally:
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.flush()
        os.dup2(saved, 2)  # closes the pipe's write end: the pump drains it and stops
        pump.join(timeout=5)
        if not pump.is_alive():  # else a child holds the pipe open: the pump keeps the fd
            os.close(saved)


def _pump(r: int, out: int, tty: bool) -> None:
    """Copy ``r`` to ``out`` without the noise lines, until end of file; closes ``r``."""
    open_line = False  # the terminal shows a line without its end (a progress line)
    dropped = False  # a noise line was dropped without its end (print writes it apart)
    with contextlib.suppress(OSError):
        while chunk := os.read(r, 1 << 16):
            kept = []
            for seg in chunk.splitlines(keepends=True):
                if dropped and seg in (b"\n", b"\r\n"):
                    dropped = False
                    continue
                dropped = is_noise(seg.decode(errors="replace"))
                if dropped:
                    dropped = not seg.endswith((b"\n", b"\r"))
                    continue
                if tty and open_line and not seg.startswith(b"\r"):
                    seg = b"\r\x1b[K" + seg  # a line of its own, not on the progress line
                kept.append(seg)
                open_line = not seg.endswith((b"\n", b"\r"))
            if kept:
                os.write(out, b"".join(kept))
    os.close(r)
