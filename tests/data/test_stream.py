"""The read stage: what training and scoring get from a unit of a shard."""

from __future__ import annotations

import numpy as np
import pytest
from support import make_batch

from lensscan.data.preprocess import Preprocessing
from lensscan.data.readstage import read_stage
from lensscan.data.stream import ReadUnits, plan, units_to_items
from lensscan.io.parquet import write_parquet
from lensscan.io.shards import Unit


def _items(unit: Unit) -> dict[str, np.ndarray]:
    """One unit as the read stage's batch of items (its index in the run's list: 0)."""
    return {k: np.array([v]) for k, v in units_to_items([unit])[0].items()}


def test_training_stage_keeps_a_bright_star_finite(tmp_path):
    """A bright star's core is 1e5-1e6 sky sigma: as float16 it became inf, and NaN through the
    training blur. The float16 stage clips to float16's range instead."""
    batch = make_batch(4, seed=1)
    batch["image"][1, :, 40, 40] = 1e5  # ~2e6 sky sigma at the test's noise level
    write_parquet(str(tmp_path / "s.parquet"), batch)
    (unit,), errors = plan(str(tmp_path))
    assert not errors
    (out,) = ReadUnits(Preprocessing().to_dict(), "normalized")(_items(unit))
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
    (ok,), (broken,) = (list(read(_items(u))) for u in (good, bad))
    assert str(broken["status"][0]).startswith("unreadable")
    side = Preprocessing.from_dict(pre).crop if stage == "model" else 64
    assert ok["image"].shape[1:] == broken["image"].shape[1:] == (3, side, side)
    assert ok["image"].dtype == broken["image"].dtype


def test_read_stage_rows_name_their_unit_by_index(ray_local, tmp_path):
    """Training's and scoring's read stage: every row once, naming its unit by its index in
    the run's list (a small integer; the driver knows the unit's shard), no shard URL."""
    for k in range(2):
        write_parquet(str(tmp_path / f"p{k}.parquet"),
                      make_batch(30, seed=k, start_id=100 * k), row_group_size=10)
    units, _ = plan(str(tmp_path), rows_per_unit=10)
    assert len(units) == 6
    ds = read_stage(units, ReadUnits(Preprocessing().to_dict(), "raw"), 0.25, blocks=2, tasks=1)
    batches = list(ds.iter_batches(batch_size=None, batch_format="numpy"))
    assert all("shard" not in b and b["unit"].dtype == np.int32 for b in batches)
    unit, row, ids = (np.concatenate([b[c] for b in batches]) for c in ("unit", "row",
                                                                        "object_id"))
    assert len(unit) == 60
    for i, u in enumerate(units):
        k = int(u.url.endswith("p1.parquet"))
        assert sorted(row[unit == i]) == list(range(u.start, u.stop))
        assert sorted(ids[unit == i]) == list(range(100 * k + u.start, 100 * k + u.stop))


def test_a_local_shard_rewritten_after_planning_stops_the_run_naming_it(tmp_path):
    """Local files have no version check: a shard rewritten with fewer rows after the run
    planned it used to end the run with a traceback about incomplete units."""
    from lensscan.errors import StorageError

    url = str(tmp_path / "s.parquet")
    write_parquet(url, make_batch(30, seed=1))
    (unit,), _ = plan(str(tmp_path))
    write_parquet(url, make_batch(20, seed=2))
    with pytest.raises(StorageError, match=r"s\.parquet.*holds 20 rows where the run planned "
                                           r"30: the file changed while the run read it"):
        list(ReadUnits(Preprocessing().to_dict(), "raw")(_items(unit)))
