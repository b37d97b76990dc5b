"""Model folders on any storage URL: a JSON card beside safetensors weights, never pickle.

A *member* folder holds ``card.json`` and ``model.safetensors``. An *ensemble* folder holds its
own ``card.json`` (member names and weights, bias, threshold, metrics) and one sub-folder per
member. ``--model default`` is the ensemble shipped in ``lensscan/assets/default_model``.

A card is read into a :class:`ModelCard` and written back from it unchanged, key order
included. Reading cards (:func:`model_info`) needs no torch and reads no weights: a scoring
driver never imports torch (seconds of start-up); torch is imported where modules are built,
and weights are checked against their card where they are loaded.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

from lensscan import __version__
from lensscan.errors import ModelError
from lensscan.io import storage
from lensscan.io.batch import CUTOUT_SHAPE
from lensscan.models.card import CARD, FORMAT, WEIGHTS, Member, ModelCard, Weights

if TYPE_CHECKING:
    from torch import nn

    from lensscan.models.ensemble import Ensemble

__all__ = ["CARD", "FORMAT", "WEIGHTS", "Member", "ModelCard", "Weights"]  # and the functions


def default_model_url() -> str:
    """Path of the ensemble bundled with the package."""
    return str(resources.files("lensscan") / "assets" / "default_model")


def resolve(url: str) -> str:
    """``default`` (or None, a setting left unset) -> the bundled ensemble; anything else is a
    URL. An empty name is refused: a blank shell variable would otherwise name the bundled
    model, which ``calibrate`` rewrites."""
    if url is not None and not str(url).strip():
        raise ModelError(f"model {url!r}: an empty name; give 'default' or a model folder")
    return default_model_url() if url in ("default", None) else url


def read_card(url: str) -> ModelCard:
    """Read and check a model folder's card."""
    card_url = storage.join(url, CARD)
    try:
        raw = json.loads(storage.read_bytes(card_url))
    except FileNotFoundError:
        raise ModelError(f"{url}: not a lensscan model folder (no {CARD})") from None
    except (NotADirectoryError, IsADirectoryError):
        hint = " (give the folder that holds it)" if str(url).endswith(CARD) else ""
        raise ModelError(f"{url}: is a file, not a model folder with {CARD} and "
                         f"{WEIGHTS}{hint}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{card_url}: card is not valid JSON ({exc})") from None
    fmt = raw.get("format") if isinstance(raw, dict) else None
    if fmt != FORMAT:
        raise ModelError(f"{card_url}: unknown card format {fmt!r}, want {FORMAT}")
    try:
        return ModelCard.from_dict(raw)
    except (KeyError, TypeError) as exc:
        raise ModelError(f"{card_url}: malformed card ({type(exc).__name__}: {exc})") from None


def _write_card(url: str, card: ModelCard) -> None:
    storage.write_bytes_atomic(storage.join(url, CARD), card.to_json().encode())


def save_member(url: str, model: nn.Module, card: ModelCard | Mapping[str, Any],
                half: bool = True) -> ModelCard:
    """Write a member folder: weights (float16 when ``half``) and the card with their checksum."""
    from safetensors.torch import save as st_save

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    blob = st_save(state)
    card = _as_card(card).updated(
        format=FORMAT, kind="member", lensscan_version=__version__,
        weights={"file": WEIGHTS, "sha256": hashlib.sha256(blob).hexdigest(),
                 "dtype": "float16" if half else "float32", "bytes": len(blob)})
    storage.write_bytes_atomic(storage.join(url, WEIGHTS), blob)
    _write_card(url, card)
    return card


def _as_card(card: ModelCard | Mapping[str, Any]) -> ModelCard:
    return card if isinstance(card, ModelCard) else ModelCard.from_dict(card)


def _weights_url(url: str, card: ModelCard) -> str:
    """The URL of the weights of member folder ``url``."""
    if card.kind != "member":
        raise ModelError(f"{url}: card kind is {card.kind!r}, expected 'member'")
    return storage.join(url, (card.weights or Weights()).filename)


def _checked_weights(url: str, card: ModelCard) -> tuple[str, bytes]:
    """A member's weights URL and bytes, checked against the card's checksum."""
    wmeta = card.weights or Weights()
    wurl = _weights_url(url, card)
    try:
        blob = storage.read_bytes(wurl)
    except FileNotFoundError:
        raise ModelError(f"{wurl}: weights file missing") from None
    digest = hashlib.sha256(blob).hexdigest()
    if wmeta.sha256 != digest:
        raise ModelError(f"{wurl}: checksum mismatch (card says {wmeta.sha256}, file is "
                         f"{digest}): the weights were modified or belong to another model")
    return wurl, blob


