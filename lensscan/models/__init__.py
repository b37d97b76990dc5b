"""Lens classifiers and what their logits mean: one ``create_model(name, **kwargs)`` over a small
registry of pure-torch architectures, and :mod:`lensscan.models.calibration` (pure numpy).

Every architecture takes ``in_chans``, ``num_classes`` and ``drop_rate`` and offers
``forward_features`` / ``forward_head``. This package imports torch and numpy only, and torch
only when the registry is first used: the scoring driver and the query import
:mod:`lensscan.models.calibration` without paying for torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lensscan.models.factory import MODEL_REGISTRY, create_model, list_models

__all__ = ["MODEL_REGISTRY", "create_model", "list_models"]


def __getattr__(name: str):
    """``MODEL_REGISTRY``, ``create_model`` and ``list_models`` from
    :mod:`lensscan.models.factory`, imported on first use."""
    if name in __all__:
        from lensscan.models import factory

        return getattr(factory, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
