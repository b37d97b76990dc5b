"""`lensscan evaluate`: every metric of the contract in metrics.json, and the plots."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from support import make_batch

from lensscan import modelcard
from lensscan.data.preprocess import Preprocessing, preprocess
from lensscan.io.shards import read_shard
from lensscan.io.storage import list_shards
from lensscan.train.evaluate import _by_truth, _gradcam, evaluate

CONTRACT = {"roc_auc", "average_precision", "recall_at_fpr_1e-2", "recall_at_fpr_1e-3",
            "precision", "recall", "f1", "confusion", "threshold", "fp_per_lens_top_100"}


def _direct_scores(model: str, data: str) -> tuple[np.ndarray, np.ndarray]:
    """Labels and ensemble scores of every row, the model called directly (no Ray)."""
    rows = [read_shard(u) for u in list_shards(data)]
    y = np.concatenate([r["label"] for r in rows])
    loaded = modelcard.load_model(model)
    x = torch.from_numpy(preprocess(np.concatenate([r["image"] for r in rows]),
                                    Preprocessing.from_dict(loaded.preprocessing)))
    with torch.inference_mode():
        return y, loaded.module(x)[0].numpy()


def _null_pixel_shard(url: str) -> None:
    """One labelled lens whose image has null pixels: quarantined, never a score."""
    b = make_batch(1, seed=2)
    flat = b["image"].reshape(-1).astype(object)
    flat[100:200] = None
    image = pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), 12288)
    pq.write_table(pa.table({"object_id": pa.array([10**9]), "label": pa.array([1], pa.int8()),
                             "image": image}), url)


def test_evaluate_writes_metrics_and_plots(ray_local, tiny_model, sim_survey, tmp_path):
    model = str(tmp_path / "model")
    shutil.copytree(tiny_model, model)
    y, s = _direct_scores(model, sim_survey)
    top = np.sort(s)[::-1]
    # the untrained model's scores sit close together: a threshold between the 10th and 11th
    # highest leaves 10 positives, so the confusion counts and Grad-CAM have something to show
    thr = float((top[9] + top[10]) / 2)
    assert top[9] > thr > top[10]
    modelcard.update_card(model, threshold=thr)
    data = tmp_path / "data"  # the survey plus a shard whose one row is quarantined
    shutil.copytree(sim_survey, data)
    _null_pixel_shard(str(data / "zz-bad.parquet"))
    report = evaluate(model, str(data), str(tmp_path / "rep"), gradcam=2)
    saved = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert saved["rows"] == {"read": 61, "used": 60, "unlabelled": 0,
                             "left_out": {"null_pixels": 1}, "duplicate_object_ids": 0}
    assert saved["ensemble"]["roc_auc"] == report["ensemble"]["roc_auc"]
    for name in ("ensemble", "m0", "m1"):
        assert set(saved[name]) >= CONTRACT
    e = saved["ensemble"]
    assert e["n_lenses"] == 12 and e["n_nonlenses"] == 48
    assert e["threshold"] == pytest.approx(thr)
    c = e["confusion"]
    assert c["tp"] + c["fn"] == 12 and c["fp"] + c["tn"] == 48
    assert (c["tp"], c["fp"]) == (int(y[s > thr].sum()), int((1 - y[s > thr]).sum()))
    assert c["tp"] + c["fp"] == 10
    assert set(e["fpr_per_kind"]) <= {"elliptical", "spiral", "ring", "merger", "companions",
                                      "edge_on", "star", "blank"}
    assert sum(b["n"] for b in e["recall_per_arc_snr"].values()) == 12
    for png in ("roc.png", "pr.png", "confusion.png", "scores.png", "gradcam.png"):
        assert (tmp_path / "rep" / png).stat().st_size > 1000
    # independent check: AUC as a pairwise probability of the directly computed scores
    diff = s[y == 1][:, None] - s[y == 0][None, :]
    pairwise = ((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size
    assert e["roc_auc"] == pytest.approx(pairwise, abs=1e-6)


def test_truth_breakdowns_count_only_the_rows_that_have_that_truth():
    """An imported set has no kinds and no arc S/N: no breakdown, where every row (lenses too)
    used to be counted under a kind named "nan"; a kind's rate is over its non-lenses only."""
    y, s = np.array([1, 1, 0, 0, 0]), np.array([0.9, 0.2, 0.8, 0.1, 0.7])
    assert _by_truth(y, s, 0.5, {"kind": np.full(5, np.nan, object),
                                 "arc_snr": np.full(5, np.nan)}) == {}
    out = _by_truth(y, s, 0.5, {"kind": np.array([None, "lens", "ring", "ring", None], object),
                                "arc_snr": np.array([30.0, np.nan, np.nan, np.nan, np.nan])})
    assert out["fpr_per_kind"] == {"ring": {"n": 2, "fpr": 0.5}}
    assert out["recall_per_arc_snr"]["20-40"] == {"n": 1, "recall": 1.0}
    assert sum(b["n"] for b in out["recall_per_arc_snr"].values()) == 1
    only_lenses = {"kind": np.array(["lens", "lens", None, None, None], object)}
    assert _by_truth(y, s, 0.5, only_lenses) == {}
    as_bytes = {"kind": np.array([b"lens", b"lens", b"ring", b"star", b"ring"])}
    assert _by_truth(y, s, 0.5, as_bytes)["fpr_per_kind"] == {
        "ring": {"n": 2, "fpr": 1.0}, "star": {"n": 1, "fpr": 0.0}}


