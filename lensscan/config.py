"""Configuration dataclasses: every setting defined once, here, with its default and help.

Each field is made by :func:`option`, which stores the help text (and, where the command line
needs them, choices, a metavar or a flag name) in the field's metadata; ``lensscan.cli.options``
generates the options of ``lensscan`` and of ``jobs/`` from it.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

#: Side in pixels of the centre crop of a cutout that the models see: the default of
#: :attr:`lensscan.data.preprocess.Preprocessing.crop`, and of a card that does not say.
DEFAULT_CROP = 48

#: ``lensscan score --engine auto`` scores surveys of at most this many rows in its own process
#: (no Ray) when no Ray cluster is running: a first unit committed in seconds, not after Ray and
#: its actors have started.
LOCAL_MAX_ROWS = 50_000

#: AB zero-points outside this range are no survey's (HSC 27, nJy 31.4, DES 30): a header
#: error, which would scale every stamp to nothing or to overflow
ZEROPOINT_RANGE = (10.0, 45.0)

#: The most rows one command makes (simulate, inject): 10^8 cutouts are 5 TB of float32
#: pixels; a larger count is a typo, which would fill memory with its job list
MAX_ROWS = 10**8

#: How shards can store their pixels: float32, or float16 (half the bytes: 24 KiB a cutout)
PIXEL_TYPES = ("float32", "float16")


def option(default: Any = MISSING, help: str = "", *, choices: list[str] | None = None,
           metavar: str | tuple[str, ...] | None = None, flag: str | None = None,
           per_band: bool = False, exclusive: str | None = None, cli: bool = True,
           low: float | None = None, high: float | None = None,
           above: float | None = None, below: float | None = None) -> Any:
    """A dataclass field with its default and what its command-line option shows.

    ``help`` describes the option as typed: for a boolean that defaults to True, its
    ``--no-NAME`` flag. ``flag`` replaces the ``--NAME`` derived from the field's name;
    ``per_band``: a list written as one comma-separated value per band (``g,r,i``);
    ``exclusive``: options with the same group name cannot be given together; ``cli=False``: a
    setting of the library only (no option). ``low``/``high`` (inclusive) and ``above``/
    ``below`` (exclusive) bound a number: the option refuses others, and so does
    :func:`check_bounds` for the Python API. No ``default``: the field is
    required. A list or dict default is copied for every instance."""
    meta = {"help": help, "choices": choices, "metavar": metavar, "flag": flag,
            "per_band": per_band, "exclusive": exclusive, "cli": cli, "low": low,
            "high": high, "above": above, "below": below}
    meta = {k: v for k, v in meta.items() if v is not None and v is not False} | {"cli": cli}
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


BOUNDS = ("low", "high", "above", "below")


def out_of_bounds(value: float, bounds: Mapping[str, float]) -> str | None:
    """Why a number breaks ``bounds`` (:data:`BOUNDS`: ``low``/``high`` inclusive,
    ``above``/``below`` exclusive; a float must be finite), or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number"
    low, high, above, below = (bounds.get(k) for k in BOUNDS)
    if low is not None and value < low:
        return f"must be {_shown(low)} or more"
    if above is not None and value <= above:
        return f"must be more than {_shown(above)}"
    if high is not None and value > high:
        return f"must be {_shown(high)} or less"
    if below is not None and value >= below:
        return f"must be less than {_shown(below)}"
    return None


def _shown(bound: float) -> str:
    """A bound as a person writes it: 100,000,000 rather than 1e+08."""
    return f"{int(bound):,}" if float(bound).is_integer() and abs(bound) >= 1e5 else f"{bound:g}"


def check_bounds(obj: Any) -> None:
    """Refuse a number of a config dataclass outside its field's bounds, in one line naming
    the option: the command line refuses them as typed, the Python API here."""
    for f in fields(obj):
        value = getattr(obj, f.name)
        for v in value if isinstance(value, list | tuple) else [value]:  # per band: each
            if isinstance(v, bool) or not isinstance(v, numbers.Real):
                continue
            why = out_of_bounds(v if isinstance(v, numbers.Integral) else float(v), f.metadata)
            if why:
                raise ValueError(f"{option_flag(f)}: {why}, not {v!r}")


