"""Training completes a copy of its config: the caller's stays as the caller wrote it."""

from __future__ import annotations

import copy
import os

from lensscan.config import TrainConfig
from lensscan.data.augment import Augment
from lensscan.data.preprocess import Preprocessing
from lensscan.modelcard import default_model_url
from lensscan.train.trainer import check, complete


def test_check_completes_a_copy(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = TrainConfig(data="train", out="model", val="val", init="default", labels=[])
    before = copy.deepcopy(cfg)
    done, labels, grades = check(cfg)
    assert cfg == before  # untouched
    assert (labels, grades) == (None, None)
    assert done.data == os.path.abspath("train") and done.out == os.path.abspath("model")
    assert done.init == os.path.join(default_model_url(), "resnet_s0")  # its resnet member
    assert done.preprocessing == Preprocessing().to_dict()
    assert done.augment == Augment().to_dict()
    assert complete(done) == done  # completing a complete config changes nothing
