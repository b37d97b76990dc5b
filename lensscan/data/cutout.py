"""``lensscan cutout``: 64 x 64 g, r, i cutouts of catalogue objects from coadd images, as shards.

Launch::

    lensscan cutout objects.csv 's3://survey/coadd/*/calexp-HSC-{band}-*.fits' \
        --band-names G,R,I --bands g,r,i --out s3://survey/cutouts/

Every catalogue row ends exactly once: as a row of the Parquet shards, cut from the tile where
it lies farthest from the edge (:mod:`lensscan.data.placement`), or in ``_missing.parquet`` with
a reason: ``no_tile`` (on no image, or no position), ``off_sky`` (RA outside [0, 360) or Dec
outside [-90, 90] degrees: a catalogue in other units, never wrapped onto a tile), ``edge``
(the stamp is partly off the image), ``masked`` (a pixel of the stamp is NaN or inf in some
band) or ``unreadable`` (its tile's image file is truncated or corrupt; the file is listed in
``_cutout.json``). An object whose best tile gives a masked or unreadable stamp is tried on its
next tile. One Ray task per tile and rank
reads each band once, only the rows it needs (``.section``), and writes its own shards, so
pixels never pass through the driver. Without ``--resample`` a stamp holds the very pixels of
``astropy.nddata.Cutout2D(image, position, (64, 64), wcs=wcs)``; ``offset_x``/``offset_y``
keep where the object lies relative to the stamp's centre (pixels, in (-0.5, 0.5]).
"""

from __future__ import annotations

import json
import math
import time
import zlib
from contextlib import ExitStack

import numpy as np
import pyarrow as pa
import ray

from lensscan import runtime
from lensscan.config import ZEROPOINT_RANGE, CutoutConfig, check_bounds
from lensscan.data import placement as P
from lensscan.data.resample import read_half, require_reproject, resample_stamp
from lensscan.errors import LensscanError, NothingReadableError
from lensscan.io import coadd, storage
from lensscan.io.batch import off_sky
from lensscan.io.catalogs import Columns, read_catalog
from lensscan.io.parquet import flux_metadata, write_parquet

MISSING = "_missing.parquet"
SUMMARY = "_cutout.json"
REASONS = ("no_tile", "off_sky", "edge", "masked", "unreadable")
#: what a corrupt or truncated image raises as its pixels are read (zlib: a tile-compressed
#: image whose compressed bytes are damaged)
PIXEL_ERRORS = (TypeError, ValueError, OSError, EOFError, zlib.error)


def check_options(cfg: CutoutConfig) -> None:
    """Refuse settings that cannot give cutouts, before anything is read (the command line
    checks them too; this holds for calls from Python)."""
    check_bounds(cfg)
    for name, bands in (("--bands", cfg.bands), ("--band-names", cfg.band_names)):
        if bands is not None and len(set(bands)) != len(bands):
            raise ValueError(f"{name} {','.join(bands)}: each band once (one image would be "
                             "written as two bands)")
    lo, hi = ZEROPOINT_RANGE
    if not (math.isfinite(cfg.zeropoint) and lo <= cfg.zeropoint <= hi):
        raise ValueError(f"--zeropoint {cfg.zeropoint:g}: give an AB zero-point in "
                         f"{lo:g}-{hi:g}")
    if cfg.psf_fwhm is not None and not all(math.isfinite(v) and v > 0 for v in cfg.psf_fwhm):
        raise ValueError(f"--psf-fwhm {','.join(f'{v:g}' for v in cfg.psf_fwhm)}: give "
                         "positive numbers (arcsec), one per band")


def check_apart(cfg: CutoutConfig, tiles: list[coadd.Tile], partial: list[str]) -> None:
    """Refuse an ``--out`` that holds the catalogue or an image the glob matched (of a
    complete tile or not): the shards would be written among them, and ``--overwrite`` would
    delete them."""
    inputs = [cfg.catalog, *(b.url for t in tiles for b in t.bands), *partial]
    for url in inputs:
        if storage.inside(url, cfg.out):
            raise ValueError(f"{url}: the input lies inside --out {cfg.out}, which the run "
                             "fills with shards (and --overwrite clears); write elsewhere")


