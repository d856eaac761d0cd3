"""Keras callbacks for run records."""

from __future__ import annotations

import csv
import io
import math
import time
from pathlib import Path

import keras
import numpy as np

from tftransfer.runs import write_text_atomic


class HistoryCSV(keras.callbacks.Callback):
    """Writes one row per epoch to a CSV that survives interruption and resume.

    Rows are keyed by epoch and the file is rewritten atomically, so a run killed and
    resumed (``BackupAndRestore``) never has duplicate or half rows.

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

    def on_train_begin(self, logs=None):
        self.rows = {}
        if self.path.exists():
            with open(self.path) as handle:
                for row in csv.DictReader(handle):
                    self.rows[int(row["epoch"])] = row
        first = getattr(self.model, "_initial_epoch", None) or 0
        self.rows = {e: r for e, r in self.rows.items() if e <= first}

    def on_epoch_begin(self, epoch, logs=None):
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
        columns = []
        for row in self.rows.values():
            columns += [c for c in row if c not in columns]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns)
        writer.writeheader()
        for epoch in sorted(self.rows):
            writer.writerow(self.rows[epoch])
        write_text_atomic(self.path, buffer.getvalue())


class StopOnNaN(keras.callbacks.Callback):
    """Stops training when the loss becomes NaN or infinite and remembers the epoch."""

    def __init__(self):
        super().__init__()
        self.bad_epoch = None

    def on_epoch_end(self, epoch, logs=None):
        if not _is_finite_loss(logs):
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


class BackupUnlessNaN(keras.callbacks.BackupAndRestore):
    """``BackupAndRestore`` that never checkpoints an epoch whose loss is NaN or infinite.

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
