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
    if os.environ.get("LENSSCAN_WARM_WORKERS", "1") != "0":
        runtime_env["worker_process_setup_hook"] = "lensscan.runtime.warm_worker"
    kwargs: dict = {"runtime_env": runtime_env} if runtime_env else {}
    if quiet:
        kwargs.update(logging_level=logging.WARNING, log_to_driver=True)
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], **kwargs)
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, **kwargs)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = not quiet
    ctx.print_on_execution_start = not quiet


def warm_worker() -> None:
    """Ray worker start-up hook: import torch and the scoring code while the worker is idle, so
    that a scoring actor created later starts in well under a second instead of paying the
    imports (about 2-3 s here) on the critical path."""
    import lensscan.score.predictor  # noqa: F401  (imports torch)


def cluster_cpus() -> float:
    """CPUs of the Ray cluster."""
    return float(ray.cluster_resources().get("CPU", 1.0))


def cluster_gpus() -> float:
    """GPUs of the Ray cluster (including declared fake ones)."""
    return float(ray.cluster_resources().get("GPU", 0.0))
