"""The typed model card: read and written back exactly, and a scoring driver that reads cards
only (no weights)."""

from __future__ import annotations

import hashlib
import json
import pathlib
import re
import shutil

import pytest

from lensscan import modelcard
from lensscan.errors import ModelError
from lensscan.modelcard import Member, ModelCard

BUNDLED = pathlib.Path(modelcard.default_model_url())


@pytest.mark.parametrize("path", sorted(BUNDLED.rglob("card.json")),
                         ids=lambda p: str(p.relative_to(BUNDLED)))
def test_bundled_cards_round_trip_exactly(path):
    text = path.read_text()
    card = ModelCard.from_json(text)
    assert card.to_json() == text
    assert card.kind in ("member", "ensemble") and card.preprocessing["crop"] == 48


def test_typed_fields_of_the_bundled_ensemble():
    card = modelcard.read_card(str(BUNDLED))
    raw = json.loads((BUNDLED / "card.json").read_text())
    assert card.members == tuple(Member(**m) for m in raw["members"])
    assert (card.bias, card.threshold, card.calibration) == (raw["bias"], raw["threshold"],
                                                              raw["calibration"])
    member = modelcard.read_card(str(BUNDLED / card.members[0].path))
    assert member.weights.sha256 == json.loads(
        (BUNDLED / card.members[0].path / "card.json").read_text())["weights"]["sha256"]
    assert member.operating_threshold == member.threshold and member.arch == "resnet"


def test_checksum_is_the_cards_and_the_members_weights_digests():
    """The model's checksum, as runs recorded it: the ensemble card's JSON (keys sorted) and
    every member's weights digest from its card."""
    raw = json.loads((BUNDLED / "card.json").read_text())
    want = hashlib.sha256(json.dumps(raw, sort_keys=True).encode())
    for m in raw["members"]:
        want.update(json.loads((BUNDLED / m["path"] / "card.json").read_text())[
            "weights"]["sha256"].encode())
    assert modelcard.model_info("default").checksum == want.hexdigest()
    assert modelcard.load_model("default").checksum == want.hexdigest()


def test_update_keeps_key_order_and_unknown_keys(tiny_model, tmp_path):
    root = tmp_path / "m"
    shutil.copytree(tiny_model, root)
    card_path = root / "card.json"
    raw = json.loads(card_path.read_text())
    raw["survey_notes"] = {"by": "someone"}  # a key lensscan does not know
    card_path.write_text(json.dumps(raw, indent=2))
    card = modelcard.update_card(str(root), threshold=0.25, calibration={"a": 1})
    got = json.loads(card_path.read_text())
    assert list(got) == [*raw, "calibration"] and got["threshold"] == 0.25
    assert got["survey_notes"] == {"by": "someone"} == card.extra["survey_notes"]
    assert ModelCard.from_json(card_path.read_text()) == card


def test_driver_reads_cards_not_weights(tiny_model, tmp_path):
    """model_info never reads a weights file: modified weights go unnoticed there (the actors
    check them where they load them), a missing file is refused at once."""
    root = tmp_path / "m"
    shutil.copytree(tiny_model, root)
    before = modelcard.model_info(str(root))
    (root / "m0" / "model.safetensors").write_bytes(b"not the weights")
    info = modelcard.model_info(str(root))
    assert info.checksum == before.checksum and info.member_names == ["m0", "m1"]
    with pytest.raises(ModelError, match=r"m0/model\.safetensors: checksum mismatch"):
        modelcard.load_model(str(root))
    (root / "m0" / "model.safetensors").unlink()
    with pytest.raises(ModelError, match=r"m0/model\.safetensors: weights file missing"):
        modelcard.model_info(str(root))


def test_malformed_member_entry_is_a_model_error(tiny_model, tmp_path):
    root = tmp_path / "m"
    shutil.copytree(tiny_model, root)
    raw = json.loads((root / "card.json").read_text())
    del raw["members"][0]["weight"]
    (root / "card.json").write_text(json.dumps(raw))
    with pytest.raises(ModelError, match=r"card\.json: malformed card \(KeyError"):
        modelcard.read_card(str(root))


