"""Training checkpoints without pickle: tensors in safetensors, everything else in JSON.

A checkpoint folder holds ``model.safetensors`` (current weights), ``best.safetensors`` (weights
with the best validation AUC so far), ``optimizer.safetensors`` (flattened optimizer tensors) and
``state.json`` (epoch, history, optimizer hyper-parameters, scheduler state). A run whose data
cannot train reports a folder holding ``data_problem.txt`` (Ray Train keeps a run's metrics only
with a checkpoint), beside the weights of its last checkpoint when it had one.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch
from safetensors.torch import load_file, save_file


def _opt_flatten(opt_state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, scalars = {}, {}
    for pid, st in opt_state["state"].items():
        for key, val in st.items():
            if torch.is_tensor(val):
                tensors[f"{pid}.{key}"] = val.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{key}"] = val
    return tensors, {"param_groups": opt_state["param_groups"], "scalars": scalars}


def _opt_unflatten(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for name, val in list(tensors.items()) + list(meta["scalars"].items()):
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = val
    return {"state": state, "param_groups": meta["param_groups"]}


def save(path: str, model_state: dict, best_state: dict, opt_state: dict,
         state: dict[str, Any], sched_state: dict) -> None:
    """Write a checkpoint folder at ``path`` (local)."""
    os.makedirs(path, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in model_state.items()},
              os.path.join(path, "model.safetensors"))
    save_file({k: v.detach().cpu().contiguous() for k, v in best_state.items()},
              os.path.join(path, "best.safetensors"))
    tensors, meta = _opt_flatten(opt_state)
    save_file(tensors, os.path.join(path, "optimizer.safetensors"))
    with open(os.path.join(path, "state.json"), "w") as fh:
        json.dump({**state, "optimizer": meta, "scheduler": sched_state}, fh)


def load(path: str) -> tuple[dict, dict, dict, dict, dict]:
    """Read a checkpoint folder: (model, best, optimizer, state, scheduler)."""
    with open(os.path.join(path, "state.json")) as fh:
        state = json.load(fh)
    opt = _opt_unflatten(load_file(os.path.join(path, "optimizer.safetensors")),
                         state.pop("optimizer"))
    sched = state.pop("scheduler")
    return (load_file(os.path.join(path, "model.safetensors")),
            load_file(os.path.join(path, "best.safetensors")), opt, state, sched)


PROBLEM = "data_problem.txt"
DIVERGED = "diverged.txt"


def save_problem(path: str, problem: str, diverged: bool = False) -> None:
    """Write a checkpoint folder that says why the run's data cannot train (``diverged``: why
    the weights stopped being finite)."""
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, DIVERGED if diverged else PROBLEM), "w") as fh:
        fh.write(problem)


def read_problem(path: str, diverged: bool = False) -> str | None:
    """The problem a checkpoint folder reports (``diverged``: the divergence), or None for a
    checkpoint of weights."""
    try:
        with open(os.path.join(path, DIVERGED if diverged else PROBLEM)) as fh:
            return fh.read()
    except FileNotFoundError:
        return None


def has_weights(path: str) -> bool:
    """True for a checkpoint folder a run can resume from: weights and state, not diverged (a
    data problem's folder carries the weights of the checkpoint before it, if any)."""
    return (read_problem(path, diverged=True) is None
            and os.path.exists(os.path.join(path, "state.json")))


def report_problem(rank: int, problem: str, diverged: bool = False) -> None:
    """End a Ray Train worker's run with a report of why it cannot train (rank 0's, as a
    checkpoint folder, :func:`save_problem`), not a failure Ray would retry. A data problem's
    folder also carries the run's last weights: it becomes the latest checkpoint, and a rerun
    whose data can train resumes from them rather than from nothing (with only two kept, the
    next report would have rotated them out)."""
    import shutil
    import tempfile

    import ray.train

    if rank:
        ray.train.report({})
        return
    before = None if diverged else ray.train.get_checkpoint()
    with tempfile.TemporaryDirectory() as d:
        if before is not None:
            with before.as_directory() as last:
                if has_weights(last):
                    shutil.copytree(last, d, dirs_exist_ok=True)
        save_problem(d, problem, diverged)
        ray.train.report({}, checkpoint=ray.train.Checkpoint.from_directory(d))
