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


def test_lenses_painted_on_one_host_share_its_validation_fold():
    """inject paints several lenses on one host and keeps the host as a negative: split by
    object_id, one host fell on both sides (seen in training, judged in validation)."""
    import numpy as np

    from lensscan.train.trainer import _hash_fold, fold_of

    hosts = [str(h) for h in range(200)]
    ids = np.array([f"inj{k:07d}-{h}" for k, h in enumerate(hosts)] + hosts, dtype=object)
    batch = {"object_id": ids, "host_id": np.array(hosts + hosts, dtype=object)}
    fold = fold_of(batch)
    assert (fold[:200] == fold[200:]).all()
    assert (_hash_fold(ids[:200]) != _hash_fold(ids[200:])).any()  # by id they were split
    plain = {"object_id": np.arange(50), "host_id": np.full(50, None, dtype=object)}
    assert (fold_of(plain) == _hash_fold(np.arange(50))).all()  # no host: by object_id
