"""Model folders on any storage URL: a JSON card beside safetensors weights, never pickle.

A *member* folder holds ``card.json`` and ``model.safetensors``. An *ensemble* folder holds its
own ``card.json`` (member names and weights, bias, threshold, metrics) and one sub-folder per
member. ``--model default`` is the ensemble shipped in ``lensscan/assets/default_model``.

Reading cards and checking weights (:func:`model_info`) needs no torch: a scoring driver never
imports it (seconds of start-up); torch is imported where modules are built.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

from lensscan import __version__
from lensscan.errors import ModelError
from lensscan.io import storage

if TYPE_CHECKING:
    from torch import nn

    from lensscan.models.ensemble import Ensemble

CARD = "card.json"
WEIGHTS = "model.safetensors"
FORMAT = "lensscan-model/1"


def default_model_url() -> str:
    """Path of the ensemble bundled with the package."""
    return str(resources.files("lensscan") / "assets" / "default_model")


def resolve(url: str) -> str:
    """``default`` -> the bundled ensemble; anything else is a URL."""
    return default_model_url() if url in ("default", "", None) else url


def read_card(url: str) -> dict[str, Any]:
    """Read and check a model folder's card."""
    card_url = storage.join(url, CARD)
    try:
        card = json.loads(storage.read_bytes(card_url))
    except FileNotFoundError:
        raise ModelError(f"{url}: not a lensscan model folder (no {CARD})") from None
    except (NotADirectoryError, IsADirectoryError):
        hint = " (give the folder that holds it)" if str(url).endswith(CARD) else ""
        raise ModelError(f"{url}: is a file, not a model folder with {CARD} and "
                         f"{WEIGHTS}{hint}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{card_url}: card is not valid JSON ({exc})") from None
    if card.get("format") != FORMAT:
        raise ModelError(f"{card_url}: unknown card format {card.get('format')!r}, want {FORMAT}")
    return card


def save_member(url: str, model: nn.Module, card: dict[str, Any], half: bool = True) -> dict:
    """Write a member folder: weights (float16 when ``half``) and the card with their checksum."""
    from safetensors.torch import save as st_save

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    blob = st_save(state)
    card = dict(card, format=FORMAT, kind="member", lensscan_version=__version__,
                weights={"file": WEIGHTS, "sha256": hashlib.sha256(blob).hexdigest(),
                         "dtype": "float16" if half else "float32", "bytes": len(blob)})
    storage.write_bytes_atomic(storage.join(url, WEIGHTS), blob)
    storage.write_bytes_atomic(storage.join(url, CARD), json.dumps(card, indent=2).encode())
    return card


def _checked_weights(url: str, card: dict) -> tuple[str, bytes]:
    """A member's weights URL and bytes, checked against the card's checksum."""
    if card.get("kind") != "member":
        raise ModelError(f"{url}: card kind is {card.get('kind')!r}, expected 'member'")
    wmeta = card.get("weights", {})
    wurl = storage.join(url, wmeta.get("file", WEIGHTS))
    try:
        blob = storage.read_bytes(wurl)
    except FileNotFoundError:
        raise ModelError(f"{wurl}: weights file missing") from None
    digest = hashlib.sha256(blob).hexdigest()
    if wmeta.get("sha256") != digest:
        raise ModelError(f"{wurl}: checksum mismatch (card says {wmeta.get('sha256')}, file is "
                         f"{digest}): the weights were modified or belong to another model")
    return wurl, blob


def load_member(url: str, card: dict | None = None) -> tuple[nn.Module, dict]:
    """Build the architecture named in the card and load its checked weights (float32, eval)."""
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load

    from lensscan.models import create_model

    card = card or read_card(url)
    wurl, blob = _checked_weights(url, card)
    try:
        state = st_load(blob)
    except (SafetensorError, ValueError) as exc:
        raise ModelError(f"{wurl}: not a valid safetensors file ({exc})") from None
    try:
        model = create_model(card["arch"], **card.get("arch_kwargs", {}))
    except (ValueError, TypeError, KeyError) as exc:
        raise ModelError(f"{url}: card describes an unknown architecture ({exc})") from None
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise ModelError(f"{wurl}: weights do not match architecture {card['arch']!r} "
                         f"({first})") from None
    return model.eval(), card