@pytest.mark.parametrize(("edit", "why"), [
    (lambda c: c["members"][0].update(name="ensemble"), "must be text other than 'model'"),
    (lambda c: c["members"][0].update(name="rows"), "(the keys of a report)"),
    (lambda c: c["members"][0].update(name={"a": 1}), "member name {'a': 1} must be text"),
    (lambda c: c["members"][1].update(name=c["members"][0]["name"]), "member names must differ"),
    (lambda c: c["members"][0].update(weight=True), "weight True must be a number"),
    (lambda c: c.update(threshold=float("nan")), "'threshold' must be a finite number"),
    (lambda c: c["preprocessing"].update(crop=0), "preprocessing 'crop' must be a whole number"),
    (lambda c: c["preprocessing"].update(crop=100), "in [16, 64], not 100"),
    (lambda c: c["preprocessing"].update(noise_band=7), "'noise_band' must be a whole number"),
    (lambda c: c["preprocessing"].update(softening="3"), "'softening' must be a number"),
    (lambda c: c["preprocessing"].update(softening=0), "'softening' must be a number"),
    (lambda c: c.update(bands=["u", "g", "r", "i", "z"]), "a list of three band names"),
])
def test_tampered_ensemble_cards_are_one_line(tiny_model, tmp_path, edit, why):
    """Values a tampered card can hold that failed deep in the model, blamed the data, or
    replaced another model's results in a report: refused when the card is read."""
    root = tmp_path / "m"
    shutil.copytree(tiny_model, root)
    raw = json.loads((root / "card.json").read_text())
    raw.setdefault("preprocessing", {})
    edit(raw)
    (root / "card.json").write_text(json.dumps(raw))
    with pytest.raises(ModelError, match="malformed card") as err:
        modelcard.read_card(str(root))
    assert why in str(err.value)


@pytest.mark.parametrize("file", ["../m2/model.safetensors", "/etc/hostname", "sub/w.st"])
def test_a_members_weights_file_stays_in_its_folder(tiny_model, tmp_path, file):
    """A card's weights file is a name in its own folder: not another model's weights through
    ``..``, nor any file of the machine (its checksum was printed)."""
    root = tmp_path / "m"
    shutil.copytree(tiny_model, root)
    member = next(p for p in root.rglob("card.json") if p.parent != root)
    raw = json.loads(member.read_text())
    raw["weights"]["file"] = file
    member.write_text(json.dumps(raw))
    with pytest.raises(ModelError, match="must be a file name in the model's folder"):
        modelcard.load_model(str(root))


@pytest.mark.parametrize(("edit", "why"), [
    (lambda c: c["weights"].update(sha256=12), "weights 'sha256' must be text, not int"),
    (lambda c: c["weights"].update(bytes="many"), "weights 'bytes' must be a number, not str"),
    (lambda c: c.update(arch_kwargs={"widths": []}), "an architecture that cannot be built"),
    (lambda c: c.update(arch_kwargs={"widths": "x"}), "an architecture that cannot be built"),
])
def test_tampered_member_cards_are_one_line(tiny_model, tmp_path, edit, why):
    """A member card's weights of the wrong JSON type and arch_kwargs that build no network
    were tracebacks (AttributeError, IndexError), not one line naming the card."""
    root = tmp_path / "m"
    shutil.copytree(tiny_model, root)
    member = next(p for p in root.rglob("card.json") if p.parent != root)
    raw = json.loads(member.read_text())
    edit(raw)
    member.write_text(json.dumps(raw))
    with pytest.raises(ModelError, match=re.escape(why)):
        modelcard.load_model(str(root))


def test_a_calibration_that_holds_no_numbers_is_one_line():
    from lensscan.models.calibration import Calibration

    for key in ("a", "prior"):
        d = {"method": "platt", "a": 1.0, "b": 0.0, "val_prevalence": 0.1, "prior": 1e-4,
             key: "x"}
        with pytest.raises(ValueError, match=f"calibration {key}='x': not a number"):
            Calibration.from_dict(d)
