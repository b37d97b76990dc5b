"""The read stage: what training and scoring get from a unit of a shard."""

from __future__ import annotations

import numpy as np
from conftest import make_batch

from lensscan.data.preprocess import Preprocessing
from lensscan.data.stream import ReadUnits, plan
from lensscan.io.parquet import write_parquet


def test_training_stage_keeps_a_bright_star_finite(tmp_path):
    """A bright star's core is 1e5-1e6 sky sigma: as float16 it became inf, and NaN through the
    training blur. The float16 stage clips to float16's range instead."""
    batch = make_batch(4, seed=1)
    batch["image"][1, :, 40, 40] = 1e5  # ~2e6 sky sigma at the test's noise level
    write_parquet(str(tmp_path / "s.parquet"), batch)
    (unit,), errors = plan(str(tmp_path))
    assert not errors
    (out,) = ReadUnits(Preprocessing().to_dict(), "normalized")(
        {k: np.array([v]) for k, v in unit.to_dict().items()})
    image = out["image"]
    assert image.dtype == np.float16 and np.isfinite(image).all()
    assert image[1, :, 40, 40].min() >= 60000  # clipped near float16's maximum, not lost
    assert np.abs(image[0].astype(np.float32)).max() < 1000  # other rows untouched
