"""The best trial of a search: its hyperparameters, its ``transfer`` command, and its
retrain on all N images with one evaluation on the test split."""

from __future__ import annotations

import dataclasses
import shlex
import sys
from pathlib import Path

from tftransfer import runs
from tftransfer import finetune
from tftransfer.config import AUGMENT_PRESETS, TransferConfig
from tftransfer.config.flags import TRANSFER_FLAGS, command_line
from tftransfer.errors import UserError
from tftransfer.tuning.search_space import config_from_hps, searched_values
from tftransfer.tuning.tuners import OBJECTIVE

BEST_HPS_FILE = "best_hyperparameters.json"
BEST_COMMAND_FILE = "best_command.sh"
RESULT_FILE = "result.json"
BEST_RUN_DIR = "best_run"


def transfer_command(cfg: TransferConfig) -> str:
    """``python main.py transfer ...`` that trains exactly ``cfg``: the flags whose values
    differ from the command's defaults (``config.flags.TRANSFER_FLAGS``)."""
    d = cfg.data
    args = ["--target", cfg.target]
    if cfg.source is not None:
        args += ["--source", cfg.source]
    args += ["--epochs", str(cfg.epochs)]
    args += command_line(cfg, TransferConfig(target=cfg.target), TRANSFER_FLAGS)
    if d.augment:
        preset = next(name for name, fields in AUGMENT_PRESETS.items()
                      if fields == (True, d.augment_policy))
        args += ["--augment", preset]
    if d.data_dir is not None:
        args += ["--data-dir", d.data_dir]
    if not d.download:
        args.append("--no-download")
    if cfg.out is not None:
        args += ["--out", cfg.out]
    return "python main.py transfer " + " ".join(shlex.quote(a) for a in args)

def best_trial(tuner):
    """The completed trial with the highest objective, the earliest among ties (so that
    a reloaded search picks the same one); a clear error when every trial failed."""
    trials = [t for t in tuner.oracle.trials.values()
              if t.status == "COMPLETED" and t.score is not None]
    if not trials:
        failed = [t for t in tuner.oracle.trials.values() if t.message]
        detail = (f" The first failure ended with: {failed[0].message.strip().splitlines()[-1]}"
                  if failed else "")
        raise UserError(f"No trial of the search in {tuner.project_dir} finished.{detail}")
    order = {trial_id: i for i, trial_id in enumerate(tuner.oracle.start_order)}
    return min(trials, key=lambda t: (-t.score, order.get(t.trial_id, len(order))))


def trial_number(tuner, trial_id: str) -> int:
    """The 1-based number keras-tuner's log gives a trial ("Trial #2" is trial id 1)."""
    return tuner.oracle.start_order.index(trial_id) + 1


def retrain_best(cfg, tuner, search_data, verbose: bool = True) -> dict:
    """Writes the best hyperparameters and command, retrains that configuration on all N
    images and evaluates it once on the test split.

    A rerun after a finished retrain of the same command reuses its result instead of
    touching the test split again.

    Args:
      cfg: the search (a ``tuning.TuneConfig``).
      tuner: its tuner, after the search.
      search_data: the ``hypermodel.SearchData`` the trials read (its cache is reused).
      verbose: progress on stderr.

    Returns:
      The tune result: best hyperparameters, validation and test accuracy, command, dir.
    """
    directory = Path(cfg.directory)
    trial = best_trial(tuner)
    values = searched_values(trial.hyperparameters.values, cfg.max_epochs)
    out = directory / BEST_RUN_DIR
    best_cfg = dataclasses.replace(config_from_hps(cfg.base, values), out=str(out))
    # tests/tuning_test.py checks that this command parses back to best_cfg.
    command = transfer_command(best_cfg)
    runs.write_json(directory / BEST_HPS_FILE, values)
    if verbose:
        print(f"best trial: #{trial_number(tuner, trial.trial_id)} (id {trial.trial_id}), "
              f"{OBJECTIVE} {trial.score:.4f} with {values}\n"
              f"best configuration (retrained on all {cfg.base.data.train_images} images):\n"
              f"  {command}", file=sys.stderr)

    row = _finished_retrain(directory, out, command)
    retrained = row is None
    if retrained:
        runs.write_text_atomic(directory / BEST_COMMAND_FILE, command + "\n")
        row = finetune.fine_tune(best_cfg, cache=search_data.cache, verbose=verbose)
    result = {
        "best_hyperparameters": values, "val_accuracy": float(trial.score),
        "test_accuracy": row["test_accuracy"], "command": command, "dir": str(directory),
        "best_trial": trial.trial_id,
        "best_trial_number": trial_number(tuner, trial.trial_id),
        "trials": _completed_trials(tuner),
        "tuner": cfg.tuner, "target": cfg.base.target, "source": row["source"],
        "train_images": int(cfg.base.data.train_images),
        "validation_images": int(len(search_data.val_idx)),
        "test_images": row["test_images"], "run_dir": str(out), "retrained": retrained,
    }
    runs.write_json(directory / RESULT_FILE, result)
    return result


def _finished_retrain(directory: Path, out: Path, command: str) -> dict | None:
    command_file, metrics_file = directory / BEST_COMMAND_FILE, out / "metrics.json"
    previous = command_file.read_text().strip() if command_file.exists() else None
    if previous == command and metrics_file.exists():
        return runs.read_json(metrics_file)
    if metrics_file.exists():
        metrics_file.unlink()  # a different best: its old result must not be reused
    return None


def _completed_trials(tuner) -> int:
    return sum(1 for t in tuner.oracle.trials.values() if t.status == "COMPLETED")