def check_tiles(tiles: list[coadd.Tile], cfg: CutoutConfig) -> None:
    """Refuse a pixel scale other than ``cfg.pixel_scale`` or bands on different pixel grids,
    unless ``cfg.resample``."""
    if cfg.resample:
        require_reproject()
        return
    for tile in tiles:
        for band in tile.bands:
            off = max(abs(s / cfg.pixel_scale - 1) for s in band.pixel_scale)
            if off > cfg.scale_tolerance:
                raise ValueError(
                    f"{band.url}: pixel scale {band.pixel_scale[0]:.4f}\"x"
                    f"{band.pixel_scale[1]:.4f}\", the survey's is {cfg.pixel_scale}\" "
                    "(give --pixel-scale, or --resample to reproject)")
        P.check_grid(tile)


def _stamps(hdul, band: coadd.BandImage, rows: dict, cfg: CutoutConfig) -> np.ndarray:
    """One band's stamps of every row, (n, 64, 64) float32, read with as few sections as
    sensible: one bounding box when the stamps fill a quarter of it, else one per stamp."""
    n, S = len(rows["x"]), P.STAMP
    if cfg.resample:
        wcs = band.wcs()
        return np.stack([resample_stamp(hdul, band, wcs, rows["x"][i], rows["y"][i],
                                        rows["ra"][i], rows["dec"][i], cfg.pixel_scale)
                         for i in range(n)])
    x0, y0 = P.stamp_origin(rows["x"], rows["y"])
    out = np.empty((n, S, S), np.float32)
    bx0, by0, bx1, by1 = x0.min(), y0.min(), x0.max() + S, y0.max() + S
    if (bx1 - bx0) * (by1 - by0) <= 4 * n * S * S:
        box = coadd.read_section(hdul, band.hdu, slice(by0, by1), slice(bx0, bx1))
        for i in range(n):
            out[i] = box[y0[i] - by0:y0[i] - by0 + S, x0[i] - bx0:x0[i] - bx0 + S]
    else:
        for i in range(n):
            out[i] = coadd.read_section(hdul, band.hdu, slice(y0[i], y0[i] + S),
                                        slice(x0[i], x0[i] + S))
    return out


def _cut(hduls: list, tile: coadd.Tile, rows: dict, cfg: CutoutConfig) -> dict[str, np.ndarray]:
    """The output rows (every column) of ``rows`` from the open band images ``hduls``."""
    n = len(rows["row"])
    images = np.empty((n, 3, P.STAMP, P.STAMP), np.float32)  # (N, band, y, x)
    for b, band in enumerate(tile.bands):
        images[:, b] = _stamps(hduls[b], band, rows, cfg)
        if band.zeropoint is not None and band.zeropoint != cfg.zeropoint:
            images[:, b] *= np.float32(10 ** (0.4 * (cfg.zeropoint - band.zeropoint)))
    if cfg.resample:
        off_x = off_y = np.zeros(n, np.float32)
    else:
        x0, y0 = P.stamp_origin(rows["x"], rows["y"])
        off_x = (rows["x"] - x0 - (P.STAMP - 1) / 2).astype(np.float32)
        off_y = (rows["y"] - y0 - (P.STAMP - 1) / 2).astype(np.float32)
    batch = {"object_id": rows["object_id"], "ra": rows["ra"], "dec": rows["dec"],
             "image": images, "offset_x": off_x, "offset_y": off_y,
             "tile": np.full(n, tile.key, dtype=object)}
    if "psf_fwhm" in rows:
        batch["psf_fwhm"] = rows["psf_fwhm"].astype(np.float32)
    return batch


def cut_tile(tile: coadd.Tile, name: str, rows: dict, cfg: CutoutConfig) -> dict:
    """Ray task: cut the stamps of ``rows`` (catalogue ``row``, ``object_id``, ``ra``, ``dec``,
    pixel ``x``/``y`` in the tile, optional ``psf_fwhm``) from ``tile`` and write the clean ones
    as shards ``<out>/<name>-<k>.parquet``, ``shard_size`` rows at a time (sorted by position,
    so each chunk reads a compact region). Returns the catalogue rows written and masked."""
    order = np.lexsort((rows["x"], rows["y"]))
    rows = {k: v[order] for k, v in rows.items()}
    meta = flux_metadata(cfg.pixel_scale, cfg.zeropoint)
    written, masked, unreadable, errors = [], [], [], []
    with ExitStack() as stack:
        try:
            hduls = [stack.enter_context(coadd.open_image(b.url)) for b in tile.bands]
        except PIXEL_ERRORS as exc:  # opened at planning, damaged since: every row unreadable
            return _unreadable_tile(tile, rows["row"], exc)
        for k, start in enumerate(range(0, len(order), cfg.shard_size)):
            part = {c: v[start:start + cfg.shard_size] for c, v in rows.items()}
            try:
                batch = _cut(hduls, tile, part, cfg)
            except PIXEL_ERRORS as exc:  # a truncated or corrupt image
                failed = _unreadable_tile(tile, part["row"], exc)
                unreadable.append(failed["unreadable"])
                errors += failed["errors"]
                continue
            clean = np.isfinite(batch["image"]).all(axis=(1, 2, 3))
            if clean.any():
                write_parquet(storage.join(cfg.out, f"{name}-{k:03d}.parquet"),
                              {c: v[clean] for c, v in batch.items()}, tuple(cfg.bands),
                              metadata=meta, pixels=cfg.pixels)
            written.append(part["row"][clean])
            masked.append(part["row"][~clean])
    none = np.zeros(0, np.int64)
    return {"written": np.concatenate(written or [none]),
            "masked": np.concatenate(masked or [none]),
            "unreadable": np.concatenate(unreadable or [none]), "errors": errors[:1]}


