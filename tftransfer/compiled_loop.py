"""Fine-tuning on cached features as compiled multi-epoch calls instead of ``fit()``.

With the feature cache, an epoch at small N is one or a few SGD steps on a Dense head (or
the last stage) over a few hundred cached feature vectors: far less work than what
``fit()`` spends per epoch (callbacks, logs, iterator bookkeeping). The replication's head
cells are 300-2,000 epochs, so that overhead was most of a sweep's time.

``fit_compiled`` runs the same ``train_step`` of the same trainer on the same batches in the
same order (the one ``data.epoch_batches`` stream), with the same step-indexed learning
rate, so it gives ``fit()``'s result to float tolerance (``tests/compiled_loop_test.py``).
It makes one ``tf.function`` call per stretch of epochs between two points of the test
curve, the curve's evaluation included, and writes the same ``history.csv`` columns
(``seconds`` is then the stretch's time divided evenly over its epochs).

Resume: ``start`` continues a run after its first epochs (their history rows and curve
points, the trainer's weights and optimizer already restored, ``train_ds`` starting at the
next epoch); ``on_stretch`` is called at each stretch's end, where a checkpoint is natural
(``checkpoints``): the stretches are the same whether or not a run was resumed, so a
resumed run makes the same calls and ends where an uninterrupted one does.
"""

from __future__ import annotations

import math
import sys
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import tensorflow as tf

from tftransfer.errors import UserError
from tftransfer.runs import write_csv_atomic

# Epochs per call when no curve point ends a stretch earlier (eval_every 0): progress lines.
_LONGEST_STRETCH = 100
# Traced functions per trainer: a sweep reuses one trainer for many runs (transfer.RunCache),
# and tracing train_step again for each run would cost more than a head-only run itself.
_FUNCTIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclass
class Start:
    """Where a resumed run starts: after ``epoch`` epochs, with their history ``rows`` and
    test-curve points ``curve``."""

    epoch: int = 0
    rows: list[dict] = field(default_factory=list)
    curve: dict[int, float] = field(default_factory=dict)


@dataclass
class CompiledResult:
    """What ``transfer.EvaluateEvery`` gives after ``fit()``: the curve and the final result."""

    curve: dict[int, float] = field(default_factory=dict)
    final: dict = field(default_factory=dict)


def curve_epochs(epochs: int, every: int) -> list[int]:
    """The epochs (1-based) after which the test curve is measured: every ``every``-th and
    the last one (``EvaluateEvery``'s points)."""
    points = list(range(every, epochs + 1, every)) if every else []
    return points if points and points[-1] == epochs else points + [epochs]


def fit_compiled(trainer, train_ds, epochs: int, steps_per_epoch: int, eval_every: int,
                 curve_set, test_set, history_file: Path, verbose: bool,
                 start: Start | None = None, on_stretch=None) -> CompiledResult:
    """Trains ``trainer`` for ``epochs`` epochs of ``steps_per_epoch`` batches of
    ``train_ds`` and measures the test curve on ``curve_set`` at ``curve_epochs``, the final
    result on ``test_set`` (each a (features, labels) pair of tensors, or a dataset of
    such batches for features streamed from disk); see the module docstring.

    Args:
      start: resume after ``start.epoch`` epochs (None: from the beginning).
      on_stretch: optional ``fn(epochs_done, rows, curve)`` after each stretch.

    Raises:
      UserError: when the training loss becomes non-finite (as ``fit()``'s NaN guard).
    """
    start = start or Start()
    iterator = iter(train_ds)
    run, evaluate = _functions(trainer, steps_per_epoch)
    result, rows, done = CompiledResult(dict(start.curve)), list(start.rows), start.epoch
    points = set(curve_epochs(epochs, eval_every))
    for end in (e for e in _stretch_ends(points, epochs) if e > done):
        began = time.time()
        losses, accuracies, rates = (t.numpy() for t in run(iterator, tf.constant(end - done)))
        seconds = (time.time() - began) / (end - done)
        for offset, (loss, accuracy, rate) in enumerate(zip(losses, accuracies, rates)):
            rows.append({"epoch": done + offset + 1, "seconds": round(seconds, 5),
                         "accuracy": float(accuracy), "loss": float(loss),
                         "learning_rate": float(rate)})
        _stop_if_not_finite(rows[done:])
        done = end
        if end in points:
            accuracy, loss = (float(v) for v in evaluate(curve_set))
            rows[-1].update(test_accuracy=accuracy, test_loss=loss)
            result.curve[end] = accuracy
        if on_stretch is not None:
            on_stretch(done, rows, result.curve)
        if verbose:
            _print_progress(rows[-1], epochs)
    accuracy, loss = ((rows[-1]["test_accuracy"], rows[-1]["test_loss"])
                      if test_set is curve_set else (float(v) for v in evaluate(test_set)))
    result.final = {"test_accuracy": accuracy, "test_loss": loss}
    write_csv_atomic(history_file, rows)  # callbacks.HistoryCSV's columns and order
    return result


