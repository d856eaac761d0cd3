"""A sweep cell's config fingerprint: the settings its runs were made with, and their hash.

A cell's key (``Cell.key``) names its target, source, N, blocks, seed and epochs, but a grid
also sets a preset, a recipe, ``test_images``, ``eval_every`` and the curve's test images,
which change the result as much. ``fingerprint`` covers them all: the flat fields of the
cell's ``TransferConfig`` whose values are not ``TransferConfig``'s defaults, without

- the seed, in which the runs of one cell (that a report averages) differ, and
- the fields that say where files are or how a result is computed, not what it is.

Fields at their defaults are left out because defaults are code, which each row's
``git_commit`` records, and so that a field added to the config later leaves the fingerprints
of the rows recorded before it as they were.

The short hash is a results row's ``config_hash`` column; the run directory keeps the fields
too (``sweeps.run_dirs``), so that a rerun with other settings can name the ones that differ.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json

from tftransfer.config import TransferConfig, to_dict

HASH_COLUMN = "config_hash"
# Where the files go, and how a result is computed (the feature cache and the training loop
# give the same result by design): runs differing only in them are the same experiment.
_NOT_RESULT = ("out", "data.data_dir", "data.download", "feature_cache", "training_loop",
               "seed")


@dataclasses.dataclass(frozen=True)
class Fingerprint:
    """A cell's settings (``fields``: flat field name -> value, defaults left out) and their
    short hash."""

    fields: dict
    hash: str


def fingerprint(cfg: TransferConfig) -> Fingerprint:
    """The fingerprint of the run config ``cfg`` (see the module docstring)."""
    from tftransfer.training import runtime  # TensorFlow: not when the CLI only parses

    cfg = runtime.with_resolved_precision(cfg)  # what the run will record (fine_tune)
    defaults = _defaults()
    fields = {name: value for name, value in _flat(cfg).items()
              if name not in _NOT_RESULT and (name not in defaults or value != defaults[name])}
    text = json.dumps(fields, sort_keys=True)
    return Fingerprint(fields, hashlib.sha256(text.encode()).hexdigest()[:12])


def differences(recorded: dict, current: dict) -> list[str]:
    """The fields in which two fingerprints' ``fields`` differ, as ``name (A there, B
    here)``; a field that one side leaves out has its default value there."""
    defaults = _defaults()
    shown = []
    for name in sorted(set(recorded) | set(current)):
        there, here = (side.get(name, defaults.get(name)) for side in (recorded, current))
        if there != here:
            shown.append(f"{name} ({there!r} there, {here!r} here)")
    return shown


@functools.lru_cache(maxsize=1)
def _defaults() -> dict:
    # precision: the default is auto, which a run resolves and records; float32, the default
    # before auto, stays the value left out, so that the rows recorded then keep their
    # fingerprints on a CPU, and a GPU's mixed_float16 is a setting of its own. epochs: the
    # same for the default before auto (10), which a grid's cell always sets.
    return _flat(dataclasses.replace(TransferConfig(target="x"), precision="float32",
                                     epochs=10))


def _flat(cfg: TransferConfig) -> dict:
    # Through JSON, so that values compare as a recorded fingerprint reads back (lists).
    return _flatten(json.loads(json.dumps(to_dict(cfg), default=str)))


def _flatten(data: dict, prefix: str = "") -> dict:
    return {name: leaf for key, value in data.items()
            for name, leaf in (_flatten(value, f"{prefix}{key}.").items()
                               if isinstance(value, dict) else [(prefix + key, value)])}
