"""``lensscan inject``: a training set made from the survey itself.

Launch::

    lensscan inject s3://survey/cutouts/ --out s3://survey/trainset/ --lenses 20000 \
        --negatives 200000 --hosts "mag_r < 21.5 AND g_r > 1.0" --false-positives grades.csv

Lenses are survey cutouts (hosts) with a lensed source painted on (:mod:`.inject`), label 1;
negatives are other survey cutouts, label 0 (at a lens prevalence near 1e-4 they are clean),
``host_negatives`` of them drawn from the host pool so that a host's looks alone never tell the
classes apart, plus every row that graders called "not a lens" (``--false-positives``). Hosts are
reused (each with new sources) only when fewer match than lenses are asked for. The driver reads
only ids and the filter's columns; Ray tasks, one per group of input shards, read the chosen rows,
paint and write one shard each. Lens ``k`` uses ``default_rng([seed, k])``: the same seed gives
the same training set whatever the grouping.
"""

from __future__ import annotations

import json
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import ray

from lensscan import runtime
from lensscan.config import InjectConfig, check_bounds
from lensscan.data.grades import graded
from lensscan.data.select import columns as filter_columns
from lensscan.data.select import parse, select
from lensscan.io import storage
from lensscan.io.catalogs import FORMATS, column, read_table
from lensscan.io.parquet import DEFAULT_BANDS, flux_metadata, write_parquet
from lensscan.io.rows import read_columns, read_rows, survey_meta
from lensscan.simulate.inject import SIZE, paint
from lensscan.simulate.population import preset

SUMMARY = "_inject.json"
LENS, NEGATIVE, FALSE_POSITIVE = 1, 0, 2
ORIGIN = {LENS: "injected", NEGATIVE: "survey", FALSE_POSITIVE: "false_positive"}
LENSES_PER_TASK = 32  # a task paints at most this many lenses (about 10 s of work)
MAX_PSF_FWHM = 10.0  # arcsec: a larger "FWHM" is a fill value or a unit error, not a PSF
TRUTH = ("theta_e", "source_mag_r", "magnification", "n_images", "arc_snr", "host_mag_r")


def is_catalog(hosts: str) -> bool:
    """True when ``--hosts`` names a catalogue file rather than a filter expression."""
    low = hosts.strip().lower()
    return any(low.endswith(s) for s in FORMATS) and " " not in hosts.strip()


def survey_index(cfg: InjectConfig, shards: list[str]) -> dict[str, np.ndarray]:
    """Ids (as text), shard number, row and the columns the filter and the Einstein radius need,
    for every row of the survey (read in threads, no pixels)."""
    cols = set()
    if cfg.hosts and not is_catalog(cfg.hosts):
        cols |= filter_columns(parse(cfg.hosts))
    if cfg.theta_e_col:
        cols.add(cfg.theta_e_col)
    cols |= set(cfg.psf_fwhm_cols or ())
    with ThreadPoolExecutor(max(1, min(8, len(shards)))) as pool:
        parts = list(pool.map(lambda u: read_columns(u, sorted(cols)), shards))
    index = {c: np.concatenate([p[c] for p in parts]) for c in parts[0]}
    for c in cfg.psf_fwhm_cols or ():  # checked here: the workers would fail one by one
        if np.asarray(index[c]).dtype.kind not in "iuf":
            raise ValueError(f"{cfg.survey}: --psf-fwhm-cols: column {c!r} holds "
                             f"{np.asarray(index[c]).dtype.name} values, not FWHMs in arcsec")
    index["id_text"] = index["object_id"].astype(str).astype(object)
    if not len(index["id_text"]):
        raise ValueError(f"{cfg.survey}: the survey has no rows")
    repeated = len(index["id_text"]) - len(np.unique(index["id_text"].astype(str)))
    if repeated:  # a cutout listed twice can be a host and a negative at once
        warnings.warn(f"{cfg.survey}: {repeated} rows repeat an earlier row's object id; each "
                      "is drawn as a row of its own", stacklevel=2)
    index["shard"] = np.concatenate([np.full(len(p["object_id"]), s) for s, p in
                                     enumerate(parts)])
    index["row"] = np.concatenate([np.arange(len(p["object_id"])) for p in parts])
    return index


