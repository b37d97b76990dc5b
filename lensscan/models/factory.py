"""``create_model(name, **kwargs)`` over a name -> builder table."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from lensscan.models.baseline import BaselineCNN
from lensscan.models.resnet import MultiScaleResNet, SmallResNet

MODEL_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "baseline_cnn": BaselineCNN,
    "resnet": SmallResNet,
    "multiscale_resnet": MultiScaleResNet,
}


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`."""
    return sorted(MODEL_REGISTRY)


def create_model(name: str, **kwargs) -> nn.Module:
    """Build an architecture by name with the given arguments (``in_chans``, ``drop_rate``, ...)."""
    try:
        builder = MODEL_REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown architecture {name!r}; choose one of {list_models()}") from None
    return builder(**kwargs)
