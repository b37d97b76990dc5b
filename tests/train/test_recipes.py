"""The recipes of the bundled ensemble (``lensscan.train.recipes``) and how ``train_ensemble``
wires members, warm starts and the weights' fit; training itself is replaced by a recorder."""

from __future__ import annotations

from pathlib import Path

import pytest

from lensscan import modelcard
from lensscan.config import TrainConfig
from lensscan.data.augment import Augment
from lensscan.models import list_models
from lensscan.train import recipes as R
from lensscan.train.ensemble import member_config

LOSSES = {"focal", "bce"}


@pytest.mark.parametrize("recipe", [R.DEFAULT_MEMBERS, R.BASELINE_MEMBER])
def test_every_member_is_a_valid_training_config(recipe):
    for name, spec in recipe.items():
        cfg = member_config(name, "data", "val", "runs/ens", **spec)
        assert cfg.name == name and cfg.member_name == name
        assert cfg.out == "runs/ens/" + name and (cfg.data, cfg.val) == ("data", "val")
        assert cfg.arch in list_models() and cfg.loss in LOSSES
        Augment(**cfg.augment)  # only augmentation settings that exist


def test_default_members_differ():
    specs = R.DEFAULT_MEMBERS.values()
    assert len(R.DEFAULT_MEMBERS) >= 3
    assert len({s["seed"] for s in specs}) == len(R.DEFAULT_MEMBERS)  # seeds distinct
    assert len({s["arch"] for s in specs}) >= 2 and len({s["loss"] for s in specs}) >= 2
    assert set(R.DEFAULT_MEMBERS).isdisjoint(R.BASELINE_MEMBER)


def test_default_recipe_is_the_bundled_models():
    """Each member of the bundled ensemble was trained from its recipe, under its name."""
    root = modelcard.default_model_url()
    card = modelcard.read_card(root)
    assert [m.name for m in card.members] == list(R.DEFAULT_MEMBERS)
    for m in card.members:
        trained = modelcard.read_card(f"{root}/{m.path}").training["config"]
        spec = R.DEFAULT_MEMBERS[m.name]
        assert trained["name"] == m.name
        for key in ("arch", "seed", "loss"):
            assert trained[key] == spec[key], (m.name, key)
        assert trained["augment"].items() >= spec.get("augment", {}).items()


def test_member_config_refuses_unknown_settings():
    with pytest.raises(TypeError):
        member_config("m", "data", None, "out", epocs=3)


@pytest.fixture
def recorded(monkeypatch):
    """Replace training and the weights' fit by recorders; a trained member leaves a card."""
    calls = {"train": [], "build": []}

    def train(cfg: TrainConfig, progress: bool = True) -> None:
        assert progress is False
        calls["train"].append(cfg)
        from lensscan.io import storage

        storage.write_bytes_atomic(storage.join(cfg.out, "card.json"), b"{}")

    def build(out, urls, val, prior_ratio=100.0, **kw):
        calls["build"].append({"out": out, "urls": urls, "val": val,
                               "prior_ratio": prior_ratio, **kw})
        return {"built": True}

    monkeypatch.setattr(R, "train", train)
    monkeypatch.setattr(R, "build_ensemble", build)
    return calls


def test_members_start_from_their_namesakes(recorded, tiny_model, tmp_path):
    """With ``init_from``, a member whose name the other ensemble has starts from its weights;
    the others start fresh; ``common`` reaches every member, the recipe's spec overrides it."""
    out = str(tmp_path / "ens")
    members = {"m0": {"arch": "resnet", "seed": 3, "epochs": 2},
               "fresh": {"arch": "baseline_cnn", "seed": 4}}
    got = R.train_ensemble("train", "val", out, members=members, init_from=tiny_model,
                           epochs=5, prior_ratio=30.0, prior=1e-3)
    assert got == {"built": True}
    by_name = {c.name: c for c in recorded["train"]}
    assert set(by_name) == {"m0", "fresh"}
    assert by_name["m0"].init == f"{tiny_model}/m0" and by_name["fresh"].init is None
    assert (by_name["m0"].epochs, by_name["fresh"].epochs) == (2, 5)
    assert (by_name["m0"].seed, by_name["fresh"].arch) == (3, "baseline_cnn")
    assert all(c.prior_ratio == 30.0 and c.data == "train" and c.val == "val"
               for c in by_name.values())
    assert recorded["build"] == [{"out": out, "urls": [f"{out}/m0", f"{out}/fresh"],
                                  "val": "val", "prior_ratio": 30.0, "prior": 1e-3}]


