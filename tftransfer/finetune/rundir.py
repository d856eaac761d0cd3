"""What a fine-tuning run does with a run directory that already holds files.

A transfer run's record is ``config.json`` and ``model.keras`` (``saving.save_model_dir``),
``history.csv`` and, written last, ``metrics.json``: a directory with ``metrics.json`` holds
a finished run. A run started afresh removes all the old record files before training, so a
directory never holds parts of two runs (a finished seed-0 model and metrics beside a killed
seed-1 run's history).

``locked`` holds the directory's lock from that check to the run's last write, so a second
run into the same directory at once is refused instead of mixing its files in;
``check_run_dir`` decides, before any work, whether that replacement is allowed;
``resume_point`` decides what ``transfer --resume`` continues from: the run's checkpoint
(``checkpoints``), for the same configuration, or for more epochs (an extension, recorded).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tftransfer import runs
from tftransfer.training import checkpoints
from tftransfer.config import TransferConfig, from_dict, to_dict
from tftransfer.errors import UserError
from tftransfer.sources.registry import DEFAULT_SOURCE

# metrics.json first: once it is gone, the directory no longer claims a finished run.
RECORD_FILES = ("metrics.json", "config.json", "model.keras", "history.csv",
                checkpoints.CHECKPOINT_FILE)
EXISTING_RUN_CHOICES = ("replace", "refuse")
LOCK_FILE = ".lock"  # kept: removing a lock file another process has open would split the lock
# What pretrain writes when it starts: a source being trained, finished or not.
_PRETRAIN_MARKERS = ("run_config.json", "checkpoint")
# Fields that say where a run's files are or how it is computed, not what it computes: runs
# differing only in them are the same run (the feature cache and the training loop give the
# same result by design; strict_images only refuses a folder, and a run it let through is the
# same run).
_NOT_IDENTITY = ("out", "data.data_dir", "data.download", "feature_cache", "training_loop",
                 "data.strict_images")
# Result-row columns (transfer._result_row) and the config fields they hold, for a run
# recorded without config.json (a sweep that does not save models).
_ROW_FIELDS = {"target": "target", "source": "source", "train_images": "data.train_images",
               "unfrozen_blocks": "unfrozen_blocks", "seed": "seed", "epochs": "epochs",
               "learning_rate": "optim.learning_rate", "batch_size": "data.batch_size",
               "head_init": "head_init", "frozen_bn": "frozen_bn"}


def check_run_dir(out, cfg: TransferConfig, existing: str = "replace") -> None:
    """Refuses a run directory whose files the run of ``cfg`` must not replace.

    Always refused: a file where the directory should be, a source model or a pretrain run
    (transfer would overwrite its model), a ``config.json`` that cannot be read. With
    ``existing='refuse'`` (the ``transfer`` command) also a finished transfer run with
    another configuration, named by its target, source, N, blocks and seed, and a
    ``model.keras`` without ``config.json`` (whose it is cannot be told). ``'replace'``
    (sweeps, searches, library calls) lets any transfer run be replaced whole.

    Args:
      out: the run directory.
      cfg: the run about to start.
      existing: ``replace`` or ``refuse`` (``EXISTING_RUN_CHOICES``).

    Raises:
      UserError: one sentence naming the directory and what it holds.
    """
    if existing not in EXISTING_RUN_CHOICES:
        raise ValueError(f"existing must be one of {EXISTING_RUN_CHOICES}, got {existing!r}")
    out = Path(out)
    _refuse_a_file(out)
    if not out.is_dir():
        return
    config = _read(out, "config.json")
    _refuse_other_kinds(out, config)
    if existing == "refuse":
        _refuse_other_finished_run(out, config, cfg)


def locked(out):
    """Holds the lock of the run directory ``out`` (``out/.lock``, created with ``out``)
    for the ``with`` body.

    Raises:
      UserError: at once, when another process holds it (a run into the same directory).
    """
    out = Path(out)
    _refuse_a_file(out)
    return runs.locked(out / LOCK_FILE, busy=lambda holder: (
        f"--out {out} is in use by another run ({holder}); wait for it to end, or choose "
        f"another --out."))


def _refuse_a_file(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a run directory; choose another --out.")


def clear_run_record(out) -> None:
    """Removes a previous run's record files from ``out`` (nothing else in it), so that the
    run about to start cannot leave its files beside another run's."""
    for name in RECORD_FILES:
        (Path(out) / name).unlink(missing_ok=True)


@dataclass
class ResumePoint:
    """What ``transfer --resume`` does: continue from ``checkpoint`` (its ``epoch``), or
    nothing when the run is finished already (``finished``: its metrics)."""

    checkpoint: checkpoints.Checkpoint
    finished: dict | None = None


