"""Cluster configs: the launcher YAML against Ray's own schema, KubeRay manifests structurally."""

from __future__ import annotations

import pathlib
import shlex

import pytest
import yaml

CLUSTER = pathlib.Path(__file__).resolve().parents[2] / "cluster"
ROOT = CLUSTER.parent


def _validate(config):
    """Validate against ray/autoscaler/ray-schema.json, the schema `ray up` uses."""
    import json

    import jsonschema
    import ray.autoscaler

    schema_path = pathlib.Path(ray.autoscaler.__file__).parent / "ray-schema.json"
    jsonschema.validate(config, json.loads(schema_path.read_text()))


def test_launcher_config_matches_rays_schema():
    config = yaml.safe_load((CLUSTER / "aws-gpu.yaml").read_text())
    _validate(config)  # raises on any schema violation
    types = config["available_node_types"]
    assert types[config["head_node_type"]]["resources"]["GPU"] == 0
    gpu = [t for t in types.values() if t["resources"].get("GPU", 0) >= 1]
    assert gpu and gpu[0]["min_workers"] == 0 and gpu[0]["max_workers"] >= 1
    assert any("pip install" in c and "lensscan" in c for c in config["setup_commands"])


def test_every_node_runs_ray_with_the_clusters_token():
    """Ray 2.60's head turns token authentication on: a worker needs the same token to join."""
    config = yaml.safe_load((CLUSTER / "aws-gpu.yaml").read_text())
    assert config["file_mounts"]["/home/ubuntu/.ray/auth_token"] == "~/.ray/auth_token"
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in config[key] if "ray start" in c]
        assert starts and all(c.startswith("RAY_AUTH_MODE=token ") for c in starts), key
    for name in ("raycluster.yaml", "rayjob-score.yaml", "rayjob-train.yaml"):
        doc = yaml.safe_load((CLUSTER / "kuberay" / name).read_text())
        spec = doc["spec"] if doc["kind"] == "RayCluster" else doc["spec"]["rayClusterSpec"]
        assert spec["authOptions"] == {"mode": "token"} and spec["rayVersion"] >= "2.52", name


def test_launcher_schema_rejects_a_broken_config():
    import jsonschema

    config = yaml.safe_load((CLUSTER / "aws-gpu.yaml").read_text())
    config["available_node_types"]["head"]["not_a_field"] = 1
    with pytest.raises(jsonschema.ValidationError, match="not_a_field"):
        _validate(config)


def _containers(pod_template):
    return pod_template["spec"]["containers"]


def _check_cluster_spec(spec):
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-gpus"] == "0"
    for c in _containers(head["template"]):
        assert c["image"] and c["resources"]["limits"]["cpu"]
    groups = spec["workerGroupSpecs"]
    assert groups
    for g in groups:
        assert g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]
        for c in _containers(g["template"]):
            assert c["resources"]["limits"]["nvidia.com/gpu"] == g["rayStartParams"]["num-gpus"]


def test_kuberay_raycluster():
    doc = yaml.safe_load((CLUSTER / "kuberay" / "raycluster.yaml").read_text())
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayCluster"
    _check_cluster_spec(doc["spec"])


@pytest.mark.parametrize("name,script", [("rayjob-score.yaml", "jobs/score_survey.py"),
                                         ("rayjob-train.yaml", "jobs/train_ensemble.py")])
def test_kuberay_rayjobs_run_real_entry_points(name, script):
    doc = yaml.safe_load((CLUSTER / "kuberay" / name).read_text())
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayJob"
    argv = shlex.split(doc["spec"]["entrypoint"])
    assert argv[:2] == ["python", script] and (ROOT / script).exists()
    _check_cluster_spec(doc["spec"]["rayClusterSpec"])
    if script.endswith("score_survey.py"):
        from importlib.util import module_from_spec, spec_from_file_location

        spec = spec_from_file_location("score_survey", ROOT / script)
        mod = module_from_spec(spec)
        spec.loader.exec_module(mod)
        args = mod.parse(argv[2:])  # the entrypoint's arguments parse
        assert args.input.startswith("s3://") and args.output.startswith("s3://")