def host_mask(cfg: InjectConfig, index: dict[str, np.ndarray]) -> np.ndarray:
    """Rows that may be hosts: all, those passing the filter, or those in the catalogue."""
    if not cfg.hosts:
        return np.ones(len(index["row"]), bool)
    if is_catalog(cfg.hosts):
        # ids read as text, as typed: 00123 stays 00123
        table = read_table(cfg.hosts, text=cfg.host_id_col.lower())
        ids = np.asarray(column(cfg.hosts, table, cfg.host_id_col)).astype(str)
        known = np.isin(ids, index["id_text"].astype(str))
        if not known.all():
            warnings.warn(f"{cfg.hosts}: {int((~known).sum())} of its {len(ids)} ids are not in "
                          f"the survey (first: {ids[~known][0][:80]!r}); they host nothing",
                          stacklevel=2)
        return np.isin(index["id_text"].astype(str), ids)
    return select(cfg.hosts, index)


def choose(cfg: InjectConfig, index: dict[str, np.ndarray], hosts: np.ndarray,
           false_pos: np.ndarray, graded_lens: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The jobs: ``kind`` (LENS, NEGATIVE, FALSE_POSITIVE), ``at`` (index row) and ``k`` (the
    lens number, -1 otherwise), drawn with the seed. Rows graded lenses or maybe-lenses
    (``graded_lens``) are neither hosts nor negatives."""
    rng = np.random.default_rng([cfg.seed, 2**32 - 1])
    taken = false_pos if graded_lens is None else false_pos | graded_lens  # no host, no negative
    pool = np.flatnonzero(hosts & ~taken)
    if cfg.lenses and not len(pool):
        raise ValueError(f"no survey row passes --hosts {cfg.hosts!r}" if cfg.hosts else
                         f"no survey row can host a lens: all {len(hosts)} are graded")
    reps = -(-cfg.lenses // max(1, len(pool)))
    lens_at = np.concatenate([rng.permutation(pool) for _ in range(reps)] or
                             [np.zeros(0, np.int64)])[:cfg.lenses]
    free = ~taken
    free[lens_at] = False
    from_hosts = np.flatnonzero(free & hosts)
    n_h = min(round(cfg.host_negatives * cfg.negatives), len(from_hosts))
    neg_h = rng.choice(from_hosts, n_h, replace=False)
    free[neg_h] = False
    rest = np.flatnonzero(free)
    if cfg.negatives - n_h > len(rest):
        raise ValueError(f"the survey has {len(rest) + n_h} rows left for {cfg.negatives} "
                         "negatives after the hosts")
    neg = np.concatenate([neg_h, rng.choice(rest, cfg.negatives - n_h, replace=False)])
    fp = np.flatnonzero(false_pos)
    kind = np.concatenate([np.full(len(lens_at), LENS), np.full(len(neg), NEGATIVE),
                           np.full(len(fp), FALSE_POSITIVE)])
    k = np.concatenate([np.arange(len(lens_at)), np.full(len(neg) + len(fp), -1)])
    return {"kind": kind, "at": np.concatenate([lens_at, neg, fp]).astype(np.int64), "k": k}


def _psf(batch: dict[str, np.ndarray], j: int, cfg: InjectConfig) -> np.ndarray | None:
    """The row's PSF FWHM per band (arcsec): its columns, else ``psf_fwhm``, else the default."""
    if cfg.psf_fwhm_cols:
        psf = np.array([batch[c][j] for c in cfg.psf_fwhm_cols], float)
        if _usable(psf):  # a fill value (-99, 0, NaN) falls back to the next source
            return psf
    if "psf_fwhm" in batch and _usable(np.asarray(batch["psf_fwhm"][j], float)):
        return np.asarray(batch["psf_fwhm"][j], float)
    return None if cfg.psf_fwhm is None else np.asarray(cfg.psf_fwhm, float)


def _usable(psf: np.ndarray) -> bool:
    """A PSF FWHM per band that can be drawn: finite, positive, under 10 arcsec."""
    return bool(np.isfinite(psf).all() and (psf > 0).all() and (psf < MAX_PSF_FWHM).all())


def _row(jobs: dict, i: int, batch: dict, j: int, cfg: InjectConfig, pop,
         meta: tuple) -> tuple[np.ndarray, dict] | None:
    """One output row (image, columns), or None when the survey row cannot be used."""
    if batch["status"][j] != "ok":
        return None
    host_id, kind = str(batch["object_id"][j]), int(jobs["kind"][i])
    psf = _psf(batch, j, cfg)
    rec = {"object_id": host_id, "ra": batch["ra"][j], "dec": batch["dec"][j],
           "label": int(kind == LENS), "host_id": host_id, "injected": int(kind == LENS),
           "origin": ORIGIN[kind], **dict.fromkeys(TRUTH, np.nan),
           "source_family": "none", "mass_family": "none",
           "psf_fwhm": psf if psf is not None else np.full(3, np.nan)}
    if kind != LENS:
        return batch["image"][j], rec
    offset = tuple(float(batch[c][j]) if c in batch else 0.0 for c in ("offset_x", "offset_y"))
    if psf is None or not all(np.isfinite(o) and abs(o) < SIZE / 4 for o in offset):
        return None  # no PSF, or no host near the centre to lens: a bad host, counted
    rng = np.random.default_rng([cfg.seed, int(jobs["k"][i])])
    painted = paint(batch["image"][j], offset, psf, rng, cfg, pop, meta[1], meta[2],
                    theta_e=float(jobs["theta_e"][i]))
    if not painted.truth["n_images"] or not painted.truth["arc_snr"] > 0:
        return None  # nothing painted onto the cutout: not a lens to train on
    rec.update({k: v for k, v in painted.truth.items() if k in rec},
               object_id=f"inj{int(jobs['k'][i]):07d}-{host_id}")
    return painted.image, rec


def make_part(name: str, jobs: dict[str, np.ndarray], urls: list[str], cfg: InjectConfig,
              meta: tuple) -> dict[str, int]:
    """Ray task: the rows of ``jobs`` (``kind``, ``k``, ``shard``, ``row``, ``theta_e``) read,
    painted where they are lenses, shuffled and written as ``<out>/<name>.parquet``.
    ``meta`` is (bands, pixel scale, zero-point)."""
    pop = preset(cfg.preset)[1]
    images, recs, bad = [], [], {LENS: 0, NEGATIVE: 0, FALSE_POSITIVE: 0}
    for s in np.unique(jobs["shard"]):
        sel = np.flatnonzero(jobs["shard"] == s)
        batch = read_rows(urls[s], jobs["row"][sel])
        for j, i in enumerate(sel):
            out = _row(jobs, i, batch, j, cfg, pop, meta)
            if out is None:
                bad[int(jobs["kind"][i])] += 1
                continue
            images.append(out[0])
            recs.append(out[1])
    if recs:
        order = np.random.default_rng([cfg.seed, 2**32 - 2, int(name.split("-")[-1])]
                                      ).permutation(len(recs))
        batch = {c: np.asarray([recs[i][c] for i in order],
                               dtype=object if isinstance(recs[0][c], str) else None)
                 for c in recs[0]}
        for c in (*TRUTH, "psf_fwhm"):
            batch[c] = batch[c].astype(np.float32)
        batch["injected"] = batch["injected"].astype(np.int8)
        batch["image"] = np.stack([images[i] for i in order]).astype(np.float32)
        write_parquet(storage.join(cfg.out, f"{name}.parquet"), batch, meta[0],
                      metadata=flux_metadata(meta[1], meta[2]))
    written = [r["origin"] for r in recs]
    return {"lenses": written.count(ORIGIN[LENS]), "rows": len(recs),
            "negatives": written.count(ORIGIN[NEGATIVE]),
            "false_positives": written.count(ORIGIN[FALSE_POSITIVE]),
            "bad_hosts": bad[LENS], "bad_negatives": bad[NEGATIVE] + bad[FALSE_POSITIVE]}


def _groups(jobs: dict[str, np.ndarray], size: int,
            lenses_per_task: int = LENSES_PER_TASK) -> list[np.ndarray]:
    """Job indices in survey order, cut into tasks of at most ``size`` rows and
    ``lenses_per_task`` lenses (painting costs far more than copying a negative)."""
    order = np.lexsort((jobs["row"], jobs["shard"]))
    lens_count = np.cumsum(jobs["kind"][order] == LENS)
    groups, first = [], 0
    for i in range(len(order)):
        done_lenses = lens_count[i] - (lens_count[first - 1] if first else 0)
        if i + 1 - first >= size or done_lenses >= lenses_per_task or i == len(order) - 1:
            groups.append(order[first:i + 1])
            first = i + 1
    return groups


def _false_positives(cfg: InjectConfig, index: dict[str, np.ndarray]
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Rows graded "not a lens", rows graded lenses (A/B) and rows whose grades are C-like
    (left out of training, so neither hosts nor negatives), combined over the CSVs; and how
    many distinct "not a lens" ids the survey lacks."""
    none = np.zeros(len(index["row"]), bool)
    if not cfg.false_positives:
        return none, none, none, 0
    combined, _ = graded(cfg.false_positives)
    ids = index["id_text"].astype(str)

    def rows_of(label: int) -> np.ndarray:
        return np.isin(ids, combined.object_id[combined.label == label].astype(str))

    not_lens = combined.object_id[combined.label == 0].astype(str)
    missing = len(np.setdiff1d(not_lens, ids))
    return rows_of(0), rows_of(1), rows_of(-1), missing


def _check_psf(cfg: InjectConfig, info) -> None:
    """Refuse a run whose lenses would have no PSF, before any work."""
    columns = info.columns if info is not None else ()
    if cfg.psf_fwhm_cols:
        if len(cfg.psf_fwhm_cols) != 3 or not set(cfg.psf_fwhm_cols) <= set(columns):
            raise ValueError(f"{cfg.survey}: --psf-fwhm-cols {','.join(cfg.psf_fwhm_cols)} "
                             f"are not three columns of the survey ({', '.join(columns)})")
    elif cfg.lenses and cfg.psf_fwhm is None and "psf_fwhm" not in columns:
        raise ValueError(f"{cfg.survey}: no psf_fwhm column: give --psf-fwhm G,R,I or "
                         "--psf-fwhm-cols")


def _theta_e(cfg: InjectConfig, index: dict[str, np.ndarray], jobs: dict[str, np.ndarray],
             pixel_scale: float) -> np.ndarray:
    """Each job's Einstein radius from ``--theta-e-col`` (NaN: from the host's brightness);
    a lens whose value is not a radius on the cutout is refused, naming its row."""
    if not cfg.theta_e_col:
        return np.full(len(jobs["at"]), np.nan)
    try:
        theta = np.asarray(index[cfg.theta_e_col][jobs["at"]], dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"{cfg.survey}: --theta-e-col {cfg.theta_e_col} must hold numbers "
                         "(arcsec)") from None
    half = SIZE / 2 * pixel_scale
    bad = (jobs["kind"] == LENS) & ~np.isnan(theta) & ~((theta > 0) & (theta <= half))
    if bad.any():
        at = jobs["at"][np.argmax(bad)]
        raise ValueError(f"{cfg.survey}: object {index['id_text'][at]} (shard {index['shard'][at]}"
                         f", row {index['row'][at]}): {cfg.theta_e_col} = "
                         f"{theta[np.argmax(bad)]:g} is not an Einstein radius in (0, {half:.2f}]"
                         " arcsec (half the cutout)")
    return theta


def _check_options(cfg: InjectConfig) -> None:
    """Refuse per-band and range options that cannot paint an arc, before any work."""
    if not 0 <= cfg.host_negatives <= 1:
        raise ValueError(f"--host-negatives {cfg.host_negatives:g}: give a share in [0, 1]")
    lo, hi = cfg.theta_e_range
    if not (np.isfinite([lo, hi]).all() and 0 < lo <= hi):
        raise ValueError(f"--theta-e-range {lo:g} {hi:g}: give 0 < MIN <= MAX (arcsec)")
    for name, values in (("--gain", cfg.gain), ("--psf-fwhm", cfg.psf_fwhm)):
        if values is not None and not (np.isfinite(values).all() and
                                       (np.asarray(values, float) > 0).all()):
            raise ValueError(f"{name} {','.join(f'{v:g}' for v in values)}: give positive "
                             "numbers, one per band")


def inject_survey(cfg: InjectConfig, progress: bool = True) -> dict:
    """Write the training set (see the module docstring); returns the summary also written to
    ``_inject.json``."""
    t0 = time.time()
    if cfg.lenses < 0 or cfg.negatives < 0 or cfg.lenses + cfg.negatives == 0:
        raise ValueError(f"--lenses {cfg.lenses} --negatives {cfg.negatives}: give counts of 0 "
                         "or more, not both 0")
    check_bounds(cfg)  # as the command line's options do (NaN reached the workers)
    for key in ("survey", "out"):  # Ray workers run in other folders
        setattr(cfg, key, storage.absolute(getattr(cfg, key)))
    if storage.inside(cfg.survey, cfg.out):
        raise ValueError(f"{cfg.survey}: the survey lies inside --out {cfg.out}, which the run "
                         "clears; write the training set elsewhere")
    if storage.inside(cfg.out, cfg.survey):
        raise ValueError(f"--out {cfg.out}: it lies inside the survey {cfg.survey}, whose shards "
                         "the next run would read as survey rows; write it elsewhere")
    shards = storage.list_shards(cfg.survey)
    info = survey_meta(cfg.survey)
    meta = ((info.bands, info.pixel_scale, info.zeropoint) if info else (DEFAULT_BANDS, 0.168,
                                                                         27.0))
    _check_options(cfg)
    _check_psf(cfg, info)
    index = survey_index(cfg, shards)
    false_pos, graded_lens, graded_c, fp_unknown = _false_positives(cfg, index)
    hosts = host_mask(cfg, index)
    jobs = choose(cfg, index, hosts, false_pos, graded_lens | graded_c)
    jobs.update(shard=index["shard"][jobs["at"]], row=index["row"][jobs["at"]])
    jobs["theta_e"] = _theta_e(cfg, index, jobs, meta[1])
    storage.ensure_empty(cfg.out, cfg.overwrite)
    runtime.ensure_ray(quiet=not progress)
    task = ray.remote(num_cpus=1)(make_part)
    refs = [task.remote(f"part-{g:05d}", {k: v[sel] for k, v in jobs.items()}, shards, cfg, meta)
            for g, sel in enumerate(_groups(jobs, cfg.shard_size))]
    counts: dict[str, int] = {}
    for result in ray.get(refs):
        for k, v in result.items():
            counts[k] = counts.get(k, 0) + v
    if cfg.lenses and not counts.get("lenses"):
        raise ValueError(f"{cfg.survey}: no lens could be painted ({counts.get('bad_hosts', 0)} "
                         "hosts unusable: a status other than ok, no usable PSF, off-centre, or "
                         "no arc on the cutout)")
    if not counts.get("rows"):
        raise ValueError(f"{cfg.survey}: no row could be written ({counts.get('bad_hosts', 0)} "
                         f"hosts and {counts.get('bad_negatives', 0)} negatives unusable: a "
                         "status other than ok, or hosts without a PSF or off-centre)")
    counts.update(lenses_asked=cfg.lenses, negatives_asked=cfg.negatives,
                  false_positives_not_in_survey=fp_unknown, host_pool=int(hosts.sum()),
                  graded_lenses_kept_out=int(graded_lens.sum()),
                  graded_uncertain_kept_out=int(graded_c.sum()),
                  distinct_hosts=len(np.unique(jobs["at"][jobs["kind"] == LENS])))
    summary = {"counts": counts, "seconds": round(time.time() - t0, 2), "config": cfg.to_dict()}
    storage.write_bytes_atomic(storage.join(cfg.out, SUMMARY),
                               json.dumps(summary, indent=2, default=str).encode())
    return summary
