"""Checkpoints of a fine-tuning run: what ``transfer --resume`` continues or extends.

A run started by the ``transfer`` command writes ``transfer_checkpoint.npz`` into its run
directory at the end of every epoch (``fit()``) or of every compiled stretch
(``finetune.compiled_loop``): the trained part's weights, the optimizer's variables (its step
counter included, so the step-indexed learning rate continues where it stopped), the
history rows and test-curve points so far, the run's resolved config and its extensions.
It is one file written atomically, the one source of truth for the epoch a resumed run
starts from, and it is kept after the run finishes so the run can be extended.

Extending a run from E0 to E1 epochs switches it to the E1-epoch learning-rate schedule
from epoch E0 + 1 on (``EXTENSION_RULE``): the first E0 epochs keep the rates they were
trained with (history.csv's ``learning_rate`` column shows both), and the run's config
records ``extended_from``.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tftransfer import runs
from tftransfer.errors import UserError

CHECKPOINT_FILE = "transfer_checkpoint.npz"
EXTENSION_RULE = ("epochs after the extension point follow the learning-rate schedule of "
                  "the new total number of epochs (step: x0.1 every new_epochs/3; cosine: "
                  "the new total's cosine); earlier epochs kept the rates they were trained "
                  "with")


@dataclass
class Checkpoint:
    """A run's state after ``epoch`` finished epochs."""

    config: dict                      # config.to_dict of the run's TransferConfig
    epoch: int
    rows: list[dict] = field(default_factory=list)      # history.csv rows 1..epoch
    curve: dict[int, float] = field(default_factory=dict)
    extended_from: list[dict] = field(default_factory=list)
    weights: list[np.ndarray] = field(default_factory=list)
    optimizer: list[np.ndarray] = field(default_factory=list)


def path(out) -> Path:
    """The checkpoint file of run directory ``out``."""
    return Path(out) / CHECKPOINT_FILE


def save(out, checkpoint: Checkpoint) -> None:
    """Writes ``checkpoint`` into ``out`` atomically (a kill leaves the previous one)."""
    meta = {"config": checkpoint.config, "epoch": checkpoint.epoch, "rows": checkpoint.rows,
            "curve": {str(k): v for k, v in checkpoint.curve.items()},
            "extended_from": checkpoint.extended_from}
    arrays = {f"w{i}": w for i, w in enumerate(checkpoint.weights)}
    arrays.update({f"o{i}": v for i, v in enumerate(checkpoint.optimizer)})
    buffer = io.BytesIO()
    np.savez(buffer, meta=np.asarray(json.dumps(runs.as_json_data(meta))), **arrays)
    runs.write_bytes_atomic(path(out), buffer.getvalue())


def load(out) -> Checkpoint | None:
    """The checkpoint in ``out``, or None when there is none.

    Raises:
      UserError: for a file that cannot be read as a checkpoint.
    """
    file = path(out)
    if not file.exists():
        return None
    try:
        with np.load(file, allow_pickle=False) as archive:
            meta = json.loads(str(archive["meta"]))
            weights = _numbered(archive, "w")
            optimizer = _numbered(archive, "o")
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as error:
        raise UserError(f"{file} is corrupt ({error}); remove it and run without --resume to "
                        f"start the run again.") from None
    return Checkpoint(meta["config"], int(meta["epoch"]), meta["rows"],
                      {int(k): v for k, v in meta["curve"].items()}, meta["extended_from"],
                      weights, optimizer)


def _numbered(archive, prefix: str) -> list[np.ndarray]:
    names = sorted((n for n in archive.files if n[0] == prefix and n[1:].isdigit()),
                   key=lambda n: int(n[1:]))
    return [archive[n] for n in names]


def capture(trained, optimizer, config: dict, epoch: int, rows, curve,
            extended_from) -> Checkpoint:
    """The checkpoint of a network being trained (``trained``'s weights, ``optimizer``'s
    variables) after ``epoch`` epochs."""
    return Checkpoint(config, epoch, [dict(r) for r in rows], dict(curve), list(extended_from),
                      trained.get_weights(), [v.numpy() for v in optimizer.variables])


def restore(checkpoint: Checkpoint, trained, optimizer) -> None:
    """Puts ``checkpoint``'s weights and optimizer state back into a network of the same
    configuration.

    Raises:
      UserError: when the shapes do not match (a checkpoint of another network).
    """
    variables = optimizer.variables
    shapes_match = (len(checkpoint.weights) == len(trained.weights)
                    and len(checkpoint.optimizer) == len(variables)
                    and all(tuple(w.shape) == tuple(v.shape)
                            for w, v in zip(checkpoint.optimizer, variables)))
    if not shapes_match:
        raise UserError("The checkpoint does not fit this run's network (another source, "
                        "target or number of unfrozen blocks); run without --resume.")
    trained.set_weights(checkpoint.weights)
    for variable, value in zip(variables, checkpoint.optimizer):
        variable.assign(value)
