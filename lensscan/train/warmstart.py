"""Where fine-tuning starts: ``--init default`` (or any ensemble) -> the member of the same
architecture, and its weights (widened when the run adds the residual input channels)."""

from __future__ import annotations

from typing import Any

import torch

from lensscan import modelcard
from lensscan.config import TrainConfig
from lensscan.errors import ModelError
from lensscan.io import storage
from lensscan.models import create_model


def _same_but_residual(theirs: dict[str, Any], ours: dict[str, Any]) -> bool:
    """The architecture arguments agree, but for ``residual`` that the run may add."""
    return ({k: v for k, v in theirs.items() if k != "residual"}
            == {k: v for k, v in ours.items() if k != "residual"})


def widened(state: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``state`` fitted to ``model``, whose stem takes twice the input channels (the residual
    ones): those weights start at zero, so the widened model computes what ``state`` did."""
    out = {}
    for key, want in model.state_dict().items():
        have = state[key]
        if have.shape != want.shape and have.dim() == 4 and want.shape[1] == 2 * have.shape[1]:
            have = torch.cat([have, torch.zeros_like(have)], dim=1)
        out[key] = have
    return out


def initial_weights(cfg: TrainConfig) -> dict[str, torch.Tensor]:
    """Weights of the trained member ``cfg.init`` (checked like any model load), which must have
    the same architecture as ``cfg`` (a run with ``residual`` may start from one without); the
    run starts from them with a fresh schedule."""
    member, card = modelcard.load_member(cfg.init)
    theirs = card.arch_kwargs or {}
    widen = cfg.arch_kwargs.get("residual", False) and not theirs.get("residual", False)
    if card.arch != cfg.arch or not (theirs == cfg.arch_kwargs or (
            widen and _same_but_residual(theirs, cfg.arch_kwargs))):
        raise ModelError(f"{cfg.init}: cannot start {cfg.member_name} from it: it is a "
                         f"{card.arch!r} {theirs}, the run trains "
                         f"{cfg.arch!r} {cfg.arch_kwargs}")
    if card.preprocessing != cfg.preprocessing:
        raise ModelError(f"{cfg.init}: cannot start {cfg.member_name} from it: it was trained "
                         f"with preprocessing {card.preprocessing}, the run uses "
                         f"{cfg.preprocessing}")
    state = member.state_dict()
    return widened(state, create_model(cfg.arch, **cfg.arch_kwargs)) if widen else state


def resolve_init(init: str, arch: str, arch_kwargs: dict[str, Any], name: str) -> str:
    """The member folder a run of ``arch`` starts from.

    ``init`` is a member folder (returned as is), an ensemble folder, or ``default`` (the bundled
    ensemble). From an ensemble the member named ``name`` is taken when it has the same
    architecture and arguments, else the first member that has them (the bundled ensemble:
    ``resnet`` -> ``resnet_s0``, ``multiscale_resnet`` -> ``msresnet_s1``).
    """
    url = modelcard.resolve(init)
    card = modelcard.read_card(url)
    if card.kind != "ensemble":
        return url
    fits = []
    for m in card.members or ():
        member = storage.join(url, m.path)
        mcard = modelcard.read_card(member)
        if mcard.arch == arch and _same_but_residual(mcard.arch_kwargs or {}, arch_kwargs):
            fits.append((m.name != name, member))
    if not fits:
        have = ", ".join(m.name for m in card.members or ())
        raise ModelError(f"{init}: no member of this ensemble ({have}) is a {arch!r} "
                         f"{arch_kwargs or ''} to start from")
    return sorted(fits, key=lambda f: f[0])[0][1]