def test_init_from_that_gives_no_member_a_start_is_refused(recorded, tiny_model, tmp_path,
                                                         capsys):
    """A typo, a member folder or an ensemble of other names would train every member from
    random weights without a word: refused before anything trains."""
    from lensscan.errors import ModelError

    out = str(tmp_path / "ens")
    with pytest.raises(ModelError, match="not a lensscan model folder"):
        R.train_ensemble("train", "val", out, init_from=str(tmp_path / "typo"))
    with pytest.raises(ModelError, match="takes an ensemble folder, this is a 'member'"):
        R.train_ensemble("train", "val", out, init_from=f"{tiny_model}/m0")
    with pytest.raises(ModelError, match=r"none of its members \(m0, m1\) is named like a "
                                         r"member to train \(resnet_s0, msresnet_s1"):
        R.train_ensemble("train", "val", out, init_from=tiny_model)
    assert recorded["train"] == []
    R.train_ensemble("train", "val", out, init_from=tiny_model,
                     members={"m0": {"arch": "resnet"}, "fresh": {"arch": "resnet"}})
    assert "fresh: " + tiny_model + " has no member of this name" in capsys.readouterr().out


def test_finished_members_are_kept(recorded, tmp_path, capsys):
    out = tmp_path / "ens"
    (out / "resnet_s0").mkdir(parents=True)
    bundled = Path(modelcard.default_model_url()) / "resnet_s0" / "card.json"
    (out / "resnet_s0" / "card.json").write_text(bundled.read_text())
    R.train_ensemble("train", "val", str(out), epochs=1)
    assert [c.name for c in recorded["train"]] == [n for n in R.DEFAULT_MEMBERS
                                                   if n != "resnet_s0"]
    assert recorded["build"][0]["urls"] == [f"{out}/{n}" for n in R.DEFAULT_MEMBERS]
    assert "resnet_s0: already trained, kept" in capsys.readouterr().out
    # but not under a recipe of another architecture: a plain member in a residual ensemble
    wide = {n: {**m, "arch_kwargs": {"residual": True}} for n, m in R.DEFAULT_MEMBERS.items()}
    with pytest.raises(ValueError, match="member resnet_s0 is a 'resnet' {}, the recipe trains "
                                         "a 'resnet' {'residual': True}"):
        R.train_ensemble("train", "val", str(out), wide, epochs=1)


def test_refit_only_copies_the_members_and_trains_nothing(recorded, tiny_model, tmp_path):
    out = str(tmp_path / "ens")
    R.train_ensemble("train", "val", out, init_from=tiny_model, refit_only=True)
    assert recorded["train"] == []
    assert recorded["build"][0]["urls"] == [f"{out}/m0", f"{out}/m1"]
    for m in ("m0", "m1"):
        for name in (modelcard.CARD, modelcard.WEIGHTS):
            copied = (tmp_path / "ens" / m / name).read_bytes()
            assert copied == (Path(tiny_model) / m / name).read_bytes()


def test_refit_only_needs_an_ensemble(recorded, tiny_model, tmp_path):
    """A member folder used to give an empty recipe, so the default members trained from random
    weights (hours) where a refit takes seconds."""
    from lensscan.errors import ModelError

    with pytest.raises(ValueError, match="take members from"):
        R.train_ensemble("train", "val", str(tmp_path), refit_only=True)
    with pytest.raises(ModelError, match="takes its members from an ensemble folder, this is a "
                                         "'member'"):
        R.train_ensemble("train", "val", str(tmp_path / "o"), init_from=f"{tiny_model}/m0",
                         refit_only=True)
    assert recorded["train"] == [] and recorded["build"] == []


def test_without_validation_data_the_graded_fold_is_used(recorded, tmp_path, monkeypatch):
    seen = []

    def graded(csvs, grade_c):
        seen.append((csvs, grade_c))
        return {7: 1}, None

    monkeypatch.setattr(R, "graded_labels", graded)
    members = {"a": {"arch": "resnet", "seed": 0}}
    with pytest.raises(ValueError, match="validation data or graders' labels"):
        R.train_ensemble("train", None, str(tmp_path / "x"), members=members)
    R.train_ensemble("train", None, str(tmp_path / "y"), members=members,
                     labels=["g.csv"], grade_c="lens")
    assert seen == [(["g.csv"], "lens")]
    assert recorded["build"][-1] == {"out": str(tmp_path / "y"),
                                     "urls": [str(tmp_path / "y" / "a")], "val": "train",
                                     "prior_ratio": 100.0, "labels": {7: 1}, "fold": True}

