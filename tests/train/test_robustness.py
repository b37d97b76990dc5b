"""Holding rendering families out of training, and the leave-one-family-out matrix."""

from __future__ import annotations

import json
import os
from dataclasses import replace

import numpy as np
import pytest

from lensscan.simulate.population import Rendering, preset
from lensscan.simulate.survey import SurveySpec, simulate_survey


@pytest.fixture(scope="module")
def two_psf_surveys(tmp_path_factory):
    """Small broad-preset train and test surveys whose PSFs are Moffat or Gaussian."""
    cond, pop = preset("broad")
    pop = replace(pop, rendering=replace(Rendering(), psf={"moffat": 1.0, "gaussian": 1.0}))
    root = tmp_path_factory.mktemp("fam")
    for name, seed, n in (("train", 1, 24), ("test", 2, 16)):
        simulate_survey(str(root / name), SurveySpec(n, n, seed=seed, test_fraction=0,
                                                     population=pop, conditions=cond),
                        shard_size=n, workers=1, progress=False)
    return root


def test_exclude_leaves_the_named_rows_out(two_psf_surveys, ray_local):
    from lensscan.data.preprocess import Preprocessing
    from lensscan.io.shards import read_shard
    from lensscan.io.storage import list_shards
    from lensscan.train.trainer import dataset

    url = str(two_psf_surveys / "train")
    psf = np.concatenate([read_shard(u)["psf_family"] for u in list_shards(url)])
    ds = dataset(url, Preprocessing(), "normalized", keep_extra=("label", "psf_family"),
                 exclude=["psf_family=gaussian"])
    kept = np.concatenate([b["psf_family"] for b in ds.iter_batches(batch_format="numpy")])
    assert len(kept) == (psf == "moffat").sum() > 0
    assert set(kept.astype(str)) == {"moffat"}


def test_exclude_is_checked_before_training(two_psf_surveys):
    from lensscan.config import TrainConfig
    from lensscan.train.trainer import parse_exclude, train

    assert parse_exclude(["psf_family = gaussian"]) == [("psf_family", "gaussian")]
    with pytest.raises(ValueError, match="COLUMN=VALUE"):
        parse_exclude(["psf_family"])
    with pytest.raises(ValueError, match="no column 'psf_famly'"):
        train(TrainConfig(data=str(two_psf_surveys / "train"), out=str(two_psf_surveys / "m"),
                          exclude=["psf_famly=gaussian"]))
    # a misspelt family excluded nothing without a word: the "held-out" member saw it
    with pytest.raises(ValueError, match=r"--exclude psf_family=gausian matches no row \(values "
                                         r"of psf_family: gaussian, moffat\)"):
        train(TrainConfig(data=str(two_psf_surveys / "train"), out=str(two_psf_surveys / "m"),
                          exclude=["psf_family=gausian"]))
    assert not (two_psf_surveys / "m").exists()


def test_family_test_sets_render_one_family_in_the_hsc_survey(tmp_path):
    from lensscan.io.shards import read_shard
    from lensscan.io.storage import list_shards
    from lensscan.train.robustness import make_test_sets, test_set_url

    make_test_sets(str(tmp_path), [("psf", "gaussian"), ("noise", "correlated")], 2, 4, seed=3)
    for choice, family in (("psf", "gaussian"), ("noise", "correlated")):
        url = test_set_url(str(tmp_path), choice, family)
        rows = [read_shard(u) for u in list_shards(url)]
        assert set(np.concatenate([r[f"{choice}_family"] for r in rows])) == {family}
        other = "noise" if choice == "psf" else "psf"  # the other choices as hsc draws them
        assert set(np.concatenate([r[f"{other}_family"] for r in rows])) == {
            "white" if other == "noise" else "moffat"}
        assert sum(len(r["label"]) for r in rows) == 6


@pytest.mark.slow
def test_robustness_matrix_holds_a_family_out(two_psf_surveys, ray_local, capsys):
    from lensscan.modelcard import read_card
    from lensscan.train.robustness import make_test_sets, markdown, robustness_matrix

    out, tests = str(two_psf_surveys / "matrix"), str(two_psf_surveys / "tests")
    train_url = str(two_psf_surveys / "train")
    make_test_sets(tests, [("psf", "gaussian")], 3, 6, seed=5)
    cells = robustness_matrix(train_url, train_url, tests, out, [("psf", "gaussian")],
                              epochs=1, steps_per_epoch=2, batch_size=8)
    (cell,) = cells
    assert (cell.choice, cell.family, cell.lenses, cell.nonlenses) == ("psf", "gaussian", 3, 6)
    assert 0 <= cell.auc <= 1 and 0 <= cell.ref_auc <= 1 and not cell.init_saw
    held = read_card(os.path.join(out, "without_psf_gaussian"))
    assert held.training["config"]["exclude"] == ["psf_family=gaussian"]
    ref = read_card(os.path.join(out, "all_families"))
    assert ref.training["config"]["exclude"] == []
    # the held-out member never saw a Gaussian PSF: fewer training rows than the reference
    rows = [c.training["history"][0]["train_rows"] for c in (held, ref)]
    assert 0 < rows[0] < rows[1]
    with open(os.path.join(out, "matrix.json")) as fh:
        saved = json.load(fh)
    assert saved[0]["family"] == "gaussian"
    assert "| psf: gaussian |" in markdown(cells)
    # the same command again keeps its members; other settings are refused, not mixed in
    capsys.readouterr()
    again = robustness_matrix(train_url, train_url, tests, out, [("psf", "gaussian")],
                              epochs=1, steps_per_epoch=2, batch_size=8)
    assert again[0].auc == cell.auc
    kept = capsys.readouterr().out
    assert "all_families: already trained, kept" in kept
    assert "without_psf_gaussian: already trained, kept" in kept
    with pytest.raises(ValueError, match="member all_families was trained with other settings"):
        robustness_matrix(train_url, train_url, tests, out, [("psf", "gaussian")], epochs=1,
                          steps_per_epoch=2, batch_size=8,
                          augment={"background_jitter": 1.0})
