"""The read stage of every Ray Data stream of cutouts, training's and scoring's: units in,
rows with their images out (:class:`lensscan.data.stream.ReadUnits`)."""

from __future__ import annotations

import ray.data
from ray.data import TaskPoolStrategy

from lensscan.data.stream import ReadUnits, units_to_items
from lensscan.io.shards import Unit


def read_stage(units: list[Unit], read: ReadUnits, num_cpus: float, blocks: int | None = None,
               tasks: int | None = None) -> ray.data.Dataset:
    """A lazy dataset of the rows of ``units``, read by ``read`` in ``blocks`` read tasks
    (default: one per unit) of ``num_cpus`` CPUs each, at most ``tasks`` at once (default: as
    many as Ray schedules). Every row's ``unit`` is its unit's index in ``units``."""
    blocks = blocks or max(1, len(units))
    ds = ray.data.from_items(units_to_items(units), override_num_blocks=blocks)
    # from_items splits the units evenly, so a block may hold fewer than planned per task; a
    # batch_size above a block's size would make Ray Data bundle blocks into fewer, larger tasks
    return ds.map_batches(read, batch_size=max(1, len(units) // blocks), num_cpus=num_cpus,
                          compute=TaskPoolStrategy(size=tasks) if tasks else None)
