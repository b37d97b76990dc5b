"""Shared fixtures for every test folder: a real S3 endpoint (moto server), local Ray, tiny models,
a small simulated survey. Plain helpers (seeded batches, ports, Chromium) are in ``support``."""

from __future__ import annotations

import os
import pathlib
import subprocess
import uuid

import pytest
from support import RAY, free_port


def pytest_configure(config: pytest.Config) -> None:
    """Before the test workers start (``pytest -n``): Ray's token, ``~/.ray/auth_token``. Each
    new local Ray writes one when it is missing, not atomically, and its daemons read the file:
    two workers starting Ray at once on a fresh machine could each write their own, and one
    cluster's daemons would then hold the other's. The token is printed on stdout, so it goes
    nowhere."""
    if hasattr(config, "workerinput") or (pathlib.Path.home() / ".ray" / "auth_token").exists():
        return
    subprocess.run([RAY, "get-auth-token", "--generate"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on a free 127.0.0.1 port; AWS_ENDPOINT_URL and dummy keys exported."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env["AWS_ENDPOINT_URL"]
    server.stop()
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def s3_bucket(s3_server) -> str:
    """A fresh bucket on the test server, as ``s3://name``."""
    import boto3

    name = f"test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=name)
    return f"s3://{name}"


@pytest.fixture(scope="session")
def ray_local(s3_server):
    """A local Ray instance (2 CPUs) that inherits the S3 test server's environment."""
    import ray

    from lensscan import runtime

    if ray.is_initialized():  # started earlier in the session without the S3 environment
        ray.shutdown()
    runtime.ensure_ray(num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    """An untrained two-member ensemble folder (small resnets), threshold 0.5."""
    import torch

    from lensscan import modelcard
    from lensscan.data.preprocess import Preprocessing
    from lensscan.models import create_model

    root = tmp_path_factory.mktemp("model")
    pre = Preprocessing().to_dict()
    members = []
    for i, arch in enumerate(["resnet", "baseline_cnn"]):
        torch.manual_seed(i)
        kw = {"widths": [8, 8, 16, 16]} if arch == "resnet" else {"widths": [4, 8, 8]}
        model = create_model(arch, **kw)
        name = f"m{i}"
        modelcard.save_member(str(root / name), model, {
            "name": name, "arch": arch, "arch_kwargs": kw, "preprocessing": pre,
            "bands": ["g", "r", "i"], "threshold": 0.5}, half=False)
        members.append({"name": name, "path": name, "weight": 0.5 + i * 0.25})
    modelcard.save_ensemble(str(root), {"name": "tiny", "preprocessing": pre, "members": members,
                                        "bias": 0.1, "threshold": 0.5})
    return str(root)


@pytest.fixture(scope="session")
def sim_survey(tmp_path_factory) -> str:
    """A small simulated survey (Parquet): 12 lenses among 60 cutouts."""
    from lensscan.simulate.survey import SurveySpec, simulate_survey

    out = tmp_path_factory.mktemp("sim") / "survey"
    simulate_survey(str(out), SurveySpec(12, 48, seed=7), shard_size=25, workers=1,
                    progress=False)
    return str(out)