def _stretch_ends(points: set[int], epochs: int) -> list[int]:
    """The last epoch of each compiled call: every curve point, and at most
    ``_LONGEST_STRETCH`` epochs apart."""
    return sorted(points | set(range(_LONGEST_STRETCH, epochs, _LONGEST_STRETCH)))


def _functions(trainer, steps_per_epoch: int):
    """(``_stretch_function``, evaluation of a set) of ``trainer``, traced once."""
    per_trainer = _FUNCTIONS.setdefault(trainer, {})
    if steps_per_epoch not in per_trainer:
        on_tensors, on_batches = _evaluation_function(trainer), _streamed_evaluation(trainer)

        def evaluate(evaluation_set):
            if isinstance(evaluation_set, tf.data.Dataset):
                return on_batches(evaluation_set)
            return on_tensors(*evaluation_set)
        per_trainer[steps_per_epoch] = (_stretch_function(trainer, steps_per_epoch), evaluate)
    return per_trainer[steps_per_epoch]


def _stretch_function(trainer, steps_per_epoch: int):
    """A tf.function ``(iterator, n) -> (loss[n], accuracy[n], learning_rate[n])``: n epochs
    of ``trainer.train_step``, the trackers reset at each epoch's start as ``fit()`` does."""
    trackers = (trainer.loss_tracker, trainer.accuracy_tracker)

    @tf.function
    def run(iterator, n):
        losses = tf.TensorArray(tf.float32, size=n)
        accuracies = tf.TensorArray(tf.float32, size=n)
        rates = tf.TensorArray(tf.float32, size=n)
        for epoch in tf.range(n):
            for tracker in trackers:
                tracker.reset_state()
            rates = rates.write(epoch, tf.cast(trainer.optimizer.learning_rate, tf.float32))
            for _ in tf.range(steps_per_epoch):
                trainer.train_step(next(iterator))
            losses = losses.write(epoch, trackers[0].result())
            accuracies = accuracies.write(epoch, trackers[1].result())
        return losses.stack(), accuracies.stack(), rates.stack()
    return run


def _evaluation_function(trainer, batch_size: int = 256):
    """A tf.function ``(features, labels) -> (accuracy, mean cross-entropy)`` with the model
    in inference mode, ``batch_size`` examples at a time: what ``evaluate()`` reports
    through the trainer's ``test_step``, on tensors held in memory (a tf.data pass per
    curve point cost more than the evaluation itself)."""
    @tf.function
    def evaluate(features, labels):
        count = tf.shape(features)[0]
        correct, total = tf.constant(0.0), tf.constant(0.0)
        for start in tf.range(0, count, batch_size):
            batch_correct, batch_total = _batch_sums(
                trainer, features[start:start + batch_size], labels[start:start + batch_size])
            correct += batch_correct
            total += batch_total
        return correct / tf.cast(count, tf.float32), total / tf.cast(count, tf.float32)
    return evaluate


def _streamed_evaluation(trainer):
    """``_evaluation_function`` over a dataset of (features, labels) batches (features
    that did not fit in memory): the same batches summed in the same order, so the same
    result as on tensors."""
    @tf.function
    def evaluate(dataset):
        count, correct, total = tf.constant(0), tf.constant(0.0), tf.constant(0.0)
        for features, labels in dataset:
            batch_correct, batch_total = _batch_sums(trainer, features, labels)
            correct += batch_correct
            total += batch_total
            count += tf.shape(features)[0]
        return correct / tf.cast(count, tf.float32), total / tf.cast(count, tf.float32)
    return evaluate


def _batch_sums(trainer, features, labels):
    """(correct predictions, summed cross-entropy) of one batch, in inference mode."""
    logits = tf.cast(trainer(features, training=False), tf.float32)
    y = tf.cast(tf.reshape(labels, [-1]), tf.int64)
    correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, -1), y), tf.float32))
    total = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
    return correct, total


def _stop_if_not_finite(rows: list[dict]) -> None:
    bad = next((row["epoch"] for row in rows if not math.isfinite(row["loss"])), None)
    if bad is not None:
        raise UserError(f"Fine-tuning diverged: the training loss became NaN at epoch {bad}; "
                        f"lower the learning rate or check the data.")


def _print_progress(row: dict, epochs: int) -> None:
    test = (f" - test_accuracy: {row['test_accuracy']:.4f}" if "test_accuracy" in row else "")
    print(f"Epoch {row['epoch']}/{epochs} - loss: {row['loss']:.4f} - accuracy: "
          f"{row['accuracy']:.4f}{test}", file=sys.stderr)