def resume_point(out, cfg: TransferConfig) -> ResumePoint:
    """The state a resumed run of ``cfg`` in ``out`` starts from.

    The checkpoint's configuration must be ``cfg``'s except for ``epochs``: more epochs
    than recorded extend the run (an entry in ``checkpoint.extended_from``; the schedule
    rule is ``checkpoints.EXTENSION_RULE``), fewer than it has finished are refused.

    Raises:
      UserError: no checkpoint, another configuration, or too few epochs.
    """
    out = Path(out)
    config = _read(out, "config.json")
    _refuse_other_kinds(out, config)
    state = checkpoints.load(out)
    if state is None:
        raise UserError(f"--resume {out}: there is no transfer checkpoint "
                        f"({checkpoints.CHECKPOINT_FILE}) to continue from; run without "
                        f"--resume to start the run.")
    differences = _differences(_flat_identity(state.config), _flat_identity(to_dict(cfg)))
    if differences:
        raise UserError(f"--resume {out}: the run there differs from this one in "
                        f"{_shown(differences)}; resume it with its own options (--resume "
                        f"{out} alone uses them).")
    if cfg.epochs < state.epoch:
        raise UserError(f"--resume {out}: the run has finished {state.epoch} epochs, more than "
                        f"--epochs {cfg.epochs}; give --epochs {state.epoch} or more.")
    metrics = _read(out, "metrics.json")
    planned = int(state.config["epochs"])
    if cfg.epochs == planned:
        return ResumePoint(state, metrics)
    state.extended_from.append({
        "epochs": planned, "epochs_finished": state.epoch, "finished": metrics is not None,
        "test_accuracy": (metrics or {}).get("test_accuracy"), "new_epochs": cfg.epochs,
        "learning_rate": checkpoints.EXTENSION_RULE})
    state.config = to_dict(cfg)
    (out / "metrics.json").unlink(missing_ok=True)  # no longer a finished run of `planned`
    checkpoints.save(out, state)  # a kill from here on resumes the extension
    return ResumePoint(state)


def _flat_identity(config: dict) -> dict:
    # Through the config class, so that a checkpoint written before a field existed has
    # that field's default, as its run had.
    config = to_dict(from_dict(TransferConfig, config))
    flat = _flatten(json.loads(json.dumps(config, default=str)))
    for key in _NOT_IDENTITY + ("epochs",):
        flat.pop(key, None)
    flat["source"] = flat.get("source") or DEFAULT_SOURCE
    return flat


def _differences(recorded: dict, current: dict) -> list[str]:
    return [f"{key} ({recorded.get(key)} there, {current.get(key)} here)"
            for key in sorted(set(recorded) | set(current))
            if recorded.get(key) != current.get(key)]


def _shown(differences: list[str]) -> str:
    return ", ".join(differences[:4]) + (
        f" and {len(differences) - 4} more" if len(differences) > 4 else "")


def _refuse_other_kinds(out: Path, config: dict | None) -> None:
    marker = next((m for m in _PRETRAIN_MARKERS if (out / m).exists()), None)
    if marker or (config is not None and config.get("kind") != "transfer"):
        what = "a pretrain run" if marker else _describe_model(config)
        raise UserError(f"--out {out} holds {what}, not a transfer run, which transfer would "
                        f"overwrite; choose another --out.")


def _refuse_other_finished_run(out: Path, config: dict | None, cfg: TransferConfig) -> None:
    if config is None and (out / "model.keras").exists():
        raise UserError(f"--out {out} holds a model.keras without a config.json, which "
                        f"transfer would overwrite; choose another --out, or remove it.")
    metrics = _read(out, "metrics.json")
    if metrics is None:
        return  # no finished run: a killed run's leftovers, replaced whole
    recorded, current = _comparable(config, metrics, cfg)
    differences = [f"{key} ({recorded[key]} there, {current[key]} here)"
                   for key in recorded if key in current and recorded[key] != current[key]]
    if differences:
        raise UserError(f"--out {out} holds a finished transfer run of {_describe(recorded)} "
                        f"that differs from this one in {_shown(differences)}; choose another "
                        f"--out, or "
                        f"delete {out} to replace it.")


def _read(out: Path, name: str) -> dict | None:
    path = out / name
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise UserError(f"--out {out} holds a {name} that cannot be read ({error}); remove "
                        f"it or choose another --out.") from None
    if not isinstance(data, dict):
        raise UserError(f"--out {out} holds a {name} that is not a JSON object; remove it or "
                        f"choose another --out.")
    return data


def _comparable(config: dict | None, metrics: dict, cfg: TransferConfig) -> tuple[dict, dict]:
    """(recorded, current): the two runs' identities as flat ``{field: value}`` dicts, from
    the recorded resolved config, or from the result row when there is none."""
    current = _flatten(json.loads(json.dumps(to_dict(cfg))))
    resolved = (config or {}).get("resolved_config")
    if isinstance(resolved, dict):
        recorded = _flatten(resolved)
    else:
        recorded = {path: metrics[column] for column, path in _ROW_FIELDS.items()
                    if column in metrics}
        if current.get("data.train_images") is None:
            recorded.pop("data.train_images", None)  # the row holds the count, not "all"
    for view in (recorded, current):
        for key in _NOT_IDENTITY:
            view.pop(key, None)
        if "source" in view:
            view["source"] = view["source"] or DEFAULT_SOURCE
    return recorded, current


def _flatten(data: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _describe(run: dict) -> str:
    n = run.get("data.train_images") or "all"
    return (f"{run.get('target')} from {run.get('source')} (N={n}, blocks "
            f"{run.get('unfrozen_blocks')}, seed {run.get('seed')})")


def _describe_model(config: dict) -> str:
    details = ", ".join(f"{key} {config[key]}" for key in ("arch", "dataset") if config.get(key))
    kind = f"a {config['kind']} model" if config.get("kind") else "a model"
    return kind + (f" ({details})" if details else "")
