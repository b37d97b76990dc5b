"""Pure-torch lens classifiers: one ``create_model(name, **kwargs)`` over a small registry.

Every architecture takes ``in_chans``, ``num_classes`` and ``drop_rate`` and offers
``forward_features`` / ``forward_head``. This package imports torch and numpy only.
"""

from lensscan.models.factory import MODEL_REGISTRY, create_model, list_models

__all__ = ["MODEL_REGISTRY", "create_model", "list_models"]
