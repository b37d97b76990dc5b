"""The class the scoring pipeline hands to Ray Data, importable without torch.

Ray Data pickles a callable class by reference, so the driver imports the class's module; the
predictor's module imports torch (seconds on a small machine, and memory), which the driver never
needs. :class:`ScoringActor` builds the real :class:`lensscan.score.predictor.EnsemblePredictor`
inside the actor process, where the model's weights are read and checked against its card.
"""

from __future__ import annotations

import numpy as np

from lensscan import runtime
from lensscan.errors import LensscanError

#: The worker start-up hook of ``LENSSCAN_WARM_WORKERS=1`` (:func:`warm_worker`).
WARM_HOOK = "lensscan.score.actor.warm_worker"


class ScoringActor:
    """Ray Data callable class; arguments as
    :class:`~lensscan.score.predictor.EnsemblePredictor`.

    A model that cannot be loaded (weights missing, modified, not safetensors; or storage that
    fails under the read) fails the first batch with its :class:`ModelError` or
    :class:`StorageError`: the error of a call reaches the driver as itself, which
    reports it in one line, where an actor that dies in ``__init__`` reaches it as Ray's
    tracebacks."""

    def __init__(self, **kwargs) -> None:
        from lensscan.score.predictor import EnsemblePredictor  # torch: in the actor only

        self.error: LensscanError | None = None
        try:
            self.predictor = EnsemblePredictor(**kwargs)
        except LensscanError as exc:  # a ModelError, or a StorageError (this node's
            self.error = exc  # credentials cannot read the model's bucket)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.error is not None:
            raise self.error
        return self.predictor(batch)


def warm_worker() -> None:
    """Ray worker start-up hook (opt-in: ``LENSSCAN_WARM_WORKERS=1``): import torch and the
    scoring code in every new worker, so that a scoring actor starts without paying the imports.

    Off by default: every worker pays it, the read tasks and Ray's own service actors included,
    which need no torch. Measured here (``lensscan bench --n 20000``, 2 cores): with the hook the
    first unit was committed after 13-14 s and the process tree peaked at 4.3 GB PSS; without
    it, 10-12.5 s and 3.7 GB."""
    runtime.local_worker()
    import lensscan.score.predictor  # noqa: F401  (imports torch)
