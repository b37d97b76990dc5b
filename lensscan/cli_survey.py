"""The survey workflow's commands: ``lensscan cutout`` and ``lensscan inject`` (registered by
:func:`lensscan.cli.parser`). Each parses its arguments, builds a config and calls one library
function."""

from __future__ import annotations

import json


def _cutout(a) -> None:
    from lensscan.config import CutoutConfig
    from lensscan.data.cutout import cutout_survey

    cfg = CutoutConfig(catalog=a.catalog, images=a.images, out=a.out, bands=_names(a.bands),
                       band_names=_names(a.band_names) if a.band_names else None,
                       pixel_scale=a.pixel_scale, zeropoint=a.zeropoint, resample=a.resample,
                       id_col=a.id_col, ra_col=a.ra_col, dec_col=a.dec_col,
                       psf_fwhm=_floats(a.psf_fwhm) if a.psf_fwhm else None,
                       shard_size=a.shard_size, tasks=a.tasks, overwrite=a.overwrite)
    summary = cutout_survey(cfg, progress=False)
    print(json.dumps({k: summary[k] for k in ("counts", "tiles", "seconds")}))


def _names(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    if len(names) != 3:
        raise ValueError(f"give three comma-separated bands, not {text!r}")
    return names


def _floats(text: str) -> list[float]:
    return [float(v) for v in _names(text)]


def add_cutout_args(sub) -> None:
    """``lensscan cutout``: cutouts of catalogue objects from coadd images."""
    p = sub.add_parser("cutout", help="cutouts of catalogue objects from coadd images -> shards")
    p.add_argument("catalog", help="CSV, Parquet, FITS or VOTable with object_id, ra, dec")
    p.add_argument("images", help="URL glob of the coadd images with a {band} placeholder")
    p.add_argument("--out", required=True, help="folder of Parquet shards to write")
    p.add_argument("--bands", default="g,r,i", help="output band names, in order")
    p.add_argument("--band-names", help="the bands as the file names spell them (default: "
                   "--bands), e.g. G,R,I")
    p.add_argument("--pixel-scale", type=float, default=0.168,
                   help="the survey's arcsec per pixel; other images are refused")
    p.add_argument("--resample", action="store_true",
                   help="reproject images of another pixel scale (needs reproject)")
    p.add_argument("--zeropoint", type=float, default=27.0,
                   help="AB zero-point of the output fluxes; images whose header gives "
                        "another are scaled to it")
    p.add_argument("--id-col", default="object_id")
    p.add_argument("--ra-col", default="ra")
    p.add_argument("--dec-col", default="dec")
    p.add_argument("--psf-fwhm", metavar="G,R,I",
                   help="PSF FWHM (arcsec) per band for every row, as the psf_fwhm column "
                        "(default: the catalogue's psf_fwhm or psf_fwhm_<band>, if any)")
    p.add_argument("--shard-size", type=int, default=4096, help="rows per shard at most")
    p.add_argument("--tasks", type=int, help="tile tasks in flight (default: 2 per CPU)")
    p.add_argument("--overwrite", action="store_true", help="clear a non-empty --out first")
    p.set_defaults(fn=_cutout)


def _inject(a) -> None:
    from lensscan.config import InjectConfig
    from lensscan.simulate.trainset import inject_survey

    cfg = InjectConfig(survey=a.survey, out=a.out, lenses=a.lenses, negatives=a.negatives,
                       hosts=a.hosts, host_id_col=a.host_id_col,
                       host_negatives=a.host_negatives, false_positives=a.false_positives or [],
                       theta_e_col=a.theta_e_col,
                       psf_fwhm=_floats(a.psf_fwhm) if a.psf_fwhm else None,
                       psf_fwhm_cols=_names(a.psf_fwhm_cols) if a.psf_fwhm_cols else None,
                       psf_family=a.psf_family, gain=_floats(a.gain), poisson=not a.no_poisson,
                       min_arc_snr=a.min_arc_snr, preset=a.preset, seed=a.seed,
                       shard_size=a.shard_size, overwrite=a.overwrite)
    summary = inject_survey(cfg, progress=False)
    print(json.dumps({k: summary[k] for k in ("counts", "seconds")}))


def add_inject_args(sub) -> None:
    """``lensscan inject``: lensed sources painted onto the survey's own galaxies."""
    p = sub.add_parser("inject", help="training set from the survey: lenses painted on real hosts")
    p.add_argument("survey", help="the survey's shards (e.g. the output of lensscan cutout)")
    p.add_argument("--out", required=True, help="folder of training shards to write")
    p.add_argument("--lenses", type=int, required=True, help="lensed sources to paint")
    p.add_argument("--negatives", type=int, required=True, help="survey cutouts as non-lenses")
    p.add_argument("--hosts", metavar="EXPR|CATALOG",
                   help="the hosts: a filter over the survey's columns (\"mag_r < 21 AND "
                        "kind = 'red'\": comparisons, AND, OR, NOT, parentheses) or a "
                        "catalogue of ids (default: every row)")
    p.add_argument("--host-id-col", default="object_id", help="id column of a host catalogue")
    p.add_argument("--host-negatives", type=float, default=0.5,
                   help="share of the negatives drawn from the host pool")
    p.add_argument("--false-positives", action="append", metavar="GRADES_CSV",
                   help="rows graded 'not a lens' join as non-lenses; repeatable")
    p.add_argument("--theta-e-col", help="host column with the Einstein radius (arcsec) "
                   "(default: from the host's brightness)")
    p.add_argument("--psf-fwhm", metavar="G,R,I",
                   help="PSF FWHM (arcsec) per band for rows without a psf_fwhm column")
    p.add_argument("--psf-fwhm-cols", metavar="COL_G,COL_R,COL_I",
                   help="take the PSF FWHM from these columns (e.g. seeing_g,seeing_r,seeing_i)")
    p.add_argument("--psf-family", choices=["moffat", "gaussian"], default="moffat")
    p.add_argument("--gain", default="600,800,1500", metavar="G,R,I",
                   help="electrons per flux unit, for the Poisson noise of the added flux")
    p.add_argument("--no-poisson", action="store_true", help="add the arcs without noise")
    p.add_argument("--min-arc-snr", type=float, default=10.0,
                   help="fainter arcs are brightened to 1-2 times this S/N")
    p.add_argument("--preset", choices=["hsc", "broad"], default="broad",
                   help="the simulator's population of sources and masses")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shard-size", type=int, default=2048, help="rows per output shard, about")
    p.add_argument("--overwrite", action="store_true", help="clear a non-empty --out first")
    p.set_defaults(fn=_inject)


def add_survey_commands(sub) -> None:
    """Register ``cutout`` and ``inject`` on the ``lensscan`` sub-parsers."""
    add_cutout_args(sub)
    add_inject_args(sub)
