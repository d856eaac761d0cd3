"""Sweep grids as files a user can write: TOML (or JSON) with the fields of ``SweepConfig``.

    name = "mine"
    description = "Natural vs robust on my photos."
    sources = ["cifar10-resnet20-natural", "cifar10-resnet20-l2-eps0.5"]
    targets = ["mnist", "path/to/images"]       # TFDS names or image folders
    train_images = [100, 400]
    unfrozen_blocks = [0, 3]
    seeds = [0, 1, 2]
    epochs = 30
    recipe = ["optim.learning_rate=0.05"]       # --set assignments for every run
    preset = "utrera2021"                       # optional: a named recipe under them

    [[overrides]]                               # later overrides win
    train_images = [100]
    unfrozen_blocks = [0]
    epochs = 2000

A file is checked like the registered grids (``SweepConfig`` validation): an unknown field, a
wrong type (``train_images = ["100"]`` or ``[100.5]``), a ``name`` that is not a plain folder
name or an impossible value stops with one sentence naming the file and the field. A grid of
more than ``sweeps.cells.MAX_CELLS`` (100,000) cells is refused when its cells are listed.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import typing
from pathlib import Path

from tftransfer.config import CellOverride, SweepConfig
from tftransfer.errors import UserError

GRID_SUFFIXES = (".toml", ".json")
_TUPLE_FIELDS = {f.name for f in dataclasses.fields(SweepConfig)
                 if typing.get_type_hints(SweepConfig)[f.name] is tuple} - {"overrides"}
_OVERRIDE_TUPLES = ("train_images", "seeds", "unfrozen_blocks")


def load_grid(path) -> SweepConfig:
    """The ``SweepConfig`` that the TOML or JSON file ``path`` describes."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"Grid file {str(path)!r} does not exist.")
    if path.suffix not in GRID_SUFFIXES:
        raise UserError(f"Grid file {str(path)!r}: use a .toml or .json file.")
    try:
        data = (tomllib.loads(path.read_text()) if path.suffix == ".toml"
                else json.loads(path.read_text()))
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"Grid file {str(path)!r} is not valid {path.suffix[1:].upper()}: "
                        f"{error}.") from None
    return grid_from_dict(data, str(path))


def grid_from_dict(data: dict, where: str) -> SweepConfig:
    """A ``SweepConfig`` from parsed file contents (``where`` names the file in errors)."""
    if not isinstance(data, dict):
        raise UserError(f"Grid file {where!r}: expected a table of fields at the top level.")
    _check_fields(data, [f.name for f in dataclasses.fields(SweepConfig)], where)
    values = {key: _as_tuple(value, key, where) if key in _TUPLE_FIELDS else value
              for key, value in data.items() if key != "overrides"}
    values["overrides"] = tuple(_override(entry, where) for entry in data.get("overrides", ()))
    try:
        return SweepConfig(**values)
    except TypeError as error:  # a missing required field
        raise UserError(f"Grid file {where!r}: {error}.") from None
    except UserError as error:
        raise UserError(f"Grid file {where!r}: {error}") from None


def _override(entry, where: str) -> CellOverride:
    if not isinstance(entry, dict):
        raise UserError(f"Grid file {where!r}: each [[overrides]] entry must be a table.")
    _check_fields(entry, [f.name for f in dataclasses.fields(CellOverride)], where,
                  "[[overrides]] ")
    values = {key: _as_tuple(value, key, where) if key in _OVERRIDE_TUPLES else value
              for key, value in entry.items()}
    try:
        return CellOverride(**values)
    except TypeError as error:
        raise UserError(f"Grid file {where!r}: an [[overrides]] entry: {error}.") from None


def _check_fields(data: dict, known: list[str], where: str, what: str = "") -> None:
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise UserError(f"Grid file {where!r}: unknown {what}field(s) {', '.join(unknown)} "
                        f"(fields: {', '.join(known)}).")


def _as_tuple(value, key: str, where: str) -> tuple:
    if not isinstance(value, list):
        raise UserError(f"Grid file {where!r}: {key} must be a list, got {value!r}.")
    return tuple(value)