def load_member(url: str, card: ModelCard | None = None) -> tuple[nn.Module, ModelCard]:
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
    try:  # arch_kwargs are the card's, untrusted: an empty or huge width fails in many ways
        model = create_model(card.arch, **(card.arch_kwargs or {}))
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError,
            RuntimeError, MemoryError) as exc:
        raise ModelError(f"{url}: card describes an architecture that cannot be built "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise ModelError(f"{wurl}: weights do not match architecture {card.arch!r} "
                         f"({first})") from None
    return model.eval(), card


def save_ensemble(url: str, card: ModelCard | Mapping[str, Any]) -> ModelCard:
    """Write an ensemble card (members must already be saved in sub-folders of ``url``)."""
    card = _as_card(card).updated(format=FORMAT, kind="ensemble", lensscan_version=__version__)
    _write_card(url, card)
    return card


def update_card(url: str, **values: Any) -> ModelCard:
    """Set ``values`` in the card of model folder ``url`` (weights untouched, so only the
    model's checksum changes); returns the new card."""
    url = resolve(url)
    card = read_card(url).updated(**values)
    _write_card(url, card)
    return card


class _CardView:
    """What a model's card says, for the classes that hold one."""

    card: ModelCard

    @property
    def preprocessing(self) -> dict:
        return self.card.preprocessing

    @property
    def threshold(self) -> float:
        return self.card.operating_threshold


@dataclass
class ModelInfo(_CardView):
    """What a model folder's cards say, without reading weights or building the model (no
    torch): what a scoring driver needs."""

    card: ModelCard
    member_names: list[str]
    checksum: str  # equal to LoadedModel.checksum of the same folder


def _members(url: str, card: ModelCard) -> list[tuple[str, str, ModelCard]]:
    """(name, URL, card) of every member of a member or ensemble folder, checked to share the
    ensemble's preprocessing."""
    shape = (card.input or {}).get("shape")
    if shape is not None and shape != list(CUTOUT_SHAPE):
        raise ModelError(f"{url}: the card's input shape is {shape}; lensscan's cutouts are "
                         f"{list(CUTOUT_SHAPE)}")
    if card.kind == "member":
        return [(card.name or "model", url, card)]
    if card.kind != "ensemble":
        raise ModelError(f"{url}: card kind {card.kind!r} is neither member nor ensemble")
    if not card.members:
        raise ModelError(f"{url}: the ensemble card lists no members")
    out = []
    weights = [m.weight for m in card.members]
    if not all(isinstance(v, int | float) and math.isfinite(v)
               for v in [*weights, card.bias or 0.0]):
        raise ModelError(f"{url}: the card's member weights and bias must be finite numbers "
                         f"(weights {weights}, bias {card.bias})")
    for m in card.members:
        murl = storage.join(url, m.path)
        mcard = read_card(murl)
        if mcard.preprocessing != card.preprocessing:
            raise ModelError(f"{url}: member {m.name!r} uses other preprocessing than the "
                             "ensemble card")
        if not (mcard.weights and mcard.weights.sha256):
            raise ModelError(f"{murl}: card has no weights.sha256, so its weights cannot be "
                             "checked")
        out.append((m.name, murl, mcard))
    return out


def _checksum(card: ModelCard, members: list[tuple[str, str, ModelCard]]) -> str:
    digest = hashlib.sha256(json.dumps(card.to_dict(), sort_keys=True).encode())
    if card.kind == "ensemble":
        for _, _, mcard in members:
            digest.update((mcard.weights or Weights()).sha256.encode())
    return digest.hexdigest()


def model_info(url: str = "default") -> ModelInfo:
    """Read and check a model folder's cards, and that every member's weights file is there
    (its bytes are not read: they are checked against their card where they are loaded,
    :func:`load_member`)."""
    url = resolve(url)
    card = read_card(url)
    members = _members(url, card)
    for _, murl, mcard in members:
        wurl = _weights_url(murl, mcard)
        if not storage.exists(wurl):
            raise ModelError(f"{wurl}: weights file missing")
    return ModelInfo(card, [name for name, _, _ in members], _checksum(card, members))


@dataclass
class LoadedModel(_CardView):
    """A ready-to-run ensemble (a single member is wrapped as a one-member ensemble)."""

    module: Ensemble
    card: ModelCard
    member_names: list[str]
    checksum: str


def load_model(url: str = "default") -> LoadedModel:
    """Load a member or ensemble folder from any storage URL as an :class:`Ensemble`."""
    from lensscan.models.ensemble import Ensemble

    url = resolve(url)
    card = read_card(url)
    members = _members(url, card)
    modules = [load_member(murl, mcard)[0] for _, murl, mcard in members]
    if card.kind == "member":
        ens = Ensemble(modules, [1.0], 0.0)
    else:
        ens = Ensemble(modules, [float(m.weight) for m in card.members],
                       float(card.bias if card.bias is not None else 0.0))
    return LoadedModel(ens.eval(), card, [n for n, _, _ in members], _checksum(card, members))


__all__ = ["LoadedModel", "Member", "ModelCard", "ModelInfo", "Weights", "model_info",
           "load_model", "load_member", "save_member", "save_ensemble", "read_card",
           "update_card", "resolve", "default_model_url"]