def test_no_gradcam_without_positives(tmp_path):
    """Nothing above the threshold: no Grad-CAM figure (and the stream is not read)."""
    y, s = np.array([1, 0, 1, 0]), np.array([0.2, 0.4, 0.3, 0.1])
    path = tmp_path / "gradcam.png"
    _gradcam(None, None, y, s, 0.5, {"object_id": np.arange(4)}, 4, str(path))
    assert not path.exists()


def test_evaluation_needs_both_classes_and_a_local_report_folder(ray_local, tiny_model,
                                                                 tmp_path):
    """One class has no AUC (it was reported as 0.0); no labels gave an IndexError; an s3://
    report folder was written to a local folder named 's3:'."""
    from lensscan.io.parquet import write_parquet

    with pytest.raises(ValueError, match="--out s3://b/r: the report is written to a local"):
        evaluate(tiny_model, str(tmp_path), "s3://b/r")
    batch = make_batch(6, seed=3)
    batch["label"][:] = 0
    write_parquet(str(tmp_path / "d" / "a.parquet"), batch)
    with pytest.raises(ValueError, match=r"needs labelled lenses and non-lenses: 0 lenses, 6 "
                                         r"non-lenses among 6 rows read \(0 without a label\)"):
        evaluate(tiny_model, str(tmp_path / "d"), str(tmp_path / "rep"))
    write_parquet(str(tmp_path / "e" / "a.parquet"), make_batch(4, seed=3, labels=False))
    with pytest.raises(ValueError, match=r"0 lenses, 0 non-lenses among 4 rows read \(4 "):
        evaluate(tiny_model, str(tmp_path / "e"), str(tmp_path / "rep"))
    bad = make_batch(3, seed=4)
    bad["image"][:] = np.nan  # every row quarantined: say so, not that labels are missing
    write_parquet(str(tmp_path / "n" / "a.parquet"), bad)
    with pytest.raises(ValueError, match=r"n: evaluation could use none of the 3 rows read: all "
                                         r"left out \(3 [a-z_]+; the line above gives"):
        evaluate(tiny_model, str(tmp_path / "n"), str(tmp_path / "rep"))
    assert not (tmp_path / "rep").exists()


