"""The class the scoring pipeline hands to Ray Data, importable without torch.

Ray Data pickles a callable class by reference, so the driver imports the class's module; the
predictor's module imports torch (seconds on a small machine, and memory), which the driver never
needs. :class:`ScoringActor` builds the real :class:`lensscan.score.predictor.EnsemblePredictor`
inside the actor process.
"""

from __future__ import annotations

import numpy as np


class ScoringActor:
    """Ray Data callable class; arguments as
    :class:`~lensscan.score.predictor.EnsemblePredictor`."""

    def __init__(self, **kwargs) -> None:
        from lensscan.score.predictor import EnsemblePredictor  # torch: in the actor only

        self.predictor = EnsemblePredictor(**kwargs)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.predictor(batch)
