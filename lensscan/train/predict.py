"""Score labelled datasets with a model on the driver (validation, ensembling, evaluation)."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import torch

from lensscan.errors import ModelError
from lensscan.io.batch import left_out, ok_mask, skipped_note
from lensscan.models import calibration


def require_both_classes(y: np.ndarray, rows: dict, data: str, what: str) -> None:
    """Refuse labels of one class (no AUC, no calibration) in one line naming ``data``, with
    the counts :func:`member_scores` filled in ``rows``."""
    left = rows.get("left_out") or {}
    if rows.get("read") and sum(left.values()) == rows["read"]:  # not a labelling problem
        detail = ", ".join(f"{n} {reason}" for reason, n in left.items())
        raise ValueError(f"{data}: {what} could use none of the {rows['read']} rows read: all "
                         f"left out ({detail}; the line above gives the first reason)")
    if not ((y == 1).any() and (y == 0).any()):
        raise ValueError(f"{data}: {what} needs labelled lenses and non-lenses: "
                         f"{int((y == 1).sum())} lenses, {int((y == 0).sum())} non-lenses among "
                         f"{rows['read']} rows read ({rows['unlabelled']} without a label)")


@torch.inference_mode()
def member_scores(model: torch.nn.Module, ds, batch_size: int = 1024,
                  extra: tuple[str, ...] = (), rows: dict | None = None
                  ) -> tuple[np.ndarray, np.ndarray, dict]:
    """Labels, lens probabilities (float64, from the logits) and extra columns of the ``ok``
    rows of a model-stage dataset; batches without such rows are not scored.

    ``model`` maps (N, 3, H, W) to logits (N, 1) or, for an ensemble, returns (score, members).
    ``rows``, when given, is filled with the counts: ``read``, ``used``, ``unlabelled`` (ok rows
    without a label) and ``left_out`` (the rows not ok, by reason).
    """
    ys, ss, ex, statuses = [], [], {k: [] for k in extra}, []
    for batch in ds.iter_batches(batch_size=batch_size, batch_format="numpy"):
        keep = ok_mask(batch["status"]) & (batch["label"] >= 0)
        statuses.append(batch["status"])
        if not keep.any():  # a batch of quarantined or unlabelled rows: nothing to score
            continue
        x = torch.from_numpy(np.ascontiguousarray(batch["image"][keep], dtype=np.float32))
        ss.append(_scores(model, x))
        ys.append(batch["label"][keep])
        for k in extra:
            ex[k].append(batch[k][keep])
    status = np.concatenate(statuses) if statuses else np.zeros(0, object)
    note = skipped_note(status, "lensscan")
    if note:
        print(note, file=sys.stderr)
    used = sum(len(y) for y in ys)
    unlabelled = int(ok_mask(status).sum()) - used
    if unlabelled and rows is not None:  # the model whose counts are reported: said once
        print(f"lensscan: {unlabelled} of the {len(status)} rows read have no label (-1 or "
              "null): left out", file=sys.stderr)
    if rows is not None:
        rows.update(read=len(status), used=used, left_out=left_out(status),
                    unlabelled=unlabelled)
    if not ys:  # nothing read: empty arrays, which require_both_classes refuses in one line
        return np.zeros(0, np.int64), np.zeros(0), {k: np.zeros(0) for k in extra}
    return _finite_only(np.concatenate(ys), np.concatenate(ss),
                        {k: np.concatenate(v) for k, v in ex.items()}, rows)


def warn_duplicates(ids: np.ndarray, data: str) -> int:
    """How many of the rows used repeat an earlier row's object id (a shard copied twice, a
    set joined with itself): each still counts, so a warning line says so, naming the first
    repeated id."""
    text = np.array([_id_text(i) for i in ids], object)
    seen, first = np.unique(text, return_index=True)
    repeated = len(text) - len(seen)
    if repeated:
        rest = np.ones(len(text), bool)
        rest[first] = False
        warnings.warn(f"{data}: {repeated} of the {len(text)} rows used repeat an earlier "
                      f"row's object id (first: {text[rest][0][:80]!r}); each counts",
                      stacklevel=2)
    return repeated


def _id_text(value) -> str:
    """An object id or truth string as text ("" for a null); bytes decoded."""
    if isinstance(value, bytes | np.bytes_):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def _scores(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    """A member's probabilities (N,), or an ensemble's (N, 1 + M): its score, then its
    members'; logits instead where the ensemble was asked for them (``output_logits``).
    Probabilities are taken from the logits in float64: float32's sigmoid is exactly 1 from a
    logit of about 16.6 (and coarse well before), which would tie the top of a ranking."""
    if not hasattr(model, "output_logits"):  # one member: logits (N, 1)
        return calibration.sigmoid(model(x).double().reshape(-1).numpy())
    asked = model.output_logits
    model.output_logits = True
    try:
        combined, members = model(x)
    finally:
        model.output_logits = asked
    z = np.concatenate([combined.double().numpy()[:, None], members.double().numpy()], axis=1)
    return z if asked else calibration.sigmoid(z)


def _finite_only(y: np.ndarray, s: np.ndarray, ex: dict, rows: dict | None
                 ) -> tuple[np.ndarray, np.ndarray, dict]:
    """The rows whose (ensemble) score is finite; the others are left out as
    ``non_finite_score`` and counted. A model none of whose scores is finite is refused: its
    weights diverged or are damaged, and its metrics would be those of noise."""
    ok = np.isfinite(s if s.ndim == 1 else s[:, 0])
    if ok.all():
        return y, s, ex
    if not ok.any():
        raise ModelError(f"the model's scores are not finite for any of the {len(ok)} rows: its "
                         "weights diverged or are damaged")
    bad = int((~ok).sum())
    print(f"lensscan: left out {bad} rows whose score is not finite (non_finite_score)",
          file=sys.stderr)
    if rows is not None:
        rows["used"] -= bad
        rows["left_out"] = {**rows["left_out"], "non_finite_score": bad}
    return y[ok], s[ok], {k: v[ok] for k, v in ex.items()}
