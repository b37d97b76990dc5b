"""`lensscan evaluate`: every metric of the contract in metrics.json, and the plots."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lensscan import modelcard
from lensscan.data.preprocess import Preprocessing, preprocess
from lensscan.io.shards import read_shard
from lensscan.io.storage import list_shards
from lensscan.train.evaluate import evaluate

CONTRACT = {"roc_auc", "average_precision", "recall_at_fpr_1e-2", "recall_at_fpr_1e-3",
            "precision", "recall", "f1", "confusion", "threshold", "fp_per_lens_top_100"}


def test_evaluate_writes_metrics_and_plots(ray_local, tiny_model, sim_survey, tmp_path):
    report = evaluate(tiny_model, sim_survey, str(tmp_path / "rep"), gradcam=2)
    saved = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert saved["ensemble"]["roc_auc"] == report["ensemble"]["roc_auc"]
    for name in ("ensemble", "m0", "m1"):
        assert set(saved[name]) >= CONTRACT
    e = saved["ensemble"]
    assert e["n_lenses"] == 12 and e["n_nonlenses"] == 48
    c = e["confusion"]
    assert c["tp"] + c["fn"] == 12 and c["fp"] + c["tn"] == 48
    assert set(e["fpr_per_kind"]) <= {"elliptical", "spiral", "ring", "merger", "companions",
                                      "edge_on", "star", "blank"}
    assert sum(b["n"] for b in e["recall_per_arc_snr"].values()) == 12
    for png in ("roc.png", "pr.png", "confusion.png", "scores.png"):
        assert (tmp_path / "rep" / png).stat().st_size > 1000
    # independent check: the model called directly, AUC as a pairwise probability
    rows = [read_shard(u) for u in list_shards(sim_survey)]
    y = np.concatenate([r["label"] for r in rows])
    loaded = modelcard.load_model(tiny_model)
    x = torch.from_numpy(preprocess(np.concatenate([r["image"] for r in rows]),
                                    Preprocessing.from_dict(loaded.preprocessing)))
    with torch.inference_mode():
        s = loaded.module(x)[0].numpy()
    diff = s[y == 1][:, None] - s[y == 0][None, :]
    pairwise = ((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size
    assert e["roc_auc"] == pytest.approx(pairwise, abs=1e-6)
    assert (tmp_path / "rep" / "gradcam.png").exists() or c["tp"] + c["fp"] == 0