def option_flag(f: Any) -> str:
    """The command-line flag of a config field (``--NAME``, or the field's own ``flag``)."""
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def _from_dict(cls, d: dict[str, Any]):
    names = {f.name for f in fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
    return cls(**d)


#: Characters that make a path a glob (fsspec's and DuckDB's).
GLOB_CHARS = frozenset("*?[")

@dataclass
class TrainConfig:
    """One member's training run (``lensscan train``)."""

    data: str = option(help="URL of training shards (labelled)")
    out: str = option(help="URL of the model folder to write")
    val: str | None = option(None, "URL of validation shards (default: a tenth of the training "
                             "data, by object_id hash)")
    arch: str = option("resnet", "architecture name (lensscan.models.list_models())")
    arch_kwargs: dict[str, Any] = option({}, "passed to create_model", cli=False)
    name: str | None = option(None, "member name (default: architecture and seed, e.g. "
                              "resnet_s0)")
    epochs: int = option(12, "maximum epochs", low=1)
    steps_per_epoch: int | None = option(None, "training steps per epoch (default: one pass over "
                                         "the training rows)", low=1)
    batch_size: int = option(128, "cutouts per batch, per worker (a lens and a non-lens at "
                             "least)", low=2)
    lr: float = option(2e-3, "AdamW peak learning rate (one-cycle schedule)", above=0)
    lr_batch: int | None = option(None, "the batch size --lr is tuned for: the peak learning rate "
                                  "is scaled by sqrt(batch-size x workers / B) (larger GPU "
                                  "batches, e.g. --batch-size 512 --lr-batch 128)", metavar="B",
                                  low=1)
    weight_decay: float = option(5e-4, "AdamW weight decay", low=0)
    loss: str = option("focal", "focal loss or class-weighted binary cross-entropy",
                       choices=["focal", "bce"])
    focal_gamma: float = option(2.0, "focusing parameter of the focal loss", low=0)
    lens_fraction: float = option(0.3, "share of lenses in every batch (balanced sampling)",
                                  above=0, below=1)
    patience: int = option(4, "stop after this many epochs without a better validation AUC "
                           "(counted from the schedule's second half)", low=0)
    seed: int = option(0, "seeds weights, sampling and augmentation", low=0)
    workers: int = option(1, "Ray Train workers (DDP)", low=1)
    gpu: bool = option(False, "one GPU per worker")
    cpus_per_worker: float = option(1.0, "CPUs reserved per worker", above=0)
    torch_threads: int | None = option(None, "intra-op threads per worker (default: "
                                       "--cpus-per-worker)", low=1)
    storage: str | None = option(None, "checkpoint root URL (default: OUT/_train)")
    max_rows: int | None = option(None, "cap training rows (quick runs and tests)", low=1)
    prior_ratio: float = option(100.0, "non-lenses per lens where the model will run", above=0)
    augment: dict[str, Any] = option({}, "an augmentation setting of lensscan.data.augment."
                                     "Augment, e.g. noise_jitter=1.0 or d4=false (the rest keep "
                                     "their defaults); repeatable", metavar="NAME=VALUE")
    preprocessing: dict[str, Any] = option({}, "lensscan.data.preprocess.Preprocessing's settings",
                                           cli=False)
    init: str | None = option(None, "start from this trained member's weights (fine-tuning, "
                              "fresh schedule); 'default' or an ensemble: its member of the same "
                              "architecture", metavar="MODEL")
    precision: str = option("auto", "bf16: bfloat16 autocast; fp32: full precision; auto "
                            "(default): bf16 where the device computes it natively (GPUs, CPUs "
                            "with AVX-512 BF16 or AMX), else fp32",
                            choices=["auto", "bf16", "fp32"])
    exclude: list[str] = option([], "leave rows with this column value out of training and "
                                "validation (e.g. psf_family=gaussian to hold a rendering family "
                                "out); repeatable", metavar="COLUMN=VALUE")
    labels: list[str] = option([], "graders' CSVs (object_id,grade[,grader,time,score]): train on "
                               "the graded rows of the training data with A/B -> lens, 'not a "
                               "lens' -> non-lens (grades of several CSVs averaged; "
                               "lensscan.data.grades); repeatable", metavar="GRADES_CSV")
    grade_c: str = option("drop", "objects graded C on average (mean grade 0.5-1.5): left out "
                          "(default), lens or non-lens", choices=["drop", "lens", "nonlens"])
    keep_labels: bool = option(False, "with --labels: rows nobody graded keep their own label "
                               "column (e.g. lensscan inject's lenses and negatives) instead of "
                               "being left out; a grade overrides a row's label")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        return _from_dict(cls, d)

    @property
    def member_name(self) -> str:
        return self.name or f"{self.arch}_s{self.seed}"


@dataclass
class ScoreConfig:
    """A scoring run (``lensscan score`` and ``jobs/score_survey.py``)."""

    input: str = option(help="URL of the cutout shards (folder, glob or file)")
    output: str = option(help="URL of the output folder")
    model: str = option("default", "model folder URL or 'default' (the bundled ensemble)")
    threshold: float | None = option(None, "candidate score cut (default: model's)",
                                     exclusive="cut")
    top: int | None = option(None, "keep the N best as candidates", exclusive="cut")
    batch_size: int | None = option(None, "cutouts per model call (default: 512 on CPU, 8192 on "
                                    "a GPU)")
    rows_per_unit: int = option(2048, "rows per work unit, the commit granularity")
    actors: int | None = option(None, "scoring actors (default: one per GPU, else one per CPU, "
                                "at most 8)", low=1)
    gpus_per_actor: float | None = option(None, "GPUs per scoring actor (default: 1 when the "
                                          "cluster has GPUs, else 0)", low=0)
    cpus_per_actor: float | None = option(None, "CPUs per scoring actor (default: sized from "
                                          "the cluster)", above=0)
    torch_threads: int | None = option(None, "intra-op threads per CPU actor (default: its CPUs)",
                                       low=1)
    read_tasks: int | None = option(None, "concurrent read/preprocess tasks (default: 4 per CPU "
                                    "the actors leave)", low=1)
    object_store_mb: float | None = option(None, "object-store memory for blocks in flight "
                                           "(default: sized from the read tasks, actors and "
                                           "block size)", above=0)
    overwrite: bool = option(False, "the output holds another run (other input, model, cut or "
                             "prior): clear it and score anew instead of refusing")
    tta: bool = option(False, "test-time augmentation: average every member over the 8 flips and "
                       "rotations of each cutout (8x the model's cost)")
    precision: str = option("auto", "autocast of the model: auto is fp16 on GPUs and fp32 on CPU",
                            choices=["auto", "fp32", "fp16", "bf16"])
    compile: bool = option(False, "torch.compile the ensemble on GPU actors (compiled once per "
                           "node and cached; pays on long runs, when the GPU is the bottleneck)")
    prior: float | None = option(None, "prevalence of lenses (e.g. 1e-4) that p_lens is "
                                 "calibrated to (default: the model card's calibration prior); "
                                 "refused for a model without calibration", metavar="P")
    progress: bool = option(True, "print no progress while running", flag="--no-progress")
    engine: str = option("auto", "where the model runs: ray (Ray Data read tasks and actors, on "
                         "a cluster or a local Ray), local (this process: a reader thread and "
                         f"the model, no Ray) or auto (local with at most {LOCAL_MAX_ROWS:,} "
                         "rows left to score when no Ray cluster is running and no actor "
                         "option is given, else ray)", choices=["auto", "ray", "local"])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CutoutConfig:
    """Cutouts of catalogue objects from coadd images (``lensscan cutout``)."""

    catalog: str = option(help="URL of the catalogue: CSV, Parquet, FITS or VOTable with "
                          "object_id, ra, dec")
    images: str = option(help="URL glob of the coadd images with a {band} placeholder")
    out: str = option(help="folder of Parquet shards to write")
    bands: list[str] = option(["g", "r", "i"], "output band names, in order", per_band=True)
    band_names: list[str] | None = option(None, "the bands as the file names spell them "
                                          "(default: --bands), e.g. G,R,I", per_band=True)
    pixel_scale: float = option(0.168, "the survey's arcsec per pixel (HSC's by default); other "
                                "images are refused", above=0)
    scale_tolerance: float = option(0.005, "relative pixel-scale mismatch accepted without "
                                    "--resample", low=0)
    zeropoint: float = option(27.0, "AB zero-point of the output fluxes; images whose header "
                              "gives another are scaled to it (those that give none are taken "
                              "to be at it already)", low=ZEROPOINT_RANGE[0],
                              high=ZEROPOINT_RANGE[1])
    resample: bool = option(False, "reproject images of another pixel scale onto a "
                            "--pixel-scale TAN grid (needs reproject)")
    id_col: str = option("object_id", "the catalogue's object id column (case-insensitive)")
    ra_col: str = option("ra", "the catalogue's RA column (case-insensitive)")
    dec_col: str = option("dec", "the catalogue's Dec column (case-insensitive)")
    psf_fwhm: list[float] | None = option(None, "PSF FWHM (arcsec) per band for every row, as "
                                          "the psf_fwhm column (default: the catalogue's "
                                          "psf_fwhm or psf_fwhm_<band>, if any)",
                                          metavar="G,R,I", per_band=True, above=0, high=60)
    shard_size: int = option(4096, "rows per shard at most", low=1)
    pixels: str = option("float32", "how the shards store pixels: float16 halves the bytes "
                         "(24 KiB a cutout; what GPU clusters should read), float32 keeps "
                         "every bit", choices=list(PIXEL_TYPES))
    tasks: int | None = option(None, "tile tasks in flight (default: 2 per CPU)", low=1)
    overwrite: bool = option(False, "clear a non-empty --out first")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class InjectConfig:
    """Training data from a survey: lensed sources painted onto real hosts (``lensscan inject``).

    The Einstein radius of a host follows its brightness: ``log10 theta_E = log10 theta_e_ref
    - 0.4 theta_e_slope (m_r - host_mag_ref) + N(0, theta_e_scatter)`` arcsec, clipped to
    ``theta_e_range``, where ``m_r`` is the host's r magnitude inside ``aperture`` (background
    from the cutout's border). The slope 0.5 is Faber-Jackson (L ~ sigma^4) with an isothermal
    mass (theta_E ~ sigma^2); a 1" lens has m_r ~ 21 inside 2" (the simulator's deflectors)."""

    survey: str = option(help="the survey's shards, where hosts and negatives come from (e.g. "
                         "the output of lensscan cutout)")
    out: str = option(help="folder of training shards to write")
    lenses: int = option(help="lensed sources to paint (hosts are reused when fewer match)",
                         low=0, high=MAX_ROWS)
    negatives: int = option(help="survey cutouts (not hosts) as non-lenses", low=0,
                            high=MAX_ROWS)
    hosts: str | None = option(None, "the hosts: a filter over the survey's columns (\"mag_r < 21 "
                               "AND kind = 'red'\": comparisons, AND, OR, NOT, parentheses) or a "
                               "catalogue of ids, CSV/Parquet/FITS/VOTable (default: every row)",
                               metavar="EXPR|CATALOG")
    host_id_col: str = option("object_id", "id column of a host catalogue")
    host_negatives: float = option(0.5, "share of the negatives drawn from the host pool (the "
                                   "rest from the whole survey), so that a host's looks alone do "
                                   "not tell lenses apart", low=0, high=1)
    false_positives: list[str] = option([], "rows graded 'not a lens' join as non-lenses; "
                                        "repeatable", metavar="GRADES_CSV")
    theta_e_col: str | None = option(None, "host column with the Einstein radius (arcsec) "
                                     "(default: from the host's brightness)")
    theta_e_ref: float = option(1.0, "Einstein radius (arcsec) of a host as bright as "
                                "--host-mag-ref", above=0)
    host_mag_ref: float = option(21.0, "r magnitude inside the aperture of a 1\" lens", low=0,
                                 high=40)
    theta_e_slope: float = option(0.5, "theta_E ~ L^slope", low=0, high=2)
    theta_e_scatter: float = option(0.15, "scatter (dex) of the Einstein radius at a given "
                                    "brightness", low=0, high=1)
    theta_e_range: tuple[float, float] = option((0.5, 3.0), "Einstein radii (arcsec) are clipped "
                                                "to this range", metavar=("MIN", "MAX"))
    aperture: float = option(2.0, "arcsec radius of the host's aperture magnitude", above=0)
    psf_fwhm: list[float] | None = option(None, "PSF FWHM (arcsec) per band for rows without a "
                                          "psf_fwhm column", metavar="G,R,I", per_band=True,
                                          above=0, high=60)
    psf_fwhm_cols: list[str] | None = option(None, "take the PSF FWHM from these columns (e.g. "
                                             "seeing_g,seeing_r,seeing_i)",
                                             metavar="COL_G,COL_R,COL_I", per_band=True)
    psf_family: str = option("moffat", "profile of the PSF the arcs are convolved with",
                             choices=["moffat", "gaussian"])
    psf_beta: float = option(3.0, "Moffat slope", above=1)
    gain: list[float] = option([600.0, 800.0, 1500.0], "electrons per flux unit at zero-point "
                               "27 (converted to the survey's), for the Poisson noise of the "
                               "added flux (default: the simulator's HSC coadd values)",
                               metavar="G,R,I", per_band=True)
    poisson: bool = option(True, "add the arcs without noise (for checks)", flag="--no-poisson")
    min_arc_snr: float = option(10.0, "fainter arcs are brightened to 1-2 times this S/N",
                                low=0)
    paint_floor: float = option(1e-3, "pixels where the arc adds less than this times the sky "
                                "noise are left untouched", low=0)
    preset: str = option("broad", "the simulator's population of sources and masses",
                         choices=["hsc", "broad"])
    supersample: int = option(2, "sub-pixels per pixel side where the source is ray-traced", low=1,
                              high=16)
    seed: int = option(0, "injection k uses default_rng([seed, k])", low=0)
    shard_size: int = option(2048, "rows per output shard, about", low=1)
    overwrite: bool = option(False, "clear a non-empty --out first")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