def save_ensemble(url: str, card: dict[str, Any]) -> dict:
    """Write an ensemble card (members must already be saved in sub-folders of ``url``)."""
    card = dict(card, format=FORMAT, kind="ensemble", lensscan_version=__version__)
    storage.write_bytes_atomic(storage.join(url, CARD), json.dumps(card, indent=2).encode())
    return card


def update_card(url: str, **fields: Any) -> dict:
    """Set ``fields`` in the card of model folder ``url`` (weights untouched, so only the
    model's checksum changes); returns the new card."""
    url = resolve(url)
    card = {**read_card(url), **fields}
    storage.write_bytes_atomic(storage.join(url, CARD), json.dumps(card, indent=2).encode())
    return card


class _CardView:
    """What a model's card says, for the classes that hold one."""

    card: dict[str, Any]

    @property
    def preprocessing(self) -> dict:
        return self.card["preprocessing"]

    @property
    def threshold(self) -> float:
        return float(self.card.get("threshold", 0.5))


@dataclass
class ModelInfo(_CardView):
    """What a model folder's cards say, with every member's weights checked against its card,
    without building the model (no torch)."""

    card: dict[str, Any]
    member_names: list[str]
    checksum: str  # equal to LoadedModel.checksum of the same folder


def _members(url: str, card: dict) -> list[tuple[str, str, dict]]:
    """(name, URL, card) of every member of a member or ensemble folder, checked to share the
    ensemble's preprocessing."""
    if card.get("kind") == "member":
        return [(card.get("name", "model"), url, card)]
    if card.get("kind") != "ensemble":
        raise ModelError(f"{url}: card kind {card.get('kind')!r} is neither member nor ensemble")
    out = []
    for m in card["members"]:
        murl = storage.join(url, m["path"])
        mcard = read_card(murl)
        if mcard.get("preprocessing") != card.get("preprocessing"):
            raise ModelError(f"{url}: member {m['name']!r} uses other preprocessing than the "
                             "ensemble card")
        out.append((m["name"], murl, mcard))
    return out


def _checksum(card: dict, members: list[tuple[str, str, dict]]) -> str:
    digest = hashlib.sha256(json.dumps(card, sort_keys=True).encode())
    if card.get("kind") == "ensemble":
        for _, _, mcard in members:
            digest.update(mcard["weights"]["sha256"].encode())
    return digest.hexdigest()


def model_info(url: str = "default") -> ModelInfo:
    """Read and check a model folder (cards, every weights file's checksum) without torch."""
    url = resolve(url)
    card = read_card(url)
    members = _members(url, card)
    for _, murl, mcard in members:
        _checked_weights(murl, mcard)
    return ModelInfo(card, [name for name, _, _ in members], _checksum(card, members))


@dataclass
class LoadedModel(_CardView):
    """A ready-to-run ensemble (a single member is wrapped as a one-member ensemble)."""

    module: Ensemble
    card: dict[str, Any]
    member_names: list[str]
    checksum: str


def load_model(url: str = "default") -> LoadedModel:
    """Load a member or ensemble folder from any storage URL as an :class:`Ensemble`."""
    from lensscan.models.ensemble import Ensemble

    url = resolve(url)
    card = read_card(url)
    members = _members(url, card)
    modules = [load_member(murl, mcard)[0] for _, murl, mcard in members]
    if card.get("kind") == "member":
        ens = Ensemble(modules, [1.0], 0.0)
    else:
        ens = Ensemble(modules, [float(m["weight"]) for m in card["members"]],
                       float(card.get("bias", 0.0)))
    return LoadedModel(ens.eval(), card, [n for n, _, _ in members], _checksum(card, members))


__all__ = ["LoadedModel", "ModelInfo", "model_info", "load_model", "load_member", "save_member",
           "save_ensemble", "read_card", "update_card", "resolve", "default_model_url"]
