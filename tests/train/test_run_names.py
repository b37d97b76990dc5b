"""What names a training run and a scoring run: settings added later leave older runs resumable;
settings that change the result change the name. Pure functions, no Ray."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

import pytest

from lensscan.config import TrainConfig
from lensscan.score import fingerprint
from lensscan.train.loop import EMA_DECAY, ema_decay
from lensscan.train.trainer import LATER_FIELDS, run_name


def _name_before(cfg: TrainConfig) -> str:
    """run_name as written before the fields of LATER_FIELDS existed."""
    key = dict(cfg.to_dict(), workers=None, gpu=None, storage=None, cpus_per_worker=None,
               torch_threads=None)
    for name in LATER_FIELDS:
        key.pop(name)
    digest = hashlib.sha1(repr(sorted(key.items())).encode()).hexdigest()[:10]
    return f"{cfg.member_name}-{digest}"


def test_later_fields_at_their_defaults_keep_an_older_run_name():
    cfg = TrainConfig(data="/d/train", out="/m", val="/d/val", arch="resnet", epochs=6)
    assert run_name(cfg) == _name_before(cfg)
    assert run_name(replace(cfg, keep_labels=True)) != run_name(cfg)
    assert run_name(replace(cfg, lr_batch=128)) != run_name(cfg)
    assert run_name(replace(cfg, workers=4, gpu=True)) == run_name(cfg)  # where, not what
    assert run_name(replace(cfg, epochs=7)) != run_name(cfg)


def test_a_run_without_val_is_named_by_its_fold_rule():
    """Without --val the fold splits validation off: a run begun under an older rule held other
    rows out, so the same command under this rule begins afresh instead of resuming it."""
    cfg = TrainConfig(data="/d/train", out="/m", arch="resnet", epochs=6)
    assert run_name(cfg) != _name_before(cfg)
    assert run_name(cfg) == run_name(replace(cfg, workers=2))


@pytest.mark.parametrize("steps", [20, 400, 1999, 2000, 100_000])
def test_ema_horizon_spans_at_most_a_tenth_of_a_short_run(steps):
    decay = ema_decay(steps)
    assert 0 <= decay <= EMA_DECAY
    assert 1 / (1 - decay) <= max(steps / 10, 1 / (1 - EMA_DECAY)) + 1e-9
    if steps >= 2000:
        assert decay == EMA_DECAY


def _record(**kw) -> fingerprint.RunRecord:
    base = dict(input="/s", model_checksum="abc", threshold=0.5, top=None,
                preprocessing={"crop": 48}, rows_per_unit=2048)
    return fingerprint.RunRecord(**{**base, **kw})


def test_scoring_precision_is_part_of_the_fingerprint(tmp_path):
    rec = _record()
    assert _record(precision="fp16").fingerprint != rec.fingerprint
    assert _record(tta=True).fingerprint != rec.fingerprint
    # a record written before precision was recorded reads as the default, so it still resumes
    fingerprint.write(str(tmp_path), rec)
    run = tmp_path / fingerprint.RUN
    doc = json.loads(run.read_text())
    del doc["precision"]
    run.write_text(json.dumps(doc))
    assert fingerprint.read(str(tmp_path)).fingerprint == rec.fingerprint


def test_an_augmentation_added_later_at_its_default_keeps_an_older_run_name():
    """A completed run's config holds every augmentation setting: one added since, at its
    default, leaves the name of a run begun before it (which resumes with it on)."""
    from lensscan.data.augment import Augment

    full = Augment().to_dict()
    before = {k: v for k, v in full.items() if k != "background_jitter"}
    cfg = TrainConfig(data="/d/train", out="/m", val="/d/val", arch="resnet", augment=full)
    assert run_name(cfg) == run_name(replace(cfg, augment=before))
    assert run_name(replace(cfg, augment={**full, "background_jitter": 1.0})) != run_name(cfg)
