"""Shared fixtures: tiny seeded shards, a real S3 endpoint (moto server), local Ray, tiny models."""

from __future__ import annotations

import os
import shutil
import socket
import time
import uuid

import numpy as np
import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_batch(n: int, seed: int = 0, start_id: int = 0, labels: bool = True) -> dict:
    """A batch of ``n`` seeded cutouts: sky noise plus a blob, ids start_id.."""
    rng = np.random.default_rng(seed)
    images = rng.normal(0.0, 0.05, (n, 3, 64, 64)).astype(np.float32)
    yy, xx = np.mgrid[:64, :64]
    blob = np.exp(-((xx - 31.5) ** 2 + (yy - 31.5) ** 2) / 30.0).astype(np.float32)
    images += rng.uniform(1, 20, (n, 3, 1, 1)).astype(np.float32) * blob
    batch = {
        "object_id": np.arange(start_id, start_id + n, dtype=np.int64),
        "ra": rng.uniform(0, 360, n),
        "dec": rng.uniform(-60, 60, n),
        "image": images,
    }
    if labels:
        batch["label"] = (rng.random(n) < 0.3).astype(np.int8)
    return batch


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


def finish_output(out: str, shards: list[str] = ()) -> None:
    """Make a hand-built scoring output complete, as a run leaves it: the input listing of
    ``shards`` (their current size and ETag/mtime) and a manifest."""
    from lensscan.io import storage
    from lensscan.score import commit, fingerprint

    rec = fingerprint.RunRecord(input="test", model_checksum="test", threshold=0.5, top=None,
                                preprocessing={}, rows_per_unit=2048,
                                shards={s: storage.stamp(s) for s in shards})
    fingerprint.write(out, rec)
    commit.write_json(storage.join(out, commit.MANIFEST), {"fingerprint": rec.fingerprint})


def chromium(tmp_path, downloads=None):
    """Headless Debian Chromium under selenium; files it downloads go to ``downloads``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    if downloads:
        opts.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                               "download.prompt_for_download": False})
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1200,900",
                 f"--user-data-dir={tmp_path / 'profile'}"):
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


def downloaded(path, timeout: float = 10.0) -> str:
    """The text of a file the browser downloads to ``path``, once it is there and not empty."""
    deadline = time.time() + timeout
    while time.time() < deadline and not (path.exists() and path.stat().st_size):
        time.sleep(0.1)
    return path.read_text()
