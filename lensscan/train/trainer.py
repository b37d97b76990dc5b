"""Driver of one member's training: Ray Data in, Ray Train ``TorchTrainer`` (DDP), model folder out.

Launch::

    lensscan train s3://bucket/train/ --val s3://bucket/val/ --out s3://bucket/models/resnet_s0 \
        --arch resnet --workers 4 --gpu

Checkpoints go to ``<out>/_train/<run name>`` (or ``--storage``); rerunning the same command after
an interruption resumes from the latest checkpoint.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sys
import threading
import zlib
from dataclasses import replace

import numpy as np
import ray
import ray.data
from ray.train import (
    CheckpointConfig,
    DataConfig,
    FailureConfig,
    RunConfig,
    ScalingConfig,
    TrainingFailedError,
)
from ray.train.torch import TorchTrainer

from lensscan import modelcard, runtime
from lensscan.config import TrainConfig, check_bounds
from lensscan.data.augment import Augment
from lensscan.data.preprocess import Preprocessing
from lensscan.data.readstage import read_stage
from lensscan.data.stream import ReadUnits, plan_survey
from lensscan.io import storage
from lensscan.io.parquet import DEFAULT_BANDS
from lensscan.models import create_model
from lensscan.train import checkpoint as ckpt_io
from lensscan.train.failures import TrainingError, interrupted, training_failure
from lensscan.train.labels import Relabel, train_labels
from lensscan.train.loop import check_precision, train_loop_per_worker
from lensscan.train.metrics import choose_threshold, summary
from lensscan.train.predict import member_scores
from lensscan.train.warmstart import initial_weights, resolve_init


def _hash_fold(ids: np.ndarray) -> np.ndarray:
    """Each id's fold: crc32 of its text, so that the integer id of a survey's row and the same
    id as text (``inject``'s ``host_id``) fall in one fold."""
    return np.array([zlib.crc32(str(v).encode()) % 10 for v in ids.tolist()], dtype=np.int64)


def parse_exclude(pairs: list[str]) -> list[tuple[str, str]]:
    """``["COLUMN=VALUE", ...]`` -> ``[(column, value), ...]``; a malformed pair raises."""
    out = []
    for pair in pairs:
        col, sep, value = pair.partition("=")
        if not sep or not col.strip() or not value.strip():
            raise ValueError(f"--exclude wants COLUMN=VALUE, not {pair!r}")
        out.append((col.strip(), value.strip()))
    return out


def check_columns(url: str, columns: list[str]) -> None:
    """Raise ``ValueError`` unless the first shard at ``url`` is Parquet with ``columns``."""
    from lensscan.io.parquet import parquet_info

    if not columns:
        return
    shards = storage.list_shards(url)
    if not shards or not shards[0].endswith(".parquet"):
        raise ValueError(f"{url}: --exclude needs Parquet shards with the columns {columns}")
    missing = [c for c in columns if c not in parquet_info(shards[0]).columns]
    if missing:
        raise ValueError(f"{shards[0]}: no column {missing[0]!r} to exclude rows by")


def check_exclude_matches(url: str, pairs: list[tuple[str, str]]) -> None:
    """Raise ``ValueError`` for a ``COLUMN=VALUE`` pair that no row at ``url`` matches (compared
    as :class:`Exclude` does): a misspelt family would exclude nothing and say nothing, and a
    "held-out" member would have seen it. Reads that column of shards until a row matches."""
    from lensscan.io.rows import read_columns

    if not pairs:
        return
    shards = storage.list_shards(url)
    for col, value in pairs:
        seen: set[str] = set()
        for shard in shards:  # that one column of the Parquet shards, no pixels
            if not shard.endswith(".parquet"):
                continue
            values = _as_text(read_columns(shard, [col])[col])
            if (values == value).any():
                break
            if len(seen) < 50:  # enough to name a few in the message
                seen.update(np.unique(values)[:50].tolist())
        else:
            some = ", ".join(sorted(seen)[:12])
            raise ValueError(f"{url}: --exclude {col}={value} matches no row (values of {col}: "
                             f"{some or 'none'})")


def _as_text(values: np.ndarray) -> np.ndarray:
    """A column's values as text, as ``--exclude`` values compare with them."""
    return np.asarray(values, dtype=object).astype(str)


class Exclude:
    """Drop the rows whose ``column`` equals ``value`` for any of the pairs."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self.pairs = pairs

    def __call__(self, batch: dict) -> dict:
        drop = np.zeros(len(batch["status"]), bool)
        for col, value in self.pairs:
            drop |= _as_text(batch[col]) == value
        return {k: v[~drop] for k, v in batch.items()}


#: Restarts of a failed run from its last checkpoint before training gives up.
MAX_RESTARTS = 2

#: How :func:`fold_of` splits, in a card's words.
FOLD_RULE = ("crc32 % 10 == 0 of the text of host_id, else of a paired non-lens's lens, else "
             "of object_id")


def fold_of(batch: dict) -> np.ndarray:
    """Each row's fold (hash % 10): by ``host_id`` where a row has one, so that the lenses
    ``lensscan inject`` painted on one host and the host itself fall in one fold (a host on
    both sides of the split would be seen in training and judged in validation); a paired
    non-lens of ``simulate --preset broad`` (``paired_with`` >= 0: its lens's scene without the
    arc) by its lens's id; else by ``object_id``."""
    ids = np.asarray(batch["object_id"])
    fold = _hash_fold(ids)
    if "paired_with" in batch:
        partner = np.asarray(batch["paired_with"], dtype=object)
        # a nullable int column reads as floats with NaN where there is no partner
        has = np.array([isinstance(p, int | np.integer | float | np.floating) and p >= 0
                        and float(p).is_integer() for p in partner], bool)
        if has.any():
            fold[has] = _hash_fold(np.array([int(p) for p in partner[has]], dtype=object))
    if "host_id" in batch:
        host = np.asarray(batch["host_id"], dtype=object)
        has = np.array([isinstance(h, str) and h != "" for h in host], bool)
        if has.any():
            fold[has] = _hash_fold(host[has])
    return fold


class HashSplit:
    """Keep the validation fold (hash % 10 == 0, :func:`fold_of`) or the rest."""

    def __init__(self, val: bool) -> None:
        self.val = val

    def __call__(self, batch: dict) -> dict:
        fold = fold_of(batch) == 0
        keep = fold if self.val else ~fold
        return {k: v[keep] for k, v in batch.items()}


def dataset(url: str, pre: Preprocessing, stage: str, read_cpus: float = 0.5,
            max_rows: int | None = None, fold: bool | None = None,
            keep_extra: tuple[str, ...] = ("label",),
            exclude: list[str] | None = None,
            labels: dict[str, int] | None = None,
            keep_labels: bool = False) -> ray.data.Dataset:
    """A Ray Data stream of labelled, preprocessed rows from shards at ``url``, without the rows
    that ``exclude`` (``COLUMN=VALUE`` pairs) names; with ``labels`` (graders' labels by
    object_id), only the graded rows, labelled so, plus with ``keep_labels`` the ungraded
    rows that have a label of their own. Shards with integer ids and shards with string ids
    (a simulated set beside an imported one) are read together, every id as a string."""
    p = plan_survey(url, bands=DEFAULT_BANDS)  # every model reads g, r, i in that order
    if p.rejected:
        raise p.rejected[0]
    pairs = parse_exclude(exclude or [])
    split_by = ("host_id", "paired_with") if fold is not None else ()
    keep = tuple(dict.fromkeys(keep_extra + tuple(c for c, _ in pairs) + split_by))
    # ids as text wherever a shard has string ids (a unit of only null string ids would
    # otherwise read as integers, and one stream holds one type)
    read = ReadUnits(pre.to_dict(), stage, keep=keep, ids_as_strings=p.string_ids)
    ds = read_stage(p.units, read, read_cpus)
    if labels is not None:  # grades replace the files' labels
        ds = ds.map_batches(Relabel(labels, keep_labels), batch_size=None, num_cpus=read_cpus)
    if pairs:
        ds = ds.map_batches(Exclude(pairs), batch_size=None, num_cpus=read_cpus)
    if fold is not None:
        ds = ds.map_batches(HashSplit(fold), batch_size=None, num_cpus=read_cpus)
    if max_rows:
        ds = ds.limit(max_rows)
    return ds


#: TrainConfig fields added after runs were named, with their defaults: at its default such a
#: field is not part of the name, so rerunning an older command still resumes its run.
LATER_FIELDS = {"lr_batch": None, "keep_labels": False}
#: The same for augmentation settings added later (an interrupted run resumes with them on)
LATER_AUGMENT = {"background_jitter": Augment().background_jitter}


def run_name(cfg: TrainConfig) -> str:
    """Stable name of a training run: the same command resumes the same run. Without ``--val``
    the validation fold's rule (:data:`FOLD_RULE`, its text) is part of the name: a run begun
    under another rule split other rows off, so it is not resumed with this one's (its
    validation rows would have trained) but begun afresh. Runs without ``--val`` begun before
    the rule was part of the name begin afresh too, whatever their rule."""
    key = dict(cfg.to_dict(), workers=None, gpu=None, storage=None, cpus_per_worker=None,
               torch_threads=None)
    for name, default in LATER_FIELDS.items():  # at their defaults: the name as it was
        if key.get(name, default) == default:
            key.pop(name, None)
    augment = dict(key.get("augment") or {})
    for name, default in LATER_AUGMENT.items():
        if augment.get(name, default) == default:
            augment.pop(name, None)
    key["augment"] = augment
    if not cfg.val:
        key["fold_rule"] = FOLD_RULE
    digest = hashlib.sha1(repr(sorted(key.items())).encode()).hexdigest()[:10]
    return f"{cfg.member_name}-{digest}"


def complete(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` completed, as a copy (the caller's is left as it is): absolute URLs (workers run
    in other folders), ``--init default`` resolved to a member (and its architecture's
    arguments, where ``cfg`` does not set them), full preprocessing and augmentation."""
    init, arch_kwargs = cfg.init, cfg.arch_kwargs
    if init:  # "default" or an ensemble: its member of this architecture, whose arguments the
        # run keeps unless it sets them (residual channels included)
        init = storage.absolute(resolve_init(init, cfg.arch, cfg.arch_kwargs, cfg.member_name))
        arch_kwargs = {**(modelcard.read_card(init).arch_kwargs or {}), **cfg.arch_kwargs}
    urls = {k: storage.absolute(v) for k in ("data", "val", "out", "storage")
            if (v := getattr(cfg, k))}
    return replace(cfg, **urls, init=init, arch_kwargs=arch_kwargs,
                   preprocessing=Preprocessing.from_dict(cfg.preprocessing).to_dict(),
                   labels=[storage.absolute(u) for u in cfg.labels],
                   augment=Augment.from_dict(cfg.augment).to_dict())


def check(cfg: TrainConfig) -> tuple[TrainConfig, dict[str, int] | None, dict | None]:
    """:func:`complete` ``cfg``, refuse what cannot train before any worker starts, and read the
    graders' labels (``None`` without ``--labels``); returns the completed copy too."""
    if cfg.keep_labels and not cfg.labels:
        raise ValueError("--keep-labels keeps ungraded rows beside graded ones: give --labels")
    cfg = complete(cfg)
    check_bounds(cfg)  # as the command line's options do
    check_precision(cfg.precision)
    pairs = parse_exclude(cfg.exclude)
    check_columns(cfg.data, [c for c, _ in pairs])
    if cfg.val:
        check_columns(cfg.val, [c for c, _ in pairs])
    check_exclude_matches(cfg.data, pairs)
    check_out(cfg)
    if cfg.init:
        initial_weights(cfg)
    return cfg, *train_labels(cfg)


def check_out(cfg: TrainConfig) -> None:
    """Refuse a ``--val`` that overlaps the training data (validation rows trained on), an
    ``--out`` inside the training or validation data (the model's files would be among the
    shards) or holding another run's model, which training would replace with no
    word (the same command rerun is the same run: it resumes or rewrites its own model)."""
    for what, url in (("data", cfg.data), ("--val", cfg.val)):
        if url and storage.inside(cfg.out, url):
            raise ValueError(f"--out {cfg.out}: it lies inside the {what} folder {url}; write "
                             "the model elsewhere")
    inside, holds = (bool(cfg.val) and storage.inside(u, v) for u, v in
                     ((cfg.val, cfg.data), (cfg.data, cfg.val)))
    if inside and holds:  # the same set, on purpose (a few graded rows): said now, not refused
        print(f"[lensscan] warning: --val {cfg.val} is the training data: the validation "
              "figures and the threshold are of rows it trained on", file=sys.stderr, flush=True)
    elif inside or holds:  # a folder beside the training shards, listed with them
        raise ValueError(f"--val {cfg.val}: it {'lies inside' if inside else 'holds'} the "
                         f"training data {cfg.data}, whose shards are all trained on; give "
                         "folders apart")
    if not storage.exists(storage.join(cfg.out, modelcard.CARD)):
        return
    theirs = (modelcard.read_card(cfg.out).training or {}).get("run")
    if theirs != run_name(cfg):
        raise ValueError(f"--out {cfg.out} holds another model (run {theirs}); give another "
                         "--out, or remove that one first")


def _sized(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with the CPUs and threads of its workers fitted to the cluster (a copy)."""
    if cfg.gpu:
        return cfg
    free = runtime.cluster_cpus() - 0.5  # leave room for the Ray Data read tasks
    return replace(cfg, cpus_per_worker=max(0.25, min(cfg.cpus_per_worker, free / cfg.workers)),
                   torch_threads=cfg.torch_threads or max(1, round(runtime.cluster_cpus() /
                                                                   cfg.workers)))


def train(cfg: TrainConfig, progress: bool = True) -> modelcard.ModelCard:
    """Train one member and write its model folder to ``cfg.out``; returns the card. ``cfg``
    is left as it is; the card records the run's completed copy."""
    cfg, labels, grades = check(cfg)
    if grades and grades.get("not_in_data"):
        print(f"[lensscan] warning: {grades['not_in_data']} of the {len(labels or {})} graded "
              f"objects are not in {cfg.data}: they cannot train", file=sys.stderr, flush=True)
    pre = Preprocessing.from_dict(cfg.preprocessing)
    runtime.ensure_ray(quiet=not progress)
    cfg = _sized(cfg)
    fold = None if cfg.val else False
    ds_train = dataset(cfg.data, pre, "normalized", max_rows=cfg.max_rows, fold=fold,
                       exclude=cfg.exclude, labels=labels, keep_labels=cfg.keep_labels)
    ds_val = dataset(cfg.val or cfg.data, pre, "normalized", fold=None if cfg.val else True,
                     exclude=cfg.exclude, labels=None if cfg.val else labels,
                     keep_labels=cfg.keep_labels)

    storage_url = cfg.storage or storage.join(cfg.out, "_train")
    fs, root = storage.pyarrow_filesystem(storage_url)
    if storage.is_local(storage_url):
        root = os.path.abspath(root)
        os.makedirs(root, exist_ok=True)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=cfg.to_dict(),
        scaling_config=ScalingConfig(num_workers=cfg.workers, use_gpu=cfg.gpu,
                                     resources_per_worker=None if cfg.gpu else
                                     {"CPU": cfg.cpus_per_worker}),
        run_config=RunConfig(name=run_name(cfg), storage_path=root, storage_filesystem=fs,
                             failure_config=FailureConfig(max_failures=MAX_RESTARTS),
                             checkpoint_config=CheckpointConfig(num_to_keep=2)),
        datasets={"train": ds_train, "val": ds_val},
        dataset_config=DataConfig(datasets_to_split=["train"]),
    )
    best, state = _fit(trainer, cfg)
    model = create_model(cfg.arch, **cfg.arch_kwargs)
    # the weights as the member folder stores them (float16): the card's metrics and threshold
    # are those of the model a user loads
    model.load_state_dict({k: v.half().float() if v.is_floating_point() else v
                           for k, v in best.items()})
    model.eval()

    y_val, s_val, _ = member_scores(model, ds_val_for_scoring(cfg, pre, labels))
    threshold = choose_threshold(y_val, s_val, cfg.prior_ratio)
    card = modelcard.ModelCard(
        name=cfg.member_name,
        arch=cfg.arch,
        arch_kwargs=cfg.arch_kwargs,
        bands=list(DEFAULT_BANDS),
        input={"shape": [3, 64, 64], "dtype": "float32", "units": "linear flux"},
        preprocessing=pre.to_dict(),
        training={"config": cfg.to_dict(), "run": run_name(cfg), "history": state["history"],
                  "best_epoch": state["best_epoch"] + 1, **({"grades": grades} if grades else {})},
        metrics={"validation": summary(y_val, s_val, threshold)},
        threshold=threshold,
    )
    return modelcard.save_member(cfg.out, model, card)


def _fit(trainer: TorchTrainer, cfg: TrainConfig) -> tuple[dict, dict]:
    """Run ``trainer``; the best weights and the run's state from its last checkpoint. A failed
    run, or one whose data the workers refused, is one line (``DataProblemError`` reaches here
    as a checkpoint, so that Ray does not retry it). Ctrl-C during the run is one line too;
    Ray Train's own SIGINT handler, which it leaves installed, is removed after the run, so that
    a later Ctrl-C (validation scoring, the next member) is Python's ``KeyboardInterrupt``."""
    main = threading.current_thread() is threading.main_thread()
    before = signal.getsignal(signal.SIGINT) if main else None
    try:
        result = trainer.fit()
    except TrainingFailedError as exc:
        raise training_failure(cfg.member_name, exc, MAX_RESTARTS) from None
    except (SystemExit, KeyboardInterrupt):  # Ctrl-C: Ray Train aborted the run
        raise interrupted(cfg.member_name) from None
    finally:
        if before is not None:
            signal.signal(signal.SIGINT, before)
    if result.checkpoint is None:
        raise TrainingError(f"training {cfg.member_name} ended without a checkpoint")
    with result.checkpoint.as_directory() as d:
        diverged = ckpt_io.read_problem(d, diverged=True)
        if diverged is not None:
            raise TrainingError(f"{cfg.member_name}: {diverged}")
        problem = ckpt_io.read_problem(d)
        if problem is not None:
            hint = ("; with --labels only graded rows train: do the grades' object_ids match "
                    "the data's?" if cfg.labels and not cfg.keep_labels else "")
            raise ValueError(f"{cfg.data}: {problem}{hint}")
        _, best, _, state, _ = ckpt_io.load(d)
    return best, state


def ds_val_for_scoring(cfg: TrainConfig, pre: Preprocessing,
                       labels: dict[str, int] | None = None) -> ray.data.Dataset:
    """Validation rows preprocessed exactly as scoring does (the graded rows of ``cfg.data``
    when ``labels`` are given without ``cfg.val``)."""
    return dataset(cfg.val or cfg.data, pre, "model", fold=None if cfg.val else True,
                   exclude=cfg.exclude, labels=None if cfg.val else labels,
                   keep_labels=cfg.keep_labels)
