"""Checkpoints of a fine-tuning run: what ``transfer --resume`` continues or extends.

A run started by the ``transfer`` command writes ``transfer_checkpoint.npz`` into its run
directory at the end of every epoch (``fit()``) or of every compiled stretch
(``finetune.compiled_loop``): the trained part's weights, the optimizer's variables (its step
counter included, so the step-indexed learning rate continues where it stopped), the
history rows and test-curve points so far, the run's resolved config and its extensions.
It is one file written atomically, the one source of truth for the epoch a resumed run
starts from, and it is kept after the run finishes so the run can be extended. Every field
read back is checked (``resume_fields``) before a run trusts it.

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
from tftransfer.config import TransferConfig, from_dict
from tftransfer.errors import UserError
from tftransfer.training.resume_fields import ResumeFile

CHECKPOINT_FILE = "transfer_checkpoint.npz"
EXTENSION_RULE = ("epochs after the extension point follow the learning-rate schedule of "
                  "the new total number of epochs (step: x0.1 every new_epochs/3; cosine: "
                  "the new total's cosine); earlier epochs kept the rates they were trained "
                  "with")
_REMEDY = "remove it and run without --resume to start the run again"


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
      UserError: for a file that cannot be read as a checkpoint, or a field of it that is
        missing or out of range (named: an edited ``epoch: -3`` would train extra epochs).
    """
    file = path(out)
    if not file.exists():
        return None
    try:
        with np.load(file, allow_pickle=False) as archive:
            meta = json.loads(str(archive["meta"]))
            weights = _numbered(archive, "w")
            optimizer = _numbered(archive, "o")
    except (OSError, ValueError, KeyError, RecursionError, zipfile.BadZipFile,
            EOFError) as error:
        raise ResumeFile(file, _REMEDY).corrupt(str(error)) from None
    return _checked(ResumeFile(file, _REMEDY), meta, weights, optimizer)


def _checked(fields: ResumeFile, meta, weights, optimizer) -> Checkpoint:
    """The checkpoint of ``meta`` and the arrays, every field checked against what ``save``
    writes (``fields`` names the file in the refusal)."""
    meta = fields.object("meta", meta)
    config = _config(fields, fields.get(meta, "config"))
    planned = fields.count("config.epochs", fields.get(config, "epochs", "config."), low=1)
    epoch = fields.count("epoch", fields.get(meta, "epoch"), 0, planned)
    rows = _rows(fields, fields.get(meta, "rows"), epoch)
    curve = _curve(fields, fields.get(meta, "curve"), epoch)
    extended_from = fields.objects("extended_from", fields.get(meta, "extended_from"))
    for name, arrays in (("w", weights), ("o", optimizer)):
        for index, array in enumerate(arrays):
            _check_array(fields, f"{name}{index}", array, finite=name == "w")
    return Checkpoint(config, epoch, rows, curve, extended_from, weights, optimizer)


def _config(fields: ResumeFile, config) -> dict:
    """The run's recorded ``TransferConfig`` (as a dict), validated as one built from flags."""
    config = fields.object("config", config)
    try:
        from_dict(TransferConfig, config)
    except (UserError, ValueError, TypeError) as error:
        raise fields.refuse("config", f"is not a valid run configuration "
                                      f"({str(error).rstrip('.')})") from None
    return config


def _rows(fields: ResumeFile, rows, epoch: int) -> list[dict]:
    """History rows 1..``epoch``, in order, each of numbers (None: not measured)."""
    rows = fields.objects("rows", rows)
    numbered = [row.get("epoch") for row in rows]
    if numbered != list(range(1, epoch + 1)):
        raise fields.refuse("rows", f"holds epochs {_span(numbered)}, not the epochs 1 to "
                                    f"{epoch} the checkpoint has finished")
    for row in rows:
        for key, value in row.items():
            if value is not None and (isinstance(value, bool)
                                      or not isinstance(value, (int, float))):
                raise fields.refuse("rows", f"holds {key} = {value!r} at epoch "
                                            f"{row['epoch']}, not a number")
    return rows


def _curve(fields: ResumeFile, curve, epoch: int) -> dict[int, float]:
    """Test-curve points ``{epoch: accuracy}`` of finished epochs (JSON keys are strings)."""
    curve = fields.object("curve", curve)
    points = {}
    for key, accuracy in curve.items():
        point = int(key) if key.isascii() and key.isdigit() else None
        if point is None or not 1 <= point <= epoch:
            raise fields.refuse("curve", f"has a point at epoch {key!r}, not one of the "
                                         f"epochs 1 to {epoch} the checkpoint has finished")
        points[point] = fields.number(f"curve.{key}", accuracy, 0.0, 1.0)
    return points


def _check_array(fields: ResumeFile, name: str, array: np.ndarray, finite: bool) -> None:
    """A stored weight (``finite``: never saved otherwise) or optimizer variable: numbers."""
    if not (np.issubdtype(array.dtype, np.number) and not np.iscomplexobj(array)):
        raise fields.refuse(name, f"holds {array.dtype} values, not numbers")
    if finite and not np.isfinite(array).all():
        raise fields.refuse(name, "holds NaN or infinite weights")


def _span(numbers: list) -> str:
    if not numbers:
        return "none"
    shown = ", ".join(repr(n) for n in numbers[:4])
    return shown + (f", ... ({len(numbers)} in all)" if len(numbers) > 4 else "")


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
    pairs = (list(zip(checkpoint.weights, trained.weights))
             + list(zip(checkpoint.optimizer, variables)))
    shapes_match = (len(checkpoint.weights) == len(trained.weights)
                    and len(checkpoint.optimizer) == len(variables)
                    and all(tuple(w.shape) == tuple(v.shape) for w, v in pairs))
    if not shapes_match:
        raise UserError("The checkpoint does not fit this run's network (another source, "
                        "target or number of unfrozen blocks); run without --resume.")
    trained.set_weights(checkpoint.weights)
    for variable, value in zip(variables, checkpoint.optimizer):
        variable.assign(value)