def _unreadable_tile(tile: coadd.Tile, rows: np.ndarray, exc: BaseException) -> dict:
    """``cut_tile``'s result for ``rows`` of a tile whose pixels cannot be read; a storage
    failure (not the file's fault) is raised: the run stops and a rerun finishes it."""
    if storage.is_storage_failure(exc):
        raise exc
    none = np.zeros(0, np.int64)
    why = " ".join(str(exc).split())[:200] or type(exc).__name__
    return {"written": none, "masked": none, "unreadable": np.asarray(rows, np.int64),
            "errors": [f"{' / '.join(b.url for b in tile.bands)}: cannot read pixels ({why})"]}


def _catalog(cfg: CutoutConfig) -> dict[str, np.ndarray]:
    cat = read_catalog(cfg.catalog, Columns(cfg.id_col, cfg.ra_col, cfg.dec_col),
                       tuple(cfg.bands))
    if not len(cat["ra"]):
        raise ValueError(f"{cfg.catalog}: the catalogue has no rows")
    if cfg.psf_fwhm is not None:
        cat["psf_fwhm"] = np.tile(np.asarray(cfg.psf_fwhm, np.float32), (len(cat["ra"]), 1))
    return cat


def off_sky_note(url: str, cat: dict[str, np.ndarray], rows: np.ndarray) -> str:
    """One line naming how many rows are off the sky, and the first of them."""
    i = int(rows[0])
    return (f"{url}: {len(rows)} row(s) have a position off the sky (RA outside [0, 360), Dec "
            f"outside [-90, 90] degrees), first row {i} (id {cat['object_id'][i]!s:.40}, "
            f"ra {cat['ra'][i]}, dec {cat['dec'][i]}): they end in {MISSING} as off_sky")


def _run_rank(rank: int, pending: np.ndarray, cand: P.Candidates, tiles: list[coadd.Tile],
              cat: dict[str, np.ndarray], cfg: CutoutConfig, errors: list[str]
              ) -> tuple[np.ndarray, dict]:
    """Cut every pending row from its tile of ``rank``: one Ray task per tile. Returns the
    catalogue rows written and the failed ones by reason (``edge``, ``masked``,
    ``unreadable``); the unreadable tiles' errors are added to ``errors``."""
    idx = cand.at_rank(rank, pending)
    inside = np.ones(len(idx), bool)
    for t in np.unique(cand.tile[idx]):
        sel = cand.tile[idx] == t
        half = (max(read_half(cfg.pixel_scale, b) for b in tiles[t].bands) if cfg.resample
                else None)
        inside[sel] = P.stamp_inside(cand.x[idx[sel]], cand.y[idx[sel]], tiles[t].shape, half)
    edge, idx = cand.row[idx[~inside]], idx[inside]
    task = ray.remote(num_cpus=1)(cut_tile)
    limit = cfg.tasks or max(1, int(2 * runtime.cluster_cpus()))
    running, results = [], []
    for t in np.unique(cand.tile[idx]):
        sel = idx[cand.tile[idx] == t]
        rows = {k: v[cand.row[sel]] for k, v in cat.items()}
        rows.update(row=cand.row[sel], x=cand.x[sel], y=cand.y[sel])
        if len(running) >= limit:
            ready, running = ray.wait(running, num_returns=1)
            results += _gathered(ready)
        running.append(task.remote(tiles[t], f"part-{t:05d}-r{rank}", rows, cfg))
    results += _gathered(running)
    none = [np.zeros(0, np.int64)]
    written, masked, unreadable = (np.concatenate([r[k] for r in results] or none)
                                   for k in ("written", "masked", "unreadable"))
    errors.extend(e for r in results for e in r["errors"])
    return written, {"edge": edge, "masked": masked, "unreadable": unreadable}


