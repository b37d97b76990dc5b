"""What both engines build from a run's settings, defined once: the reader that decodes the
units (Ray's read tasks, the local engine's reader thread) and the scoring model's arguments
(Ray's actors, the local engine's model), so that the engines score alike."""

from __future__ import annotations

from typing import Any

from lensscan.config import ScoreConfig
from lensscan.data.stream import ReadUnits
from lensscan.io.shards import Unit
from lensscan.score.resources import Resources, half_pixels


def unit_reader(preprocessing: dict, units: list[Unit], ids_as_strings: bool,
                res: Resources) -> ReadUnits:
    """Decodes ``units`` into raw cutouts (float16 kept where every unit stores it), one model
    batch per block; the model preprocesses on its own device."""
    return ReadUnits(preprocessing, "raw", ids_as_strings=ids_as_strings,
                     half=half_pixels(units), block_rows=res.batch_size)


def predictor_kwargs(cfg: ScoreConfig, model_url: str, preprocessing: dict,
                     res: Resources) -> dict[str, Any]:
    """The arguments of :class:`lensscan.score.predictor.EnsemblePredictor` for this run (the
    device is the engine's to give)."""
    return {"model_url": model_url, "preprocessing": preprocessing, "threads": res.threads,
            "tta": cfg.tta, "precision": cfg.precision, "compile": cfg.compile,
            "prior": cfg.prior}
