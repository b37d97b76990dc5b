"""Architectures, model folders (safetensors + card) and their failure modes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lensscan import modelcard
from lensscan.data.preprocess import Preprocessing, preprocess
from lensscan.errors import ModelError
from lensscan.models import create_model, list_models
from lensscan.models.ensemble import Ensemble


@pytest.mark.parametrize("name", list_models())
def test_every_architecture_same_interface(name):
    model = create_model(name, in_chans=3, num_classes=1, drop_rate=0.0).eval()
    x = torch.randn(4, 3, 48, 48)
    feats = model.forward_features(x)
    assert feats.ndim == 4
    out = model.forward_head(feats)
    assert out.shape == (4, 1)
    torch.testing.assert_close(out, model(x))


def test_unknown_architecture_is_clear():
    with pytest.raises(ValueError, match="unknown architecture 'vgg'"):
        create_model("vgg")


def test_baseline_is_the_original_design():
    m = create_model("baseline_cnn")
    kinds = [type(layer).__name__ for layer in m.features]
    assert kinds == ["Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d", "Dropout"] * 3
    assert isinstance(m.fc1, torch.nn.Linear) and isinstance(m.fc2, torch.nn.Linear)


def test_member_round_trip_without_pickle(tmp_path):
    model = create_model("resnet", widths=(8, 8, 16, 16)).eval()
    card = {"name": "r", "arch": "resnet", "arch_kwargs": {"widths": [8, 8, 16, 16]},
            "preprocessing": Preprocessing().to_dict(), "threshold": 0.7}
    modelcard.save_member(str(tmp_path / "m"), model, card, half=False)
    assert (tmp_path / "m" / "model.safetensors").read_bytes()[:8] != b"\x80\x02"  # not pickle
    loaded, got = modelcard.load_member(str(tmp_path / "m"))
    x = torch.randn(3, 3, 48, 48)
    torch.testing.assert_close(loaded(x), model(x))
    assert got.weights.sha256 and got.threshold == 0.7


def test_float16_storage_is_close(tmp_path):
    model = create_model("resnet", widths=(8, 8, 16, 16)).eval()
    card = {"name": "r", "arch": "resnet", "arch_kwargs": {"widths": [8, 8, 16, 16]},
            "preprocessing": Preprocessing().to_dict()}
    saved = modelcard.save_member(str(tmp_path / "m"), model, card, half=True)
    assert saved.weights.dtype == "float16"
    loaded, _ = modelcard.load_member(str(tmp_path / "m"))
    x = torch.randn(8, 3, 48, 48)
    torch.testing.assert_close(torch.sigmoid(loaded(x)), torch.sigmoid(model(x)), atol=2e-2,
                               rtol=0)


def test_tampered_weights_rejected(tiny_model, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_model, copy)
    w = copy / "m0" / "model.safetensors"
    data = bytearray(w.read_bytes())
    data[-10] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"m0/model\.safetensors: checksum mismatch"):
        modelcard.load_model(str(copy))


def test_mismatched_architecture_rejected(tiny_model, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_model, copy)
    card_path = copy / "m0" / "card.json"
    card = json.loads(card_path.read_text())
    card["arch_kwargs"] = {"widths": [16, 16, 32, 32]}
    card_path.write_text(json.dumps(card))
    with pytest.raises(ModelError, match="weights do not match architecture 'resnet'"):
        modelcard.load_model(str(copy))


def test_not_a_model_folder(tmp_path):
    with pytest.raises(ModelError, match="not a lensscan model folder"):
        modelcard.load_model(str(tmp_path))
    (tmp_path / "card.json").write_text("{broken")
    with pytest.raises(ModelError, match="card is not valid JSON"):
        modelcard.load_model(str(tmp_path))


def test_pickled_checkpoint_is_refused(tmp_path):
    model = create_model("resnet", widths=(8, 8, 16, 16))
    modelcard.save_member(str(tmp_path), model, {"name": "x", "arch": "resnet",
                                                 "arch_kwargs": {"widths": [8, 8, 16, 16]},
                                                 "preprocessing": {}})
    torch.save(model.state_dict(), tmp_path / "model.safetensors")  # a pickle in disguise
    card = json.loads((tmp_path / "card.json").read_text())
    import hashlib

    card["weights"]["sha256"] = hashlib.sha256((tmp_path / "model.safetensors").read_bytes()
                                               ).hexdigest()
    (tmp_path / "card.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="not a valid safetensors file"):
        modelcard.load_member(str(tmp_path))


def test_ensemble_combines_member_logits(tiny_model):
    loaded = modelcard.load_model(tiny_model)
    x = torch.from_numpy(preprocess(np.random.default_rng(0).normal(
        0, 1, (5, 3, 64, 64)).astype(np.float32), Preprocessing()))
    with torch.inference_mode():
        score, members = loaded.module(x)
        logits = torch.cat([m(x) for m in loaded.module.members], dim=1)
    expected = torch.sigmoid(logits @ torch.tensor([0.5, 0.75]) + 0.1)
    torch.testing.assert_close(score, expected)
    torch.testing.assert_close(members, torch.sigmoid(logits))
    assert loaded.member_names == ["m0", "m1"]


def test_bundled_default_model_loads():
    loaded = modelcard.load_model("default")
    assert isinstance(loaded.module, Ensemble)
    assert 0 < loaded.threshold < 1
    assert len(loaded.member_names) >= 2
    total = sum(m.weights.bytes for m in
                [modelcard.read_card(modelcard.default_model_url() + "/" + m.path)
                 for m in loaded.card.members])
    assert total <= 20 * 2**20


def test_d4_views_are_the_eight_symmetries():
    from lensscan.models.ensemble import d4_views

    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    views = d4_views(x).reshape(8, 2, 3, 4, 4)
    # all eight differ, and each is a rotation or a mirror of the input
    flat = {tuple(v[0].flatten().tolist()) for v in views}
    assert len(flat) == 8
    assert torch.equal(views[0], x) and torch.equal(views[4], x.flip(-1))
    assert torch.equal(views[1], torch.rot90(x, 1, dims=(-2, -1)))


def test_tta_averages_member_logits_over_the_views():
    from lensscan.models.ensemble import d4_views

    torch.manual_seed(0)
    members = [create_model("resnet", widths=[8, 8, 16, 16]).eval() for _ in range(2)]
    ens = Ensemble(members, [0.7, 0.4], 0.2).eval()
    x = torch.randn(5, 3, 48, 48)
    with torch.inference_mode():
        plain, _ = ens(x)
        ens.tta = True
        score, member = ens(x)
        views = d4_views(x)
        expect = torch.stack([m(views).reshape(8, 5).mean(0) for m in members], dim=1)
        np.testing.assert_allclose(member.numpy(), torch.sigmoid(expect).numpy(), rtol=1e-5)
        combined = torch.sigmoid(expect @ torch.tensor([0.7, 0.4]) + 0.2)
        np.testing.assert_allclose(score.numpy(), combined.numpy(), rtol=1e-5)
        # the same rotated input gives the same TTA score; the plain score changes
        rotated, _ = ens(torch.rot90(x, 1, dims=(-2, -1)))
        np.testing.assert_allclose(rotated.numpy(), score.numpy(), rtol=1e-4)
        ens.tta = False
        assert not torch.allclose(ens(torch.rot90(x, 1, dims=(-2, -1)))[0], plain)
