"""Simulate a whole mock survey in parallel processes and write it as shards with truth columns.

Every object ``i`` is drawn from its own generator ``default_rng([seed, i])``, so the output is the
same bytes for a given seed whatever the number of processes or the shard size.
"""

from __future__ import annotations

import io
import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field

import numpy as np

from lensscan.config import MAX_ROWS
from lensscan.io import storage
from lensscan.io.shards import write_shard
from lensscan.simulate.kinds import NONLENS_KINDS, TRUTH_COLUMNS, render_object
from lensscan.simulate.population import FAMILY_COLUMNS, Population, SurveyConditions

#: Centre and side of the simulated sky patch, degrees.
FIELD_RA, FIELD_DEC, FIELD_SIDE = 150.1, 2.2, 1.0


@dataclass(frozen=True)
class SurveySpec:
    """What to simulate."""

    lenses: int  # number of lenses
    nonlenses: int  # number of non-lenses
    seed: int = 0  # master seed; object i uses default_rng([seed, i])
    test_fraction: float = 0.2  # share of objects in the "test" split
    population: Population = field(default_factory=Population)
    conditions: SurveyConditions = field(default_factory=SurveyConditions)

    @property
    def total(self) -> int:
        return self.lenses + self.nonlenses


def object_kinds(spec: SurveySpec) -> np.ndarray:
    """The kind of every object, lenses shuffled among non-lenses (deterministic)."""
    rng = np.random.default_rng([spec.seed, 2**32 - 1])
    mix = dict(spec.population.nonlens_mix)
    if spec.lenses == 0:  # a paired non-lens is a lens of the survey without its source
        mix.pop("paired", None)
    names = [k for k in NONLENS_KINDS if k != "paired" or k in mix]
    weights = np.array([mix.get(k, 0.0) for k in names])
    nonlens = rng.choice(names, size=spec.nonlenses, p=weights / weights.sum()).astype(object)
    # each lens is paired at most once: more paired non-lenses than lenses would be copies of
    # one image (a survey of 1 % lenses drew six of each); the rest are plain ellipticals
    paired = np.flatnonzero(nonlens == "paired")
    nonlens[paired[spec.lenses:]] = "elliptical"
    kinds = np.concatenate([np.full(spec.lenses, "lens", dtype=object), nonlens])
    return kinds[rng.permutation(spec.total)]


def partners(kinds: np.ndarray) -> np.ndarray:
    """For every ``paired`` object, the index of the lens it pairs with (the lenses in order;
    :func:`object_kinds` draws no more paired objects than lenses); -1 for every other
    object."""
    out = np.full(len(kinds), -1, dtype=np.int64)
    lenses = np.flatnonzero(kinds == "lens")
    paired = np.flatnonzero(kinds == "paired")
    if len(paired):
        out[paired] = lenses[np.arange(len(paired)) % len(lenses)]
    return out


def render_range(spec: SurveySpec, kinds: np.ndarray, start: int, stop: int) -> dict:
    """Render objects ``[start, stop)`` as a batch with truth columns. A ``paired`` object
    replays its lens's generator, so it is that very scene without the lensed source."""
    n = stop - start
    images = np.empty((n, 3, 64, 64), np.float32)
    truth = {k: np.empty(n) for k in TRUTH_COLUMNS}
    families = {k: np.empty(n, dtype=object) for k in FAMILY_COLUMNS}
    ra, dec = np.empty(n), np.empty(n)
    split = np.empty(n, dtype=object)
    partner = partners(kinds)
    for j, i in enumerate(range(start, stop)):
        rng = np.random.default_rng([spec.seed, i])
        u = rng.random(3)
        ra[j] = FIELD_RA + (u[0] - 0.5) * FIELD_SIDE / np.cos(np.deg2rad(FIELD_DEC))
        dec[j] = FIELD_DEC + (u[1] - 0.5) * FIELD_SIDE
        split[j] = "test" if u[2] < spec.test_fraction else "train"
        if partner[i] >= 0:  # the lens's scene, and its split: a pair never straddles them
            rng = np.random.default_rng([spec.seed, partner[i]])
            u = rng.random(3)  # where the lens's own draws start
            split[j] = "test" if u[2] < spec.test_fraction else "train"
        images[j], t = render_object(kinds[i], rng, spec.population, spec.conditions)
        for k in TRUTH_COLUMNS:
            truth[k][j] = t[k]
        for k in FAMILY_COLUMNS:
            families[k][j] = t[k]
    return {
        "object_id": np.arange(start, stop, dtype=np.int64),
        "ra": ra,
        "dec": dec,
        "image": images,
        "label": (kinds[start:stop] == "lens").astype(np.int8),
        "kind": kinds[start:stop].astype(object),
        "split": split,
        "paired_with": partner[start:stop],
        **{k: v.astype(np.float32) for k, v in truth.items()},
        **families,
    }


