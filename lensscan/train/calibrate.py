"""Add a calibration of ``p_lens`` to a trained model folder, weights untouched
(``lensscan calibrate MODEL VAL``)."""

from __future__ import annotations

from lensscan import modelcard, runtime
from lensscan.data.preprocess import Preprocessing
from lensscan.models import calibration
from lensscan.train.predict import member_scores, require_both_classes, warn_duplicates
from lensscan.train.trainer import dataset


def calibrate_model(model: str, val: str, prior: float = calibration.DEFAULT_PRIOR) -> dict:
    """Fit :class:`lensscan.models.calibration.Calibration` on the labelled rows of ``val`` with the
    ensemble logit of ``model`` (a member or ensemble folder, ``default`` included) and write
    it into the folder's card as ``calibration``; returns it as a dict.

    ``val`` should be a sample of both classes drawn as the survey's objects are (a simulated
    validation set, or a random sample of the survey with labels), at any class ratio: the ratio
    is recorded and Bayes' rule moves ``p_lens`` from it to the scoring prior. The card changes,
    so the model's checksum changes: outputs scored before are another run to it.
    """
    prior = calibration.check_prior(prior)
    url = modelcard.resolve(model)
    loaded = modelcard.load_model(url)
    loaded.module.output_logits = True
    runtime.ensure_ray()  # quietly, before Ray Data would start it with its log
    ds = dataset(val, Preprocessing.from_dict(loaded.preprocessing), "model",
                 keep_extra=("label", "object_id"))
    rows: dict = {}
    y, s, extra = member_scores(loaded.module.eval(), ds, extra=("object_id",), rows=rows)
    require_both_classes(y, rows, val, "calibration")
    warn_duplicates(extra["object_id"], val)
    cal = calibration.calibrate(s[:, 0], y, prior, val).to_dict()
    modelcard.update_card(url, calibration=cal)
    return cal