def test_labels_names_and_scores_that_would_mislead_a_report(ray_local, tiny_model, tmp_path,
                                                             capsys):
    """A label that is no class (2) was counted as a lens; an --also name that is the report's
    own ("ensemble") replaced the model's results; ids are plain text in the plots; a model
    whose every score is NaN (diverged weights) gave metrics of noise."""
    from safetensors.torch import load_file, save_file

    from lensscan.cli import main
    from lensscan.io.parquet import write_parquet

    batch = make_batch(40, seed=5, start_id=100)
    batch["object_id"] = np.array([f"$\\frac{{$_{i}" for i in range(40)], dtype=object)
    batch["label"][:] = np.arange(40) % 2
    batch["label"][0] = 2
    write_parquet(str(tmp_path / "d" / "a.parquet"), batch)
    report = evaluate(tiny_model, str(tmp_path / "d"), str(tmp_path / "rep"))
    assert report["rows"]["left_out"] == {"invalid_label": 1} and report["rows"]["used"] == 39
    assert (tmp_path / "rep" / "roc.png").exists()
    assert "1 of 40 rows left out, not ok (1 invalid_label" in capsys.readouterr().err
    assert main(["evaluate", tiny_model, str(tmp_path / "d"), "--out", str(tmp_path / "r2"),
                 "--also", f"ensemble={tiny_model}"]) == 2
    assert "--also ensemble=...: the name is the report's own" in capsys.readouterr().err
    for also in ("round15", "mine=", "=x"):
        assert main(["evaluate", tiny_model, str(tmp_path / "d"), "--out", str(tmp_path / "r3"),
                     "--also", also]) == 2
        assert "give NAME=MODEL, both parts non-empty" in capsys.readouterr().err
    # --also given twice kept only the last list; a missing --also model or an --out that is a
    # file was found only after the main model had scored every row
    args = ["evaluate", tiny_model, str(tmp_path / "d"), "--out"]
    assert main([*args, str(tmp_path / "r5"), "--also", f"a={tiny_model}",
                 "--also", f"b={tiny_model}"]) == 0
    assert {"a", "b"} <= set(json.loads((tmp_path / "r5" / "metrics.json").read_text()))
    assert main([*args, str(tmp_path / "r6"), "--also", f"a={tiny_model}",
                 "--also", f"a={tiny_model}"]) == 2
    assert "--also: a is given twice" in capsys.readouterr().err
    assert main([*args, str(tmp_path / "r7"), "--also", f"b={tmp_path / 'none'}"]) == 2
    err = capsys.readouterr().err
    assert "--also b: " in err and "not a lensscan model folder" in err
    assert "rows left out" not in err  # the note on d's invalid label, printed once d is read
    (tmp_path / "file").write_text("x")
    assert main([*args, str(tmp_path / "file"), "--also", f"b={tmp_path / 'none'}"]) == 2
    assert "--out " in (err := capsys.readouterr().err) and "is a file, not a folder" in err
    with pytest.raises(ValueError, match=r"file is a file, not a folder"):
        evaluate(tiny_model, str(tmp_path / "d"), f"file://{tmp_path / 'file' / 'sub'}")
    (tmp_path / "gone").symlink_to(tmp_path / "nowhere")
    with pytest.raises(ValueError, match=r"gone is a file, not a folder"):
        evaluate(tiny_model, str(tmp_path / "d"), str(tmp_path / "gone"))
    evaluate(tiny_model, str(tmp_path / "d"), f"file://{tmp_path / 'r8'}", gradcam=0)
    assert (tmp_path / "r8" / "metrics.json").exists()
    capsys.readouterr()
    # a shard copied twice counted every object twice, silently
    shutil.copy(tmp_path / "d" / "a.parquet", tmp_path / "d" / "b.parquet")
    with pytest.warns(UserWarning) as warned:
        twice = evaluate(tiny_model, str(tmp_path / "d"), str(tmp_path / "r9"), gradcam=0)
    assert twice["rows"]["used"] == 78 and twice["rows"]["duplicate_object_ids"] == 39
    said = [str(w.message) for w in warned if "object id" in str(w.message)]
    assert len(said) == 1 and "39 of the 78 rows used repeat an earlier row's object id" \
        in said[0] and "first: '$\\\\frac{$_1'" in said[0], said
    (tmp_path / "d" / "b.parquet").unlink()
    assert not (tmp_path / "r6").exists() and not (tmp_path / "r7").exists()
    nan = tmp_path / "nan"
    shutil.copytree(tiny_model, nan)
    for card in nan.rglob("card.json"):
        if card.parent == nan:
            continue
        weights = card.parent / "model.safetensors"
        state = {k: v.fill_(float("nan")) if v.is_floating_point() else v
                 for k, v in load_file(weights).items()}
        save_file(state, weights)
        raw = json.loads(card.read_text())
        raw["weights"]["sha256"] = __import__("hashlib").sha256(weights.read_bytes()).hexdigest()
        card.write_text(json.dumps(raw))
    with pytest.raises(modelcard.ModelError, match="scores are not finite for any of the 39"):
        evaluate(str(nan), str(tmp_path / "d"), str(tmp_path / "r4"))


def test_scores_skip_batches_without_usable_rows_and_keep_the_top_apart(ray_local, tiny_model,
                                                                        tmp_path):
    """A batch whose rows were all unlabelled or quarantined crashed `evaluate --tta` (an empty
    batch of 8 views cannot be reshaped); probabilities were float32, exactly 1 from a logit of
    about 16.6, which tied the top of a ranking across classes."""
    from lensscan.io.parquet import write_parquet
    from lensscan.models.ensemble import Ensemble
    from lensscan.train.predict import _scores, member_scores
    from lensscan.train.trainer import dataset

    batch = make_batch(8, seed=2)
    batch["label"][:] = [-1, -1, -1, -1, 0, 1, 0, 1]  # the first batch of 4: no label
    write_parquet(str(tmp_path / "d" / "a.parquet"), batch)
    loaded = modelcard.load_model(tiny_model)
    loaded.module.tta = True
    ds = dataset(str(tmp_path / "d"), Preprocessing.from_dict(loaded.preprocessing), "model")
    rows: dict = {}
    y, s, _ = member_scores(loaded.module, ds, batch_size=4, rows=rows)
    assert y.tolist() == [0, 1, 0, 1] and s.shape == (4, 3) and s.dtype == np.float64
    assert rows["unlabelled"] == 4 and rows["used"] == 4

    class Fixed(torch.nn.Module):  # logits where float32's sigmoid is 1 for all three
        def forward(self, x):
            return torch.tensor([[17.0], [25.0], [33.0]])

    x = torch.zeros(3, 3, 48, 48)
    member = _scores(Fixed(), x)
    assert member[0] < member[1] < member[2] < 1.0
    assert torch.sigmoid(torch.tensor([17.0, 33.0])).tolist() == [1.0, 1.0]  # float32's
    ens = Ensemble([Fixed()], [1.0])
    both = _scores(ens, x)
    assert both.shape == (3, 2) and both[0, 0] < both[1, 0] < both[2, 0] < 1.0
    assert not ens.output_logits  # put back as it was
    ens.output_logits = True
    assert _scores(ens, x)[:, 0].tolist() == [17.0, 25.0, 33.0]  # logits, as asked
