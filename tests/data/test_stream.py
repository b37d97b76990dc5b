"""The read stage: what training and scoring get from a unit of a shard."""

from __future__ import annotations

import numpy as np
import pytest
from support import make_batch

from lensscan.data.preprocess import Preprocessing
from lensscan.data.stream import ReadUnits, plan
from lensscan.io.parquet import write_parquet
from lensscan.io.shards import Unit


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


@pytest.mark.parametrize("stage", ["raw", "normalized", "model"])
@pytest.mark.parametrize("pre", [{}, Preprocessing(crop=40).to_dict()], ids=["card", "crop40"])
def test_unreadable_rows_have_the_shape_of_readable_ones(tmp_path, stage, pre):
    """A corrupt shard's quarantined rows carry images of the shape and type its readable
    neighbours get (a card without a crop gets the default one), so that they batch together."""
    write_parquet(str(tmp_path / "good.parquet"), make_batch(4, seed=2))
    (good,), errors = plan(str(tmp_path))
    assert not errors
    (tmp_path / "bad.parquet").write_bytes(b"not a parquet file" * 100)
    bad = Unit(url=str(tmp_path / "bad.parquet"), fmt=good.fmt, start=0, stop=3, rg_stop=1)
    read = ReadUnits(pre, stage)
    (ok,), (broken,) = (list(read({k: np.array([v]) for k, v in u.to_dict().items()}))
                        for u in (good, bad))
    assert str(broken["status"][0]).startswith("unreadable")
    side = Preprocessing.from_dict(pre).crop if stage == "model" else 64
    assert ok["image"].shape[1:] == broken["image"].shape[1:] == (3, side, side)
    assert ok["image"].dtype == broken["image"].dtype
