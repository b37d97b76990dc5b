"""``lensscan mosaic``: a PNG of simulated cutouts, one row per object kind."""

from __future__ import annotations

import posixpath

import numpy as np

from lensscan.data.display import composite_grid
from lensscan.io import storage
from lensscan.simulate.kinds import KINDS, render_object
from lensscan.simulate.population import Population, SurveyConditions


def kind_mosaic(
    out_png: str, per_kind: int = 8, seed: int = 0, kinds: tuple[str, ...] | None = None,
    pop: Population | None = None, cond: SurveyConditions | None = None, dpi: int = 70,
) -> str:
    """Draw ``per_kind`` objects of every kind (asinh g, r, i composites of
    :func:`lensscan.data.display.rgb_composite`) into one PNG grid (rows = kinds)."""
    kinds = kinds or tuple(KINDS)
    folder = posixpath.dirname(str(out_png).rstrip("/"))
    storage.check_folder(folder or ".")  # before drawing: a folder that is a file is refused
    images = [render_object(kind, np.random.default_rng([seed, r, c]), pop, cond)[0]
              for r, kind in enumerate(kinds) for c in range(per_kind)]
    storage.write_bytes_atomic(out_png, composite_grid(images, per_kind, row_labels=kinds,
                                                       dpi=dpi))
    return out_png
