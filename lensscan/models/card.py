"""What a model folder's ``card.json`` holds, as dataclasses: read and written back unchanged,
key order included, each key checked for its JSON type (a card is untrusted input). Pure
Python: reading a card imports no torch."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

#: the keys of an evaluation report besides its models' names (``metrics.json``)
REPORT_KEYS = ("model", "data", "tta", "rows", "ensemble")
CARD = "card.json"
WEIGHTS = "model.safetensors"
FORMAT = "lensscan-model/1"


def _present(obj: Any) -> dict[str, Any]:
    """The fields of a dataclass that are set (not None), in declaration order."""
    return {f.name: getattr(obj, f.name) for f in fields(obj) if getattr(obj, f.name) is not None}


@dataclass(frozen=True)
class Member:
    """One member of an ensemble card: its name, folder (relative to the ensemble's) and weight
    of its logit in the ensemble's."""

    name: str
    path: str
    weight: float

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.path, "weight": self.weight}


@dataclass(frozen=True)
class Weights:
    """A member's weights file: name, SHA-256, stored dtype and size in bytes."""

    file: str | None = None  # default: model.safetensors
    sha256: str | None = None
    dtype: str | None = None  # "float16" or "float32"
    bytes: int | None = None

    @property
    def filename(self) -> str:
        return self.file or WEIGHTS


#: The JSON type of each card key that lensscan reads (a card is untrusted input).
_TYPES: dict[str, tuple[type, ...]] = {
    **dict.fromkeys(("arch_kwargs", "input", "preprocessing", "training", "metrics",
                     "training_data", "calibration", "weights"), (dict,)),
    **dict.fromkeys(("name", "arch", "combine", "threshold_rule", "format", "kind",
                     "lensscan_version"), (str,)),
    **dict.fromkeys(("bias", "threshold"), (int, float)),
    **dict.fromkeys(("bands", "members"), (list,)),
}
_JSON_NAMES = {dict: "an object", str: "text", int: "a number", list: "a list"}


def _check_types(kw: dict[str, Any]) -> None:
    """Raise ``TypeError`` naming the first key whose value is not of its JSON type."""
    for key, want in _TYPES.items():
        value = kw.get(key)
        if value is None:
            continue
        if not isinstance(value, want) or isinstance(value, bool):
            raise TypeError(f"{key!r} must be {_JSON_NAMES[want[0]]}, not "
                            f"{type(value).__name__}")
    if kw.get("bands") is not None and not (all(isinstance(b, str) for b in kw["bands"])
                                            and len(kw["bands"]) == 3):
        raise TypeError("'bands' must be a list of three band names (lensscan's cutouts are "
                        "three-band)")
    for key in ("bias", "threshold"):
        if kw.get(key) is not None and not math.isfinite(kw[key]):
            raise TypeError(f"{key!r} must be a finite number, not {kw[key]}")
    if kw.get("preprocessing") is not None:
        _check_preprocessing(kw["preprocessing"])
    for key, want in (("file", str), ("sha256", str), ("dtype", str), ("bytes", int)):
        value = (kw.get("weights") or {}).get(key)
        if value is not None and (not isinstance(value, want) or isinstance(value, bool)):
            raise TypeError(f"weights {key!r} must be {_JSON_NAMES[want]}, not "
                            f"{type(value).__name__}")


#: The preprocessing settings a card may give: (JSON kind, lowest, highest) of each; a 64 x 64
#: cutout's border frame and centre crop must fit in it, and band 0-2 set the noise scale.
_PREPROCESSING = {"border": (int, 1, 31), "noise_band": (int, 0, 2),
                  "softening": (float, 1e-6, 1e6), "crop": (int, 16, 64),
                  "min_noise": (float, 1e-30, 1e30)}


def _check_preprocessing(pre: dict[str, Any]) -> None:
    """Raise ``TypeError`` naming the first preprocessing setting that is not a number of its
    kind within its range (a tampered card failed deep inside the model, or blamed the data)."""
    for key, (kind, low, high) in _PREPROCESSING.items():
        value = pre.get(key)
        if value is None:
            continue
        ok_kind = isinstance(value, int) if kind is int else isinstance(value, int | float)
        if isinstance(value, bool) or not ok_kind or not (math.isfinite(value)
                                                          and low <= value <= high):
            raise TypeError(f"preprocessing {key!r} must be {'a whole' if kind is int else 'a'} "
                            f"number in [{low:g}, {high:g}], not {value!r}")


