"""Configuration dataclasses: every default documented once, here."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

#: Side in pixels of the centre crop of a cutout that the models see: the default of
#: :attr:`lensscan.data.preprocess.Preprocessing.crop`, and of a card that does not say.
DEFAULT_CROP = 48


def _from_dict(cls, d: dict[str, Any]):
    names = {f.name for f in fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
    return cls(**d)


@dataclass
class TrainConfig:
    """One member's training run (``lensscan train``)."""

    data: str  # URL of training shards (labelled)
    out: str  # URL of the model folder to write
    val: str | None = None  # URL of validation shards; default: 10% of `data` by object_id hash
    arch: str = "resnet"  # architecture name (lensscan.models.list_models())
    arch_kwargs: dict[str, Any] = field(default_factory=dict)  # passed to create_model
    name: str | None = None  # member name; default: arch + seed
    epochs: int = 12  # maximum epochs
    steps_per_epoch: int | None = None  # default: one pass over the training rows
    batch_size: int = 128  # per worker
    lr: float = 2e-3  # AdamW peak learning rate (one-cycle schedule)
    lr_batch: int | None = None  # batch size `lr` is tuned for: peak lr * sqrt(batch / lr_batch)
    weight_decay: float = 5e-4  # AdamW weight decay
    loss: str = "focal"  # "focal" or "bce" (class-weighted)
    focal_gamma: float = 2.0  # focusing parameter of the focal loss
    lens_fraction: float = 0.3  # share of lenses in every batch (balanced sampling)
    patience: int = 4  # early stopping: epochs without a better val AUC, from mid-schedule
    seed: int = 0  # seeds weights, sampling and augmentation
    workers: int = 1  # Ray Train workers (DDP)
    gpu: bool = False  # one GPU per worker
    cpus_per_worker: float = 1.0  # CPUs reserved per worker
    torch_threads: int | None = None  # intra-op threads per worker; default: cpus_per_worker
    storage: str | None = None  # checkpoint root URL; default: <out>/_train
    max_rows: int | None = None  # cap training rows (quick runs and tests)
    prior_ratio: float = 100.0  # non-lenses per lens where the model will run
    augment: dict[str, Any] = field(default_factory=dict)  # lensscan.data.augment.Augment
    preprocessing: dict[str, Any] = field(default_factory=dict)  # data.preprocess.Preprocessing
    init: str | None = None  # URL of a trained member whose weights start this run (fine-tuning)
    precision: str = "auto"  # "bf16": bfloat16 autocast, "fp32": full precision, "auto": bf16
    #   where the device computes it natively (GPUs, CPUs with AVX-512 BF16 or AMX), else fp32
    exclude: list[str] = field(default_factory=list)  # "COLUMN=VALUE": rows left out of training
    #   and validation (a rendering family held out, e.g. "psf_family=gaussian")
    labels: list[str] = field(default_factory=list)  # graders' CSVs: train on the graded rows
    #   of `data` with their combined grades as labels (lensscan.data.grades)
    grade_c: str = "drop"  # C-like objects (mean grade 0.5-1.5): "drop", "lens" or "nonlens"
    keep_labels: bool = False  # with labels: rows nobody graded keep their own `label` (e.g.
    #   inject's lenses and negatives) instead of being left out; a grade overrides a label

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

    input: str  # URL of shards (folder, glob or file)
    output: str  # URL of the output folder
    model: str = "default"  # model folder URL or "default" (bundled ensemble)
    threshold: float | None = None  # candidate cut; default: the model's operating threshold
    top: int | None = None  # keep the N best as candidates instead of a threshold
    batch_size: int | None = None  # cutouts per model call; default 512 on CPU, 8192 on a GPU
    rows_per_unit: int = 2048  # rows per work unit (commit granularity)
    actors: int | None = None  # scoring actors; default: one per GPU, else one per CPU (<= 8)
    gpus_per_actor: float | None = None  # default: 1 when the cluster has GPUs, else 0
    cpus_per_actor: float | None = None  # default: sized from the cluster
    torch_threads: int | None = None  # intra-op threads per CPU actor; default: its CPUs
    read_tasks: int | None = None  # concurrent read/preprocess tasks; default: 4 per free CPU
    object_store_mb: float | None = None  # object store for blocks in flight; default: sized
    overwrite: bool = False  # clear an output that holds another run instead of refusing
    tta: bool = False  # average every member over the 8 flips and rotations (8x the model cost)
    precision: str = "auto"  # autocast: "auto" (fp16 on GPUs, fp32 on CPU), fp32, fp16, bf16
    compile: bool = False  # torch.compile the ensemble on GPU actors (pays on long runs only)
    prior: float | None = None  # prevalence of lenses p_lens is calibrated to; default: the
    #   model card's calibration prior (refused for a model without calibration)
    progress: bool = True  # print progress while running

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CutoutConfig:
    """Cutouts of catalogue objects from coadd images (``lensscan cutout``)."""

    catalog: str  # URL of the catalogue: CSV, Parquet, FITS or VOTable
    images: str  # URL glob of the coadd images with a {band} placeholder
    out: str  # URL of the folder of Parquet shards to write
    bands: list[str] = field(default_factory=lambda: ["g", "r", "i"])  # output band names
    band_names: list[str] | None = None  # the bands as the file names spell them; default: bands
    pixel_scale: float = 0.168  # arcsec / pixel of the survey (HSC)
    scale_tolerance: float = 0.005  # relative pixel-scale mismatch accepted without --resample
    zeropoint: float = 27.0  # AB zero-point of the output fluxes (images that say theirs are
    #   scaled to it; images that do not are taken to be at it already)
    resample: bool = False  # reproject every stamp onto a pixel_scale TAN grid (reproject)
    id_col: str = "object_id"  # catalogue column names (case-insensitive)
    ra_col: str = "ra"
    dec_col: str = "dec"
    psf_fwhm: list[float] | None = None  # per-band PSF FWHM, arcsec, for every row (psf_fwhm)
    shard_size: int = 4096  # rows per output shard at most
    tasks: int | None = None  # tile tasks in flight; default: 2 per cluster CPU
    overwrite: bool = False  # clear a non-empty output folder first

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

    survey: str  # URL of the survey's shards (hosts and negatives come from it)
    out: str  # URL of the training set folder to write
    lenses: int  # lensed sources to paint (hosts are reused when fewer match)
    negatives: int  # survey cutouts (not hosts) to add as non-lenses
    hosts: str | None = None  # a --where-style expression over the survey's columns, or the
    #   URL of a catalogue of host ids (CSV/Parquet/FITS/VOTable); default: every row
    host_id_col: str = "object_id"  # id column of a host catalogue
    host_negatives: float = 0.5  # share of the negatives drawn from the host pool (the rest
    #   from the whole survey), so that a host's looks alone do not tell lenses apart
    false_positives: list[str] = field(default_factory=list)  # grades CSVs: rows graded
    #   "not a lens" join as non-lenses
    theta_e_col: str | None = None  # host column with the Einstein radius (arcsec) to use
    theta_e_ref: float = 1.0  # arcsec at host_mag_ref
    host_mag_ref: float = 21.0  # r magnitude inside the aperture of a 1" lens
    theta_e_slope: float = 0.5  # theta_E ~ L^slope
    theta_e_scatter: float = 0.15  # dex
    theta_e_range: tuple[float, float] = (0.5, 3.0)  # arcsec
    aperture: float = 2.0  # arcsec radius of the host's aperture magnitude
    psf_fwhm: list[float] | None = None  # g, r, i FWHM (arcsec) where a row has no psf_fwhm
    psf_fwhm_cols: list[str] | None = None  # or three columns with it (e.g. seeing_g, _r, _i)
    psf_family: str = "moffat"  # "moffat" or "gaussian"
    psf_beta: float = 3.0  # Moffat slope
    gain: list[float] = field(default_factory=lambda: [600.0, 800.0, 1500.0])  # electrons per
    #   flux unit, g r i (the simulator's HSC coadd values): Poisson noise of the added flux
    poisson: bool = True  # add the added flux's Poisson noise (False: noiseless, for checks)
    min_arc_snr: float = 10.0  # fainter arcs are brightened to 1-2 times this S/N
    paint_floor: float = 1e-3  # pixels where the arc adds less than this times the sky noise
    #   are left untouched
    preset: str = "broad"  # simulator population of sources and masses ("hsc" or "broad")
    supersample: int = 2  # sub-pixels per pixel side where the source is ray-traced
    seed: int = 0  # injection k uses default_rng([seed, k])
    shard_size: int = 2048  # rows per output shard, about
    overwrite: bool = False  # clear a non-empty output folder first

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
