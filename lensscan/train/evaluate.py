"""``lensscan evaluate MODEL DATA --out REPORT``: metrics.json and plots on a labelled set."""

from __future__ import annotations

import json
import os

import numpy as np
import torch

from lensscan import modelcard, runtime
from lensscan.data.display import rgb_composite
from lensscan.data.preprocess import Preprocessing
from lensscan.errors import ModelError
from lensscan.io import storage
from lensscan.models.card import REPORT_KEYS
from lensscan.train import plots
from lensscan.train.gradcam import grad_cam
from lensscan.train.metrics import summary
from lensscan.train.predict import member_scores, require_both_classes, warn_duplicates
from lensscan.train.trainer import dataset

SNR_BINS = (0, 10, 20, 40, 80, 1e9)


def _text(value) -> str:
    """A truth string as text; "" where the row has none (null, NaN, another type)."""
    if isinstance(value, bytes | np.bytes_):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else ""


def _by_truth(y, s, thr, extra) -> dict:
    """The false-positive rate per non-lens kind and the recall per arc S/N bin, over the rows
    whose truth has those values: a set that lacks them (an imported one, its columns null)
    gets neither key, rather than every row, lenses included, counted under a kind "nan"."""
    out: dict = {}
    if "kind" in extra:
        kinds = np.array([_text(k) for k in extra["kind"]], object)
        known = (y == 0) & (kinds != "")
        rates = {}
        for k in sorted(set(kinds[known])):
            sel = known & (kinds == k)
            rates[k] = {"n": int(sel.sum()), "fpr": float((s[sel] >= thr).mean())}
        if rates:
            out["fpr_per_kind"] = rates
    if "arc_snr" in extra:
        snr = np.asarray(extra["arc_snr"], dtype=float)
        if ((y == 1) & np.isfinite(snr)).any():
            bins = {}
            for lo, hi in zip(SNR_BINS[:-1], SNR_BINS[1:], strict=True):
                sel = (y == 1) & (snr >= lo) & (snr < hi)
                label = f"{lo:g}-{hi:g}" if hi < 1e9 else f">={lo:g}"
                bins[label] = {"n": int(sel.sum()),
                               "recall": float((s[sel] >= thr).mean()) if sel.any() else None}
            out["recall_per_arc_snr"] = bins
    return out


