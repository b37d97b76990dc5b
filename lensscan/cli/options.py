"""Command-line options generated from the config dataclasses (:mod:`lensscan.config`).

:func:`add_options` adds one option per field, with the type, default, choices, metavar and help
the field declares; :func:`from_args` builds the config back from the parsed arguments. ``lensscan``
and the scripts in ``jobs/`` both use them, so a setting is written once, in its dataclass.

How a field becomes an option: a required field is ``--NAME`` with ``required=True`` (or a
positional argument where the command names it so); a boolean is a flag, ``--NAME`` when it
defaults to False and ``--no-NAME`` when it defaults to True; a list is a repeatable option, or
one comma-separated value per band (``per_band``); a pair is two values (``--NAME MIN MAX``); a
dict is a repeatable ``--NAME KEY=VALUE`` (VALUE a number, ``true``/``false`` or text).
"""

from __future__ import annotations

import argparse
import math
import types
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, Field, fields
from typing import Any, Union, get_args, get_origin, get_type_hints

from lensscan.config import BOUNDS, option_flag, out_of_bounds


def number(kind: type = int, low: float | None = None, high: float | None = None,
           above: float | None = None, below: float | None = None):
    """An argparse ``type`` for a number within bounds (``low``/``high`` inclusive,
    ``above``/``below`` exclusive; floats finite): a value out of range is one line naming the
    option, before the command does anything."""
    what = "a whole number" if kind is int else "a number"
    bounds = {"low": low, "high": high, "above": above, "below": below}

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        why = out_of_bounds(value, bounds)
        if why:
            raise argparse.ArgumentTypeError(f"{why}, not {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def options_of(cls: type, only: Iterable[str] | None = None) -> list[Field]:
    """The fields of ``cls`` that are command-line options, in declaration order (``only``:
    these, in this order)."""
    named = {f.name: f for f in fields(cls) if f.metadata.get("cli", True)}
    wanted = list(named if only is None else only)
    unknown = set(wanted) - set(named)
    if unknown:
        raise ValueError(f"{cls.__name__} has no options {sorted(unknown)}")
    return [named[n] for n in wanted]


def add_options(parser: argparse.ArgumentParser, cls: type, *, positional: Iterable[str] = (),
                only: Iterable[str] | None = None, defaults: Mapping[str, Any] | None = None,
                why: str = "") -> None:
    """Add the options of the config dataclass ``cls`` to ``parser`` (``only``: of these fields).

    ``positional``: fields given as positional arguments instead of ``--NAME``. ``defaults``:
    defaults of this command that differ from the dataclass's, ``why`` says whose they are (it is
    added to the help)."""
    hints = get_type_hints(cls)
    positional = set(positional)
    groups: dict[str, Any] = {}
    for f in options_of(cls, only):
        default = _default(f)
        meta = dict(f.metadata)
        if defaults and f.name in defaults:
            default = defaults[f.name]
            meta["help"] = f"{meta['help']}; here %(default)s by default ({why})"
        exclusive = meta.get("exclusive")
        if exclusive and exclusive not in groups:
            groups[exclusive] = parser.add_mutually_exclusive_group()
        target = groups[exclusive] if exclusive else parser
        flags, kw = _argument(f.name, hints[f.name], meta, default, f.name in positional)
        target.add_argument(*flags, **kw)


def from_args(cls: type, args: argparse.Namespace) -> Any:
    """The config ``cls`` from the parsed options (those not given keep the dataclass's
    defaults). A malformed per-band value raises ValueError."""
    return cls(**values(cls, args))


def values(cls: type, args: argparse.Namespace, only: Iterable[str] | None = None
           ) -> dict[str, Any]:
    """The config fields found in ``args`` (``only``: these), converted to the fields' types;
    options left unset (None) are left out, so that the dataclass's defaults apply."""
    hints = get_type_hints(cls)
    out = {}
    for f in options_of(cls, only):
        if not hasattr(args, f.name):
            continue
        value = _convert(hints[f.name], f, getattr(args, f.name))
        if value is not None:
            out[f.name] = value
    return out


def _default(f: Field) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return MISSING


def _argument(name: str, hint: Any, meta: dict, default: Any, positional: bool
              ) -> tuple[list[str], dict[str, Any]]:
    """The flags and keywords of ``add_argument`` for one field."""
    kw: dict[str, Any] = {"help": meta["help"]}
    if "metavar" in meta:
        kw["metavar"] = meta["metavar"]
    kind = _bare(hint)
    bounds = {k: meta[k] for k in BOUNDS if k in meta}
    typed = number(kind, **bounds) if bounds and kind in (int, float) else kind
    if positional:
        return [name], kw | ({"type": typed} if kind in (int, float) else {})
    flag = meta.get("flag") or "--" + ("no-" if default is True else "") + name.replace("_", "-")
    kw["dest"] = name
    if "choices" in meta:
        kw["choices"] = meta["choices"]
    if kind is bool:
        kw["action"] = "store_false" if default is True else "store_true"
        return [flag], kw
    if default is MISSING:
        kw["required"] = True
    else:
        kw["default"] = default
    if get_origin(kind) in (list, dict):
        kw["default"] = None  # from_args fills in the dataclass's
        if not meta.get("per_band"):
            kw["action"] = "append"
    elif get_origin(kind) is tuple:
        items = get_args(kind)
        kw.update(nargs=len(items), type=items[0])
    elif kind in (int, float):
        kw["type"] = typed
    elif kind is not str:
        raise TypeError(f"{name}: no command-line form for {hint}")
    return [flag], kw


def _bare(hint: Any) -> Any:
    """``X`` of ``X | None``."""
    if get_origin(hint) in (Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        return args[0] if len(args) == 1 else hint
    return hint


def _convert(hint: Any, f: Field, value: Any) -> Any:
    """The field's value of the option's ``value``."""
    kind = _bare(hint)
    if value is None:
        return None
    if f.metadata.get("per_band"):
        if value == "" and f.default is None:
            return None
        return _per_band_values(f, get_args(kind)[0], value)
    if get_origin(kind) is tuple:
        return tuple(value)
    if get_origin(kind) is dict:
        return _pairs(f, value)
    return value


def _pairs(f: Field, items: list[str]) -> dict[str, Any]:
    """``--NAME KEY=VALUE`` options as a dict, each value a number, a boolean (``true`` or
    ``false``) or else text."""
    return key_values(items, option_flag(f), f.metadata.get("metavar", "KEY=VALUE"), _scalar)


def key_values(items: list[str], flag: str, metavar: str,
               value: Callable[[str], Any] = str) -> dict[str, Any]:
    """Repeated ``KEY=VALUE`` items of option ``flag`` as a dict (both parts stripped, each
    value through ``value``); a malformed item or a repeated key is one line naming the
    option."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = (t.strip() for t in item.partition("="))
        if not (sep and key and text):
            raise ValueError(f"{flag} {item!r}: give {metavar}, both parts non-empty")
        if key in out:
            raise ValueError(f"{flag}: {key} is given twice")
        out[key] = value(text)
    return out


def _scalar(text: str) -> Any:
    """``true``/``false`` as booleans, a finite number as int or float, anything else as text
    (``1e400`` stays text, so a refusal quotes what was typed rather than ``inf``)."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return text
    return number if math.isfinite(number) else text


def _per_band_values(f: Field, kind: type, text: str) -> list:
    """The values of a per-band option, each within the option's bounds (numbers: finite), in
    one line naming the option."""
    flag = option_flag(f)
    bounds = {k: f.metadata[k] for k in BOUNDS if k in f.metadata}
    parse = number(kind, **bounds) if kind in (int, float) else kind
    try:
        return [parse(v) for v in _per_band(text)]
    except (argparse.ArgumentTypeError, ValueError) as exc:
        raise ValueError(f"{flag}: {exc}") from None


def _per_band(text: str) -> list[str]:
    """The values of ``g,r,i``: three, comma-separated."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    if len(names) != 3:
        raise ValueError(f"give three comma-separated bands, not {text!r}")
    return names
