"""The recipe of the bundled default ensemble, and a function that trains any recipe."""

from __future__ import annotations

import time
from typing import Any

from lensscan import modelcard
from lensscan.data.grades import graded_labels
from lensscan.errors import ModelError
from lensscan.io import storage
from lensscan.models.calibration import DEFAULT_PRIOR
from lensscan.train.ensemble import build_ensemble, member_config
from lensscan.train.trainer import train

#: Members of the default ensemble: different architectures, seeds, losses and augmentations.
DEFAULT_MEMBERS: dict[str, dict[str, Any]] = {
    "resnet_s0": {"arch": "resnet", "seed": 0, "loss": "focal"},
    "msresnet_s1": {"arch": "multiscale_resnet", "seed": 1, "loss": "focal"},
    "resnet_s2": {"arch": "resnet", "seed": 2, "loss": "bce",
                  "augment": {"noise_jitter": 1.0, "psf_jitter": 0.8}},
}

#: The schedule of every member of an ensemble (``jobs/train_ensemble.py``'s defaults): fewer,
#: fixed-length epochs than a single :class:`~lensscan.config.TrainConfig` run's.
ENSEMBLE_SCHEDULE: dict[str, Any] = {"epochs": 8, "steps_per_epoch": 200}

#: The original project's recipe on the same data: its CNN, class-weighted BCE, the natural class
#: mix in every batch and no augmentation.
BASELINE_MEMBER: dict[str, dict[str, Any]] = {
    "baseline_cnn": {"arch": "baseline_cnn", "seed": 0, "loss": "bce", "lens_fraction": 0.25,
                     "augment": {"d4": False, "noise_jitter": 0.0, "psf_jitter": 0.0,
                                 "flux_jitter": 0.0, "colour_jitter": 0.0,
                                 "band_psf_jitter": 0.0}},
}


def copy_members(src: str, out: str) -> dict[str, dict[str, Any]]:
    """Copy the member folders of the ensemble ``src`` into ``out`` unchanged (those already
    there are kept); returns them as a recipe, so that :func:`train_ensemble` keeps them all."""
    card = modelcard.read_card(src)
    if card.kind != "ensemble" or not card.members:
        # an empty recipe would train the default members from random weights: hours, where
        # refitting the weights takes seconds
        what = "an ensemble without members" if card.kind == "ensemble" else f"a {card.kind!r}"
        raise ModelError(f"{src}: --refit-only takes its members from an ensemble folder, this "
                         f"is {what}")
    for m in card.members:
        for name in (modelcard.CARD, modelcard.WEIGHTS):
            dst = storage.join(out, m.name, name)
            if not storage.exists(dst):
                storage.write_bytes_atomic(dst, storage.read_bytes(storage.join(src, m.path,
                                                                                name)))
    return {m.name: {} for m in card.members}


def namesakes(init_from: str, members: dict) -> dict[str, str]:
    """The folder of each member's namesake in the ensemble ``init_from``; refuses a folder that
    is not an ensemble, or one that has none of the members' names (a typo would otherwise
    train every member from random weights without a word)."""
    card = modelcard.read_card(init_from)
    if card.kind != "ensemble":
        raise ModelError(f"{init_from}: --init-from takes an ensemble folder, this is a "
                         f"{card.kind!r} (give its ensemble, or --init to a member's training)")
    paths = {m.name: storage.join(init_from, m.path) for m in card.members or ()}
    found = {name: paths[name] for name in members if name in paths}
    if not found:
        raise ModelError(f"{init_from}: none of its members ({', '.join(paths) or 'none'}) is "
                         f"named like a member to train ({', '.join(members)})")
    return found


def _check_kept(url: str, name: str, spec: dict[str, Any]) -> None:
    """A member already in the output is kept (a rerun resumes; a member copied in from another
    round stays), but not one of another architecture than the recipe's: ``--residual`` over
    plain members would otherwise build a plain ensemble without a word."""
    if "arch" not in spec:  # --refit-only: the members are whatever they are
        return
    card = modelcard.read_card(url)
    have = (card.arch, card.arch_kwargs or {})
    want = (spec["arch"], spec.get("arch_kwargs", {}))
    if have != want:
        raise ValueError(f"{url}: member {name} is a {have[0]!r} {have[1]}, the recipe trains a "
                         f"{want[0]!r} {want[1]}; remove it to train it anew, or give another "
                         "--out")


def train_ensemble(train_url: str, val_url: str | None, out: str,
                   members: dict[str, dict[str, Any]] | None = None,
                   init_from: str | None = None, refit_only: bool = False,
                   prior: float = DEFAULT_PRIOR, **common: Any) -> modelcard.ModelCard:
    """Train every member into ``out/<name>`` (members already finished are kept) and fit the
    ensemble on ``val_url``. ``common`` goes to every member's :class:`TrainConfig`.

    ``init_from``: an ensemble folder (``default``: the bundled one); each member starts from the
    weights of its namesake there (fine-tuning with a fresh schedule) when it has one; with
    ``refit_only`` its members are copied unchanged and only the weights are fitted. With
    ``labels`` (graders' CSVs) in ``common`` the members train on the graded rows of
    ``train_url``, with their grades as labels; the weights are fitted on ``val_url`` (its own
    labels) or, when it is None, on the graded rows of ``train_url``'s validation fold. ``prior``
    is the prevalence the card's calibration gives ``p_lens`` by default (fitted on ``val_url``
    only: :func:`lensscan.train.ensemble.build_ensemble`)."""
    if init_from:
        init_from = modelcard.resolve(init_from)
    if refit_only:
        if not init_from:
            raise ValueError("refitting the weights only needs the ensemble to take members from")
        members = copy_members(init_from, out)
    members = members or DEFAULT_MEMBERS
    starts = namesakes(init_from, members) if init_from and not refit_only else {}
    urls = []
    for name, spec in members.items():
        url = storage.join(out, name)
        urls.append(url)
        if storage.exists(storage.join(url, "card.json")):
            _check_kept(url, name, spec)
            print(f"[lensscan] {name}: already trained, kept", flush=True)
            continue
        t0 = time.time()
        spec = dict(spec)
        if name in starts:
            spec["init"] = starts[name]
        elif init_from:
            print(f"[lensscan] {name}: {init_from} has no member of this name, so it starts "
                  "from random weights", flush=True)
        train(member_config(name, train_url, val_url, out, **{**common, **spec}),
              progress=False)
        print(f"[lensscan] {name}: trained in {time.time() - t0:.0f}s", flush=True)
    if val_url:  # validation data keeps its own labels, as in each member's training
        return build_ensemble(out, urls, val_url, common.get("prior_ratio", 100.0),
                              prior=prior)
    if not common.get("labels"):
        raise ValueError("fitting the ensemble needs validation data or graders' labels")
    labels, _ = graded_labels(common["labels"], common.get("grade_c", "drop"))
    return build_ensemble(out, urls, train_url, common.get("prior_ratio", 100.0),
                          labels=labels, fold=True)