def _member(m: Any) -> Member:
    """A member entry; its folder must lie inside the ensemble's (a card is untrusted: a path
    such as ``/etc`` or ``../x`` would read files elsewhere)."""
    if not isinstance(m, dict):
        raise TypeError(f"a member must be an object, not {type(m).__name__}")
    path, name, weight = m["path"], m["name"], m["weight"]
    if not isinstance(name, str) or not name.strip() or name in REPORT_KEYS:
        raise TypeError(f"member name {name!r} must be text other than "
                        f"{', '.join(map(repr, REPORT_KEYS))} (the keys of a report)")
    if not _inside(path):
        raise TypeError(f"member {name!r}: path {path!r} must be a folder inside the "
                        "ensemble's")
    if isinstance(weight, bool) or not isinstance(weight, int | float):
        raise TypeError(f"member {name!r}: weight {weight!r} must be a number")
    return Member(name, path, weight)


def _inside(path: Any) -> bool:
    """True for a relative path that stays inside its folder (no ``..``, root or URL)."""
    return (isinstance(path, str) and bool(path) and not path.startswith(("/", "\\"))
            and "://" not in path and ".." not in path.replace("\\", "/").split("/"))


@dataclass(frozen=True)
class ModelCard:
    """What a model folder's ``card.json`` says. ``None`` is a key the card does not have.

    Member cards have ``arch``, ``arch_kwargs`` and ``weights``; ensemble cards ``members``,
    ``bias`` and ``combine``. Keys lensscan does not know are kept in ``extra``; ``order`` is the
    order of the keys as read, so that a card is written back exactly as it was (a new card's
    keys follow the fields' order). The dicts are the card's own: treat them as read-only.
    """

    name: str | None = None
    arch: str | None = None  # architecture (lensscan.models.create_model)
    arch_kwargs: dict[str, Any] | None = None
    bands: list[str] | None = None
    input: dict[str, Any] | None = None  # shape, dtype and units of the cutouts
    preprocessing: dict[str, Any] | None = None  # lensscan.data.preprocess.Preprocessing
    members: tuple[Member, ...] | None = None
    bias: float | None = None  # added to the weighted sum of the member logits
    combine: str | None = None  # how the member logits are combined, in words
    training: dict[str, Any] | None = None  # config, run name, history, best epoch, grades
    metrics: dict[str, Any] | None = None  # "validation" (and per member)
    threshold: float | None = None  # operating threshold on the score
    threshold_rule: str | None = None
    training_data: dict[str, Any] | None = None
    calibration: dict[str, Any] | None = None  # lensscan.models.calibration.Calibration.to_dict()
    format: str | None = None  # FORMAT
    kind: str | None = None  # "member" or "ensemble"
    lensscan_version: str | None = None
    weights: Weights | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    order: tuple[str, ...] = field(default=(), compare=False, repr=False)

    @property
    def operating_threshold(self) -> float:
        """The score cut candidates are taken at: the card's threshold, 0.5 when it has none."""
        return float(self.threshold if self.threshold is not None else 0.5)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelCard:
        """A card from its JSON object (KeyError or TypeError when a member or the weights
        entry is malformed)."""
        known = {f.name for f in fields(cls)} - {"extra", "order"}
        kw: dict[str, Any] = {k: v for k, v in d.items() if k in known}
        _check_types(kw)
        if kw.get("members") is not None:
            kw["members"] = tuple(_member(m) for m in kw["members"])
            names = [m.name for m in kw["members"]]
            if len(set(names)) != len(names):
                raise TypeError(f"member names must differ: {names}")
        if kw.get("weights") is not None:
            kw["weights"] = Weights(**kw["weights"])
            file = kw["weights"].file
            if file is not None and not (_inside(file) and "/" not in file.replace("\\", "/")):
                raise TypeError(f"weights file {file!r} must be a file name in the model's "
                                "folder")
        return cls(**kw, extra={k: v for k, v in d.items() if k not in known}, order=tuple(d))

    def to_dict(self) -> dict[str, Any]:
        """The card's JSON object: the keys it was read with in their order, then the keys set
        since (fields in their order, then extra keys)."""
        own = {f.name: getattr(self, f.name) for f in fields(self)
               if f.name not in ("extra", "order")}
        values = {**{k: v for k, v in own.items() if v is not None or k in self.order},
                  **self.extra}
        if values.get("members") is not None:
            values["members"] = [m.to_dict() for m in values["members"]]
        if values.get("weights") is not None:
            values["weights"] = _present(values["weights"])
        keys = [k for k in self.order if k in values]
        return {k: values[k] for k in [*keys, *(k for k in values if k not in self.order)]}

    @classmethod
    def from_json(cls, text: str | bytes) -> ModelCard:
        return cls.from_dict(json.loads(text))

    def to_json(self) -> str:
        """The card as ``card.json`` holds it (``from_json(text).to_json() == text``)."""
        return json.dumps(self.to_dict(), indent=2)

    def updated(self, **values: Any) -> ModelCard:
        """This card with ``values`` (JSON values, as the card holds them) set: a key it has
        keeps its place, a new one comes last."""
        return ModelCard.from_dict({**self.to_dict(), **values})