def _write_job(spec: SurveySpec, out: str, fmt: str, index: int, start: int, stop: int) -> int:
    kinds = object_kinds(spec)
    batch = render_range(spec, kinds, start, stop)
    if fmt == "npy":
        _write_npy(out, batch)
    else:
        write_shard(storage.join(out, f"part-{index:05d}.{fmt}"), batch)
    return stop - start


def _write_npy(out: str, batch: dict) -> None:
    for j, oid in enumerate(batch["object_id"]):
        lens = bool(batch["label"][j])
        folder = f"{batch['split'][j]}_{'lenses' if lens else 'nonlenses'}"
        buf = io.BytesIO()
        np.save(buf, batch["image"][j])
        stem = f"{'L' if lens else 'N'}{oid:06d}"
        storage.write_bytes_atomic(storage.join(out, folder, f"{stem}.npy"), buf.getvalue())


#: Shards one survey may have: its jobs are listed before any runs
MAX_SHARDS = 100_000


def check_size(total: int, shard_size: int) -> None:
    """Refuse a survey of no object, of more than :data:`MAX_ROWS`, or of more than
    :data:`MAX_SHARDS` shards (its job list is built up front), in one line: before an
    ``--overwrite`` removes the survey it would replace."""
    if total <= 0:
        raise ValueError("simulate at least one object")
    if total > MAX_ROWS:
        raise ValueError(f"{total} objects: at most {MAX_ROWS:,} per survey")
    if -(-total // shard_size) > MAX_SHARDS:
        raise ValueError(f"{total} objects in shards of {shard_size}: at most {MAX_SHARDS:,} "
                         "shards; give a larger --shard-size")


def simulate_survey(
    out: str,
    spec: SurveySpec,
    fmt: str = "parquet",
    shard_size: int = 1000,
    workers: int | None = None,
    progress: bool = True,
) -> dict[str, int]:
    """Simulate ``spec`` into ``out`` as Parquet/FITS shards or the DeepLense ``.npy`` layout.

    Parameters
    ----------
    out : str
        Output folder URL.
    fmt : {"parquet", "fits", "npy"}
    shard_size : int
        Objects per shard (and per process task).
    workers : int, optional
        Processes; default all cores.

    Returns
    -------
    dict
        ``objects``, ``lenses``, ``nonlenses`` and ``shards`` written.
    """
    from tqdm import tqdm

    if fmt not in ("parquet", "fits", "npy"):
        raise ValueError(f"format must be parquet, fits or npy, not {fmt!r}")
    check_size(spec.total, shard_size)
    jobs = [(k, s, min(s + shard_size, spec.total))
            for k, s in enumerate(range(0, spec.total, shard_size))]
    workers = workers or min(os.cpu_count() or 1, len(jobs))
    bar = tqdm(total=spec.total, desc="simulate", unit="cutout", disable=not progress)
    if workers <= 1:
        for k, s, e in jobs:
            bar.update(_write_job(spec, out, fmt, k, s, e))
    else:
        ctx = mp.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            futures = [pool.submit(_write_job, spec, out, fmt, k, s, e) for k, s, e in jobs]
            for fut in as_completed(futures):
                bar.update(fut.result())
    bar.close()
    return {"objects": spec.total, "lenses": spec.lenses, "nonlenses": spec.nonlenses,
            "shards": len(jobs) if fmt != "npy" else 0}
