"""The recipe of the bundled default ensemble, and a function that trains any recipe."""

from __future__ import annotations

import time
from typing import Any

from lensscan.io import storage
from lensscan.train.ensemble import build_ensemble, member_config
from lensscan.train.trainer import train

#: Members of the default ensemble: different architectures, seeds, losses and augmentations.
DEFAULT_MEMBERS: dict[str, dict[str, Any]] = {
    "resnet_s0": {"arch": "resnet", "seed": 0, "loss": "focal"},
    "msresnet_s1": {"arch": "multiscale_resnet", "seed": 1, "loss": "focal"},
    "resnet_s2": {"arch": "resnet", "seed": 2, "loss": "bce",
                  "augment": {"noise_jitter": 1.0, "psf_jitter": 0.8}},
}

#: The original project's recipe on the same data: its CNN, class-weighted BCE, the natural class
#: mix in every batch and no augmentation.
BASELINE_MEMBER: dict[str, dict[str, Any]] = {
    "baseline_cnn": {"arch": "baseline_cnn", "seed": 0, "loss": "bce", "lens_fraction": 0.25,
                     "augment": {"d4": False, "noise_jitter": 0.0, "psf_jitter": 0.0,
                                 "flux_jitter": 0.0, "colour_jitter": 0.0,
                                 "band_psf_jitter": 0.0}},
}


def train_ensemble(train_url: str, val_url: str, out: str,
                   members: dict[str, dict[str, Any]] | None = None,
                   init_from: str | None = None, **common: Any) -> dict:
    """Train every member into ``out/<name>`` (members already finished are kept) and fit the
    ensemble on ``val_url``. ``common`` goes to every member's :class:`TrainConfig`.

    ``init_from``: an ensemble folder; each member starts from the weights of its namesake there
    (fine-tuning with a fresh schedule) when it has one."""
    members = members or DEFAULT_MEMBERS
    urls = []
    for name, spec in members.items():
        url = storage.join(out, name)
        urls.append(url)
        if storage.exists(storage.join(url, "card.json")):
            print(f"[lensscan] {name}: already trained, kept", flush=True)
            continue
        t0 = time.time()
        spec = dict(spec)
        if init_from and storage.exists(storage.join(init_from, name, "card.json")):
            spec["init"] = storage.join(init_from, name)
        train(member_config(name, train_url, val_url, out, **{**common, **spec}),
              progress=False)
        print(f"[lensscan] {name}: trained in {time.time() - t0:.0f}s", flush=True)
    return build_ensemble(out, urls, val_url, common.get("prior_ratio", 100.0))