def evaluate(model_url: str, data: str, out: str, also: dict[str, str] | None = None,
             gradcam: int = 4, tta: bool = False) -> dict:
    """Score ``data`` with the model (and ``also`` = {name: url} for comparison), write
    ``metrics.json`` and plots to the local folder ``out``. ``tta`` averages every model over
    the 8 dihedral views of each cutout."""
    out = _report_folder(out)
    runtime.ensure_ray()
    loaded = modelcard.load_model(model_url)
    taken = [*REPORT_KEYS, *(m.name for m in loaded.card.members or ())]
    clash = [name for name in also or {} if name in taken]
    if clash:  # metrics.json's keys: another model's results would replace these
        raise ValueError(f"--also {clash[0]}=...: the name is the report's own ({', '.join(taken)}"
                         "); pick another")
    others = {name: _load_other(name, url) for name, url in (also or {}).items()}  # all, first
    loaded.module.tta = tta
    pre = Preprocessing.from_dict(loaded.preprocessing)
    keep = ("label", "kind", "arc_snr", "object_id")
    ds = dataset(data, pre, "model", keep_extra=keep)
    rows: dict = {}
    y, s_all, extra = member_scores(loaded.module, ds, extra=("kind", "arc_snr", "object_id"),
                                    rows=rows)
    require_both_classes(y, rows, data, "evaluation")
    rows["duplicate_object_ids"] = warn_duplicates(extra["object_id"], data)
    os.makedirs(out, exist_ok=True)
    s = s_all[:, 0]
    thr = loaded.threshold
    report = {"model": model_url, "data": data, "tta": tta, "rows": rows,
              "ensemble": summary(y, s, thr)}

    report["ensemble"].update(_by_truth(y, s, thr, extra))
    curves = {"ensemble": (y, s)}
    histories = {}
    for j, m in enumerate(loaded.card.members or ()):
        mcard = modelcard.read_card(storage.join(modelcard.resolve(model_url), m.path))
        ms = s_all[:, 1 + j]
        report[m.name] = summary(y, ms, mcard.operating_threshold)
        report[m.name].update(_by_truth(y, ms, mcard.operating_threshold, extra))
        curves[m.name] = (y, ms)
        histories[m.name] = (mcard.training or {}).get("history", [])
    for name, other in others.items():
        other.module.tta = tta
        oy, os_, oex = member_scores(other.module, dataset(
            data, Preprocessing.from_dict(other.preprocessing), "model", keep_extra=keep),
            extra=("kind", "arc_snr"))
        report[name] = summary(oy, os_[:, 0], other.threshold)
        report[name].update(_by_truth(oy, os_[:, 0], other.threshold, oex))
        curves[name] = (oy, os_[:, 0])
    with open(os.path.join(out, "metrics.json"), "w") as fh:
        json.dump(report, fh, indent=2)
    plots.roc_plot(os.path.join(out, "roc.png"), curves)
    plots.pr_plot(os.path.join(out, "pr.png"), curves)
    plots.confusion_plot(os.path.join(out, "confusion.png"), report["ensemble"]["confusion"], thr)
    plots.histogram_plot(os.path.join(out, "scores.png"), y, s, thr)
    if any(histories.values()):
        plots.history_plot(os.path.join(out, "history.png"), histories)
    if gradcam:
        _gradcam(loaded, ds, y, s, thr, extra, gradcam, os.path.join(out, "gradcam.png"))
    return report


def _report_folder(out: str) -> str:
    """``--out`` as a local folder's path (``file://`` taken off), refused in one line before
    anything is scored when it is a URL, or a file (a dangling link) or lies under one."""
    if not storage.is_local(out):
        raise ValueError(f"--out {out}: the report is written to a local folder, not a URL")
    try:
        return storage.check_folder(out)
    except ValueError as exc:
        raise ValueError(f"--out {exc}; the report is a folder") from None


def _load_other(name: str, url: str):
    """The ``--also`` model ``name``, loaded before anything is scored; its error names it."""
    try:
        return modelcard.load_model(url)
    except ModelError as exc:
        raise ModelError(f"--also {name}: {exc}") from None


def _gradcam(loaded, ds, y, s, thr, extra, n, path) -> None:
    """Grad-CAM of the highest-weight member for the top true and false positives."""
    ids = extra["object_id"]
    order = np.argsort(-s)
    tp = [i for i in order if y[i] == 1 and s[i] >= thr][:n]
    fp = [i for i in order if y[i] == 0 and s[i] >= thr][:n]
    pick = {ids[i]: ("TP" if y[i] else "FP") for i in tp + fp}
    if not pick:
        return
    imgs, titles = [], []
    for batch in ds.iter_batches(batch_size=1024, batch_format="numpy"):
        for k, oid in enumerate(batch["object_id"]):
            if oid in pick:
                imgs.append(batch["image"][k])
                titles.append(f"{pick[oid]} {oid}")
    member = loaded.module.members[int(np.argmax(loaded.module.weights.numpy()))]
    x = torch.from_numpy(np.stack(imgs).astype(np.float32))
    cams = grad_cam(member, x)
    # the model sees the stretched crop; show it back as a composite (its linear-ish inverse)
    soft = Preprocessing.from_dict(loaded.preprocessing).softening
    rgb = [rgb_composite(np.sinh(im) * soft, stretch=soft, q=4.0) for im in x.numpy()]
    plots.gradcam_plot(path, rgb, list(cams), titles)
