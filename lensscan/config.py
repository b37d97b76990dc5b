"""Configuration dataclasses: every default documented once, here."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any


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
    precision: str = "bf16"  # "bf16": bfloat16 autocast (CPU and GPU), "fp32": full precision
    exclude: list[str] = field(default_factory=list)  # "COLUMN=VALUE": rows left out of training
    #   and validation (a rendering family held out, e.g. "psf_family=gaussian")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        return _from_dict(cls, d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

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
    progress: bool = True  # print progress while running

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
