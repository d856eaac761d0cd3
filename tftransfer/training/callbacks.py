"""Keras callbacks for run records."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import h5py
import keras
import numpy as np

from tftransfer import runs
from tftransfer.errors import UserError

# The HDF5 attribute of a checkpoint's weights file that holds its epoch.
EPOCH_ATTRIBUTE = "tftransfer_epoch"


class HistoryCSV(keras.callbacks.Callback):
    """Writes one row per epoch to a CSV that survives interruption and resume.

    Rows are keyed by epoch and the file is rewritten atomically, so a run killed and
    resumed (``fit(initial_epoch=...)`` after ``AtomicBackup.restore``) never has duplicate
    or half rows: the rows kept from the file are those up to the first epoch fit() runs.

    Args:
      path: the CSV file.
      extra: callable ``(epoch, logs) -> dict`` of more columns (e.g. test accuracy).
    """

    def __init__(self, path, extra=None):
        super().__init__()
        self.path = Path(path)
        self.extra = extra
        self.rows: dict[int, dict] = {}
        self._start = None
        self._first_epoch_seen = False

    def on_train_begin(self, logs=None):
        self.rows = {}
        if self.path.exists():
            with open(self.path) as handle:
                for row in csv.DictReader(handle):
                    self.rows[int(row["epoch"])] = row
        self._first_epoch_seen = False

    def on_epoch_begin(self, epoch, logs=None):
        if not self._first_epoch_seen:
            # The first epoch fit() runs is where it resumed (its initial_epoch): rows of
            # later epochs are from a killed run's unfinished future and are dropped.
            self.rows = {e: r for e, r in self.rows.items() if e <= epoch}
            self._first_epoch_seen = True
        self._start = time.time()
        # The schedule is read at the epoch's first step: at its end it already gives the next.
        self._learning_rate = _current_learning_rate(self.model)

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch + 1, "seconds": round(time.time() - self._start, 3)}
        row.update({k: _number(v) for k, v in (logs or {}).items()})
        row["learning_rate"] = self._learning_rate
        if self.extra is not None:
            row.update(self.extra(epoch, logs or {}))
        self.rows[epoch + 1] = row
        self._write()

    def _write(self):
        runs.write_csv_atomic(self.path, [self.rows[epoch] for epoch in sorted(self.rows)])


class StopOnNaN(keras.callbacks.Callback):
    """Stops training when the loss becomes NaN or infinite and remembers the epoch.

    With ``check_weights``, also when a weight does: the logged loss is a mean of losses
    computed before each step's update, so the epoch's last update can make the weights
    non-finite while the loss still reads finite (a one-epoch run would then be saved).
    ``reason`` says which it was: ``"loss"`` or ``"weights"``.
    """

    def __init__(self, check_weights: bool = False):
        super().__init__()
        self.check_weights = check_weights
        self.bad_epoch = None
        self.reason = None

    def on_epoch_end(self, epoch, logs=None):
        if not _is_finite_loss(logs):
            self.reason = "loss"
        elif self.check_weights and not _finite_weights(self.model):
            self.reason = "weights"
        else:
            return
        self.bad_epoch = epoch + 1
        self.model.stop_training = True


def _number(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def _current_learning_rate(model) -> float:
    optimizer = model.optimizer
    learning_rate = optimizer.learning_rate
    return float(keras.ops.convert_to_numpy(learning_rate))


class AtomicBackup(keras.callbacks.BackupAndRestore):
    """``BackupAndRestore`` (per epoch) whose checkpoint a kill or a damaged file cannot
    turn into a silently wrong resume.

    - The weights file holds its own epoch (an HDF5 attribute), so the checkpoint that is
      restored is the one source of truth for where training resumes: code that must know
      the epoch before ``fit()`` (an input pipeline that yields only the remaining epochs)
      calls ``restore`` and gets the epoch of the weights it just loaded.
    - Every file is written to a temporary name, flushed to disk and renamed, so a kill
      leaves each one whole. Kills between the renames can only leave
      ``training_metadata.json`` one epoch behind its weights, which is accepted.
    - ``restore`` falls back to the previous checkpoint (``double_checkpoint``) when the
      latest weights are unreadable, and otherwise stops with a UserError naming the file:
      an empty or truncated metadata file, weights that cannot be read, or metadata that
      disagrees with its weights.
    """

    def __init__(self, backup_dir, **kwargs):
        super().__init__(backup_dir, **kwargs)
        if self.save_freq != "epoch":
            raise ValueError("AtomicBackup checkpoints whole epochs only (save_freq='epoch').")
        self.restored_epoch = None

    def restore(self) -> int:
        """Loads the newest usable checkpoint into the model (``set_model`` first); only the
        first call reads the files.

        Returns:
          The number of finished epochs the restored checkpoint holds (0: none yet).

        Raises:
          UserError: when no usable checkpoint is left or its files disagree.
        """
        if self.restored_epoch is None:
            self.restored_epoch = self._restore()
        return self.restored_epoch

    def on_train_begin(self, logs=None):
        # Loads the weights if ``restore`` was not called yet. Where fit() starts is the
        # caller's: ``fit(initial_epoch=backup.restore())`` (Keras' own BackupAndRestore
        # sets the private ``model._initial_epoch`` instead).
        self.restore()

    def _restore(self) -> int:
        pairs = [(self._weights_path, self._training_metadata_path)]
        if self.double_checkpoint:
            pairs.append((self._prev_weights_path, self._prev_training_metadata_path))
        unreadable = []
        for weights, metadata in pairs:
            if not os.path.exists(weights):
                continue
            try:
                epoch = self._checkpoint_epoch(weights, metadata)
                self._load(weights)
            except (OSError, ValueError) as error:  # h5py: truncated, not HDF5, wrong shapes
                unreadable.append(f"{weights} ({str(error).strip().splitlines()[0]})")
                continue
            if unreadable:
                print(f"resume: {unreadable[0]} is unreadable; resuming from the previous "
                      f"checkpoint (epoch {epoch}) instead.", file=sys.stderr)
            self._write_metadata(self._training_metadata_path, epoch)  # in step with it again
            return epoch
        if unreadable:
            raise self._unusable(f"{' and '.join(unreadable)} cannot be read")
        if os.path.exists(self._training_metadata_path):
            raise self._unusable(f"{self._training_metadata_path} exists but its weights "
                                 f"{self._weights_path} do not")
        return 0

    def _checkpoint_epoch(self, weights: str, metadata: str) -> int:
        """The epoch of a checkpoint: its weights' own, checked against the metadata file;
        the metadata's for a checkpoint written by Keras' BackupAndRestore itself."""
        with h5py.File(weights, "r") as handle:
            stored = handle.attrs.get(EPOCH_ATTRIBUTE)
        recorded = self._metadata_epoch(metadata)
        if stored is None:
            if recorded is None:
                raise self._unusable(f"{weights} does not record its epoch and {metadata} "
                                     f"is missing")
            return recorded
        stored = self._stored_epoch(stored, weights)
        if recorded is not None and recorded not in (stored - 1, stored):
            raise self._unusable(f"{metadata} says epoch {recorded} but {weights} holds "
                                 f"epoch {stored}")
        return stored

    def _stored_epoch(self, stored, weights: str) -> int:
        """The weights file's own epoch attribute, which must be a whole number >= 0 (a
        negative one would make ``fit()`` train extra epochs)."""
        whole = isinstance(stored, (int, np.integer)) and not isinstance(stored, bool)
        if not whole or stored < 0:
            raise self._unusable(f"{weights} records its epoch ({EPOCH_ATTRIBUTE}) as "
                                 f"{stored!r}, not a whole number 0 or more")
        return int(stored)

    def _metadata_epoch(self, path: str) -> int | None:
        if not os.path.exists(path):
            return None
        try:
            epoch = json.loads(Path(path).read_text())["epoch"]
        except (ValueError, KeyError, TypeError, RecursionError):
            epoch = None
        if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
            raise self._unusable(f"{path} is empty or corrupt (no epoch number in it)")
        return epoch

    def _load(self, weights: str) -> None:
        if weights == self._weights_path:
            self._load_weights(weights)
            return
        # Keras loads only files named *.weights.h5: the backup is copied into place,
        # replacing the unreadable latest file only once the copy has loaded.
        with runs.replacing(self._weights_path, suffix=".weights.h5") as tmp:
            shutil.copyfile(weights, tmp)
            self._load_weights(str(tmp))

    def _load_weights(self, path: str) -> None:
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        self.model.load_weights(path)

    def _unusable(self, detail: str) -> UserError:
        return UserError(f"The checkpoint in {self.backup_dir} cannot be resumed: {detail}; "
                         f"restore the file, or delete {self.backup_dir} to train again from "
                         f"epoch 0.")

    def _save_model(self):
        os.makedirs(self.backup_dir, exist_ok=True)
        if self.double_checkpoint:
            for current, previous in ((self._weights_path, self._prev_weights_path),
                                      (self._training_metadata_path,
                                       self._prev_training_metadata_path)):
                if os.path.exists(current):
                    with runs.replacing(previous) as tmp:
                        shutil.copyfile(current, tmp)
        with runs.replacing(self._weights_path, suffix=".weights.h5") as tmp:
            self.model.save_weights(str(tmp), overwrite=True)
            with h5py.File(tmp, "a") as handle:
                handle.attrs[EPOCH_ATTRIBUTE] = self._current_epoch
        self._write_metadata(self._training_metadata_path, self._current_epoch)

    @staticmethod
    def _write_metadata(path: str, epoch: int) -> None:
        # Keras' own format, so that its BackupAndRestore could still read the checkpoint.
        runs.write_text_atomic(path, json.dumps({"epoch": epoch, "batch": 0}))


class BackupUnlessNaN(AtomicBackup):
    """``AtomicBackup`` that never checkpoints an epoch whose loss is NaN or infinite.

    Keras saves at every epoch end, so without this a diverged run would leave NaN weights
    as its resume point: a re-run would continue from them, and a NaN in the last epoch
    would even be finished and saved as the model. The last finite epoch stays the resume
    point instead.
    """

    def on_epoch_end(self, epoch, logs=None):
        # The logged loss is a mean over the epoch's steps: the last step can still have
        # made the weights NaN, so the weights are checked too.
        if _is_finite_loss(logs) and _finite_weights(self.model):
            super().on_epoch_end(epoch, logs)


def _finite_weights(model) -> bool:
    return all(np.isfinite(keras.ops.convert_to_numpy(w)).all() for w in model.weights)


def _is_finite_loss(logs) -> bool:
    loss = (logs or {}).get("loss")
    return loss is None or math.isfinite(float(loss))
