"""Training completes a copy of its config: the caller's stays as the caller wrote it."""

from __future__ import annotations

import copy
import os

import numpy as np

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


def test_numbers_out_of_bounds_are_refused_by_the_api_as_by_the_command_line(tmp_path,
                                                                           monkeypatch, capsys):
    """A batch of lenses only (lens_fraction 1, or a batch of 1) trained with a loss of exactly
    0 (class-weighted BCE) or learned "everything is a lens"; the Python API took any number
    the command line refuses (a negative size reached the workers as a traceback)."""
    import pytest

    from lensscan.cli import main

    monkeypatch.chdir(tmp_path)
    for field, value, said in (("lens_fraction", 1.0, "--lens-fraction: must be less than 1"),
                               ("lens_fraction", 1.5, "--lens-fraction: must be less than 1"),
                               ("batch_size", 1, "--batch-size: must be 2 or more, not 1"),
                               ("lr", float("nan"), "--lr: must be a finite number"),
                               ("workers", 0, "--workers: must be 1 or more, not 0")):
        with pytest.raises(ValueError, match=said):
            check(TrainConfig(data="train", out="model", **{field: value}))
    for argv, said in ((["--lens-fraction", "1"], "must be less than 1, not 1"),
                       (["--batch-size", "1"], "must be 2 or more, not 1")):
        with pytest.raises(SystemExit):
            main(["train", "train", "--out", "model", *argv])
        assert said in capsys.readouterr().err
    from lensscan.train.loop import _balanced_indices

    rng = np.random.default_rng(0)
    idx = _balanced_indices(np.arange(5), np.arange(5, 10), 3, 2, 0.9, rng)
    assert (idx[:, 0] < 5).all() and (idx[:, 1] >= 5).all()  # a lens and a non-lens each


def test_a_validation_folder_among_the_training_shards_is_refused(tmp_path, capsys):
    """--val data/val beside --data data: the validation shards were listed with the training
    ones and trained on, and the validation figures were of rows the model had seen."""
    import pytest
    from support import make_batch

    from lensscan.io.parquet import write_parquet

    write_parquet(str(tmp_path / "d" / "a.parquet"), make_batch(4, seed=1))
    write_parquet(str(tmp_path / "d" / "val" / "b.parquet"), make_batch(4, seed=2))
    data, val, out = str(tmp_path / "d"), str(tmp_path / "d" / "val"), str(tmp_path / "m")
    with pytest.raises(ValueError, match=r"--val .*/d/val: it lies inside the training data"):
        check(TrainConfig(data=data, out=out, val=val))
    with pytest.raises(ValueError, match=r"--val .*/d: it holds the training data .*/d/val"):
        check(TrainConfig(data=val, out=out, val=data))
    check(TrainConfig(data=data, out=out, val=data))  # a few graded rows, on purpose
    assert "is the training data: the validation figures" in capsys.readouterr().err


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


def test_a_paired_nonlens_shares_its_lens_validation_fold():
    """simulate --preset broad renders a paired non-lens as its lens's very scene without the
    arc: split by object_id, most pairs in the validation fold had their twin in training."""
    import numpy as np

    from lensscan.train.trainer import fold_of

    lenses = np.arange(300)
    batch = {"object_id": np.concatenate([lenses, 1000 + lenses, [5000, 5001]]),
             "paired_with": np.concatenate([np.full(300, -1), lenses, [-1, -1]])}
    fold = fold_of(batch)
    assert (fold[:300] == fold[300:600]).all()
    as_text = {"object_id": np.array([str(i) for i in batch["object_id"]], dtype=object),
               "paired_with": batch["paired_with"]}
    text_fold = fold_of(as_text)  # string ids: the partner is hashed as its lens's text
    assert (text_fold[:300] == text_fold[300:600]).all()
    missing = {"object_id": lenses, "paired_with": np.full(300, None, dtype=object)}
    assert (fold_of(missing) == fold[:300]).all()  # shards without the column
    nullable = {**batch, "paired_with": np.where(batch["paired_with"] < 0, np.nan,
                                                 batch["paired_with"]).astype(float)}
    assert (fold_of(nullable) == fold).all()  # a nullable int column, read as floats


def test_an_integer_id_and_its_text_fall_in_one_fold():
    """A survey's host rows (integer ids) and the lenses inject painted on them (host_id as
    text) were hashed two ways, so a host and its lens could fall on both sides of the split."""
    import numpy as np

    from lensscan.train.trainer import fold_of

    hosts = np.arange(10**9, 10**9 + 300, dtype=np.int64)
    host_rows = fold_of({"object_id": hosts})
    lenses = fold_of({"object_id": np.array([f"inj{h}" for h in hosts], dtype=object),
                      "host_id": np.array([str(h) for h in hosts], dtype=object)})
    assert (host_rows == lenses).all()
    assert len(set(host_rows.tolist())) == 10  # and it still spreads rows over ten folds


def test_a_failed_training_run_is_one_line_naming_the_worker_and_its_error():
    """Ray Train's WorkerGroupError (real class) holds every rank's exception under Ray's
    wrappers; the user gets rank 0's innermost error in one line, and how to resume."""
    from ray.train import ControllerError, WorkerGroupError

    from lensscan.train.failures import TrainingError, training_failure

    try:
        try:
            raise ValueError("data/train/a.parquet: row 7: image is not 3x64x64\nmore detail")
        except ValueError as inner:
            raise RuntimeError("wrapped by a data pipeline") from inner
    except RuntimeError as outer:
        first = outer
    exc = WorkerGroupError("Worker 0 failed:\nTraceback ...\nWorker 1 failed: ...",
                           {1: MemoryError("out of memory"), 0: first})
    err = training_failure("resnet_s0", exc, 2)
    assert isinstance(err, TrainingError)
    text = str(err)
    assert "\n" not in text and "Traceback" not in text
    assert text.startswith("training resnet_s0 failed on worker 0 (and 1 more) after 2 restarts: "
                           "ValueError: data/train/a.parquet: row 7: image is not 3x64x64 ")
    assert "rerun the same command to resume" in text
    ctrl = str(training_failure("cnn", ControllerError(KeyError("epoch")), 2))
    assert "Ray Train's controller" in ctrl and "KeyError: 'epoch'" in ctrl and "\n" not in ctrl
    # storage failing under the workers is exit status 3, as for every command (it was 2)
    from lensscan.errors import StorageError

    lost = StorageError("s3://b/train/p.parquet", "cannot read (endpoint lost)")
    err = training_failure("cnn", WorkerGroupError("Worker 0 failed", {0: lost}), 2)
    assert isinstance(err, StorageError) and str(err) == (
        "s3://b/train/p.parquet: training cnn failed on worker 0 after 2 restarts: cannot read "
        "(endpoint lost); rerun the same command to resume")
