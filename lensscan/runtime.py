"""Connect to Ray: a running cluster when there is one (``ray job submit``, ``RAY_ADDRESS``),
else a local instance sized to this machine.

No credential or environment value is ever put in a runtime env: Ray logs runtime envs (the
runtime-env agent's log, on every node), so a secret there leaks. Workers of a local instance
inherit the driver's environment as it was when Ray started (so ``AWS_*`` and
``AWS_ENDPOINT_URL`` reach them); on a cluster, nodes use their own credential chain (instance
role, service account) or the job's ``--runtime-env-json``, which the driver leaves as it is.
"""

from __future__ import annotations

import json
import logging
import os

import ray

#: Set by Ray's job manager in a submitted job's driver: the job's config (its runtime env too).
JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"


def driver_runtime_env(local: bool) -> dict:
    """The runtime env this driver adds: a worker start-up hook only, never environment
    variables, and no field that the submitted job's own runtime env already sets (Ray refuses
    to merge two runtime envs that set the same field)."""
    env: dict = {}
    if os.environ.get("LENSSCAN_WARM_WORKERS") == "1":  # opt-in, see warm_worker
        env["worker_process_setup_hook"] = "lensscan.runtime.warm_worker"
    elif local:
        env["worker_process_setup_hook"] = "lensscan.runtime.local_worker"
    job = json.loads(os.environ.get(JOB_CONFIG_ENV) or "{}").get("runtime_env") or {}
    return {k: v for k, v in env.items() if k not in job}


def ensure_ray(num_cpus: int | None = None, quiet: bool = True) -> None:
    """Start or join Ray once per process."""
    if ray.is_initialized():
        return
    local = not os.environ.get("RAY_ADDRESS")
    runtime_env = driver_runtime_env(local)
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
