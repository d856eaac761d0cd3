"""Configs as data: ``to_dict``/``from_dict`` for ``config.json``, typed ``--set
section.field=value`` overrides, named recipes, and sizes such as ``2GB``.
"""

from __future__ import annotations

import dataclasses
import math
import typing

from tftransfer.config.checks import check
from tftransfer.errors import UserError
from tftransfer.config.recipes import RECIPES

_SIZE_UNITS = {"": 1, "B": 1, "KB": 10 ** 3, "MB": 10 ** 6, "GB": 10 ** 9, "TB": 10 ** 12,
               "KIB": 2 ** 10, "MIB": 2 ** 20, "GIB": 2 ** 30, "TIB": 2 ** 40}


def to_dict(config) -> dict:
    """A config as plain JSON-ready data."""
    return dataclasses.asdict(config)


def from_dict(cls, data: dict):
    """Rebuilds a (nested) config from ``to_dict`` output, ignoring unknown keys."""
    hints = typing.get_type_hints(cls)
    # Init-only fields too: a config's old spelling (AttackConfig's ``kind``) still loads.
    names = [f.name for f in dataclasses.fields(cls)] + [
        name for name, hint in hints.items() if isinstance(hint, dataclasses.InitVar)]
    kwargs = {}
    for name in names:
        if name not in data:
            continue
        value = data[name]
        if dataclasses.is_dataclass(hints[name]) and isinstance(value, dict):
            value = from_dict(hints[name], value)
        kwargs[name] = value
    return cls(**kwargs)


def apply_overrides(config, assignments) -> object:
    """Returns ``config`` with ``section.field=value`` assignments applied.

    Values are cast by the field's declared type (int, float, bool, str, optional
    versions of those); nothing is evaluated as code.

    Args:
      config: a frozen config dataclass.
      assignments: strings such as ``"optim.learning_rate=0.01"`` or ``"epochs=20"``.
    """
    for assignment in assignments or ():
        if "=" not in assignment:
            raise UserError(f"--set expects FIELD=VALUE, got {assignment!r}.")
        path, raw = assignment.split("=", 1)
        config = _set_path(config, path.strip().split("."), raw.strip(), path)
    return config


def apply_recipe(cfg: "TransferConfig", name: str | None) -> "TransferConfig":
    """``cfg`` with the named recipe's assignments (``recipes.RECIPES``) applied and
    ``recipe`` set to ``name``; ``cfg`` itself for None."""
    if name is None:
        return cfg
    if name not in RECIPES:
        raise UserError(f"Unknown recipe {name!r}; known recipes: {', '.join(sorted(RECIPES))}.")
    return dataclasses.replace(apply_overrides(cfg, RECIPES[name]), recipe=name)


def _set_path(config, parts, raw, full_path):
    hints = typing.get_type_hints(type(config))
    name = parts[0]
    if name not in hints:
        valid = ", ".join(f.name for f in dataclasses.fields(config))
        raise UserError(f"--set {full_path}: {type(config).__name__} has no field {name!r} "
                        f"(fields: {valid}).")
    if len(parts) > 1:
        child = getattr(config, name)
        if not dataclasses.is_dataclass(child):
            raise UserError(f"--set {full_path}: {name!r} is not a section.")
        return dataclasses.replace(config, **{name: _set_path(child, parts[1:], raw, full_path)})
    return dataclasses.replace(config, **{name: _cast(raw, hints[name], full_path)})


def _cast(raw: str, annotation, full_path):
    options = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    if type(None) in typing.get_args(annotation) and raw.lower() in ("none", "null", ""):
        return None
    target = options[0]
    if target is int and str in options and not raw.lstrip("+-").isdigit():
        target = str  # int | str (epochs: a number or auto): the config checks the text
    try:
        if target is bool:
            if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(raw)
            return raw.lower() in ("true", "1", "yes")
        if target in (int, float, str):
            return target(raw)
    except ValueError:
        raise UserError(f"--set {full_path}: {raw!r} is not a valid {target.__name__}.") from None
    raise UserError(f"--set {full_path}: fields of type {annotation} cannot be set from the CLI.")


def parse_size(text: str) -> int:
    """Bytes in ``text``: a number with an optional unit, ``2GB``, ``500MB``, ``1.5GiB``,
    ``0`` (KB/MB/GB are powers of 1000, KiB/MiB/GiB of 1024)."""
    raw = str(text).strip().upper().replace(" ", "")
    number = raw.rstrip("KMGTIB")
    unit = raw[len(number):]
    try:
        value = float(number)
    except ValueError:
        value = -1.0
    check(unit in _SIZE_UNITS and math.isfinite(value) and value >= 0,
          f"{text!r} is not a size; give bytes with an optional unit, e.g. 2GB or 500MB.")
    return int(value * _SIZE_UNITS[unit])
