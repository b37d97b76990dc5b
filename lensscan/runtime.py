"""Connect to Ray: a running cluster when there is one (``ray job submit``, ``RAY_ADDRESS``),
else a local instance sized to this machine."""

from __future__ import annotations

import logging
import os

import ray

#: Environment variables forwarded to every Ray worker (credential *chains*, never values in code).
FORWARD_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID",
               "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_REGION",
               "AWS_PROFILE", "GOOGLE_APPLICATION_CREDENTIALS")


def ensure_ray(num_cpus: int | None = None, quiet: bool = True) -> None:
    """Start or join Ray once per process."""
    if ray.is_initialized():
        return
    env = {k: os.environ[k] for k in FORWARD_ENV if k in os.environ}
    runtime_env: dict = {"env_vars": env} if env else {}
    local = not os.environ.get("RAY_ADDRESS")
    if os.environ.get("LENSSCAN_WARM_WORKERS") == "1":  # opt-in, see warm_worker
        runtime_env["worker_process_setup_hook"] = "lensscan.runtime.warm_worker"
    elif local:
        runtime_env["worker_process_setup_hook"] = "lensscan.runtime.local_worker"
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


#: Ray Train's placement-group cleaner polls the State API every second and warns each time it
#: is unavailable, which it always is on a local instance started without the dashboard.
_NO_STATE_API_LOGGERS = ("ray.train.v2._internal.execution.controller.placement_group_cleaner",)


def local_worker() -> None:
    """Ray worker start-up hook of the local instance: silence warnings that only say the
    dashboard (and so the State API) is not running. Cheap: imports nothing."""
    for name in _NO_STATE_API_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def warm_worker() -> None:
    """Ray worker start-up hook (opt-in: ``LENSSCAN_WARM_WORKERS=1``): import torch and the
    scoring code in every new worker, so that a scoring actor starts without paying the imports.

    Off by default: every worker pays it, the read tasks and Ray's own service actors included,
    which need no torch. Measured here (``lensscan bench --n 20000``, 2 cores): with the hook the
    first unit was committed after 13-14 s and the process tree peaked at 4.3 GB PSS; without
    it, 10-12.5 s and 3.7 GB."""
    local_worker()
    import lensscan.score.predictor  # noqa: F401  (imports torch)


def cluster_cpus() -> float:
    """CPUs of the Ray cluster."""
    return float(ray.cluster_resources().get("CPU", 1.0))


def cluster_gpus() -> float:
    """GPUs of the Ray cluster (including declared fake ones)."""
    return float(ray.cluster_resources().get("GPU", 0.0))