def _gathered(refs: list) -> list[dict]:
    """The tile tasks' results; a task's error is raised as itself (one line for the user),
    not as Ray's wrapper with the worker's traceback."""
    try:
        return ray.get(refs)
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, LensscanError | ValueError | OSError):
            raise cause from None
        raise RuntimeError(f"a cutout task failed: {type(cause).__name__}: "
                           f"{' '.join(str(cause).split())[:300]}") from None


def _write_missing(cfg: CutoutConfig, cat: dict[str, np.ndarray], rows: np.ndarray,
                   reasons: np.ndarray) -> None:
    import pyarrow.parquet as pq

    ids = cat["object_id"][rows]
    table = pa.table({
        "object_id": pa.array(ids.tolist(), pa.string() if ids.dtype.kind == "O" else pa.int64()),
        "ra": pa.array(cat["ra"][rows], pa.float64()),
        "dec": pa.array(cat["dec"][rows], pa.float64()),
        "reason": pa.array(reasons.tolist(), pa.string()),
    })
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    storage.write_bytes_atomic(storage.join(cfg.out, MISSING), sink.getvalue().to_pybytes())


def cutout_survey(cfg: CutoutConfig, progress: bool = True) -> dict:
    """Cut every catalogue object out of the coadd tiles into Parquet shards under ``cfg.out``
    (see the module docstring); returns the summary also written to ``_cutout.json``."""
    t0 = time.time()
    check_options(cfg)
    for key in ("catalog", "images", "out"):  # Ray workers run in other folders
        setattr(cfg, key, storage.absolute(getattr(cfg, key)))
    cat = _catalog(cfg)
    n = len(cat["ra"])
    tiles, partial = coadd.discover_tiles(cfg.images, tuple(cfg.band_names or cfg.bands))
    if not tiles:
        raise FileNotFoundError(f"{cfg.images}: no tile has an image in every band "
                                f"({', '.join(cfg.band_names or cfg.bands)})")
    check_apart(cfg, tiles, partial)
    check_tiles(tiles, cfg)
    storage.ensure_empty(cfg.out, cfg.overwrite)
    # a position that is a number but not a place on the sky (a NaN one is no position)
    bad = ~np.isnan(cat["ra"]) & ~np.isnan(cat["dec"]) & off_sky(cat["ra"], cat["dec"])
    cand = P.candidates(np.where(bad, np.nan, cat["ra"]), np.where(bad, np.nan, cat["dec"]),
                        tiles)
    reason = np.full(n, "", dtype=object)  # the first reason a row failed for
    reason[np.setdiff1d(np.arange(n), cand.row)] = "no_tile"
    reason[bad] = "off_sky"
    done = np.zeros(n, bool)
    runtime.ensure_ray(quiet=not progress)
    pending, rank, errors = np.unique(cand.row), 0, []
    while len(pending):
        written, failed = _run_rank(rank, pending, cand, tiles, cat, cfg, errors)
        done[written] = True
        for why, rows in failed.items():
            reason[rows[reason[rows] == ""]] = why
        rank += 1
        retry = np.concatenate(list(failed.values()))
        pending = np.intersect1d(retry, cand.row[cand.rank == rank])
    missing = np.flatnonzero(~done)
    _write_missing(cfg, cat, missing, reason[missing])
    counts = {"catalog_rows": n, "cutouts": int(done.sum()), "missing": len(missing),
              **{r: int((reason[missing] == r).sum()) for r in REASONS}}
    if counts["cutouts"] + counts["missing"] != n:
        raise RuntimeError(f"cutout lost rows: {counts}")
    summary = {"counts": counts, "tiles": len(tiles), "incomplete_tile_files": partial,
               "off_sky": off_sky_note(cfg.catalog, cat, np.flatnonzero(bad)) if bad.any() else "",
               "unreadable_tiles": sorted(set(errors)),
               "seconds": round(time.time() - t0, 2), "config": cfg.to_dict()}
    storage.write_bytes_atomic(storage.join(cfg.out, SUMMARY),
                               json.dumps(summary, indent=2).encode())
    if not counts["cutouts"]:
        raise NothingReadableError(
            f"{cfg.catalog}: no cutout was written, all {n} rows are in {MISSING} ("
            + ", ".join(f"{r} {counts[r]}" for r in REASONS if counts[r])
            + (f"; first unreadable tile: {summary['unreadable_tiles'][0]}"
               if summary["unreadable_tiles"] else "") + ")")
    return summary
