"""Commands that make and check models: ``train``, ``evaluate``, ``calibrate``."""

from __future__ import annotations

import json

from lensscan.cli.options import add_options, from_args, key_values
from lensscan.config import TrainConfig


def _train(a) -> None:
    from lensscan.models import list_models
    from lensscan.train.trainer import train

    if a.arch not in list_models():  # before Ray starts: a typo costs nothing
        raise ValueError(f"--arch {a.arch!r}: unknown architecture; choose one of "
                         f"{', '.join(list_models())}")
    card = train(from_args(TrainConfig, a))
    if "grades" in card.training:
        from lensscan.data.grades import describe

        print(describe(card.training["grades"]))
    print(json.dumps(card.metrics["validation"], indent=2))


def _evaluate(a) -> None:
    from lensscan.train.evaluate import evaluate

    also = key_values(a.also, "--also", "NAME=MODEL")
    report = evaluate(a.model, a.data, a.out, also=also, tta=a.tta)
    e = report["ensemble"]
    print(json.dumps({k: e[k] for k in ("roc_auc", "average_precision", "recall_at_fpr_1e-3",
                                        "precision", "recall", "f1")}, indent=2))


def _calibrate(a) -> None:
    from lensscan.train.calibrate import calibrate_model

    print(json.dumps(calibrate_model(a.model, a.val, a.prior), indent=2))


def add_train(sub) -> None:
    """``lensscan train``: one member with Ray Train, from labels or grades (its options:
    :class:`~lensscan.config.TrainConfig`)."""
    p = sub.add_parser("train", help="train one model with Ray Train")
    add_options(p, TrainConfig, positional=["data"])
    p.set_defaults(fn=_train)


def add_evaluate(sub) -> None:
    """``lensscan evaluate``: metrics and plots of models on labelled data."""
    p = sub.add_parser("evaluate", help="metrics.json and plots of a model on labelled data")
    p.add_argument("model")
    p.add_argument("data")
    p.add_argument("--out", required=True, help="local folder for metrics.json and plots")
    p.add_argument("--also", nargs="*", action="extend", default=[], metavar="NAME=MODEL",
                   help="other models to compare side by side (repeatable)")
    p.add_argument("--tta", action="store_true",
                   help="average every model over the 8 flips and rotations of each cutout")
    p.set_defaults(fn=_evaluate)


def add_calibrate(sub) -> None:
    """``lensscan calibrate``: fit the map from the ensemble logit to p_lens."""
    from lensscan.models.calibration import DEFAULT_PRIOR

    p = sub.add_parser("calibrate", help="fit p_lens's calibration on labelled validation data "
                                         "and write it into the model's card")
    p.add_argument("model", help="model folder URL or 'default' (its card is rewritten)")
    p.add_argument("val", help="labelled validation shards, drawn as the survey's objects are")
    p.add_argument("--prior", type=float, default=DEFAULT_PRIOR, metavar="P",
                   help="prevalence of lenses that scoring calibrates p_lens to by default "
                        "(default %(default)g)")
    p.set_defaults(fn=_calibrate)
