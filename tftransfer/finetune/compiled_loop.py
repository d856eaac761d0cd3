"""Fine-tuning on cached features as compiled multi-epoch calls instead of ``fit()``.

With the feature cache, an epoch at small N is one or a few SGD steps on a Dense head (or
the last stage) over a few hundred cached feature vectors: far less work than what
``fit()`` spends per epoch (callbacks, logs, iterator bookkeeping). The replication's head
cells are 300-2,000 epochs, so that overhead was most of a sweep's time.

``fit_compiled`` runs the same ``train_step`` of the same trainer on the same batches in the
same order (the one ``data.epoch_batches`` stream), with the same step-indexed learning
rate, so it gives ``fit()``'s result to float tolerance (``tests/compiled_loop_test.py``).
Features held in memory come as ``IndexedBatches`` (the tensors and ``data.epoch_order``:
the stream's batches gathered in the graph, where a tf.data pipeline's per-epoch shuffle
cost more than a head's training). When nothing has to happen between epochs (no
checkpoint, no progress lines) and the curve's set is in memory too, the whole schedule is
one ``tf.function`` call with the curve evaluated inside it (but for a last point on the
final test set, evaluated once after the call); otherwise one call per stretch of epochs
between two curve points. It writes the same ``history.csv`` columns
(``seconds`` is then the call's time divided evenly over its epochs).

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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tensorflow as tf

from tftransfer.errors import UserError
from tftransfer.finetune.feature_store import evaluation_batch_size
from tftransfer.runs import write_csv_atomic

# Epochs per call when no curve point ends a stretch earlier (eval_every 0): progress lines.
_LONGEST_STRETCH = 100
# Epochs of at most this many steps have their steps traced one after another: an inner loop
# of one step per epoch (a head at N <= batch size) made the call 1.36x slower (0.223 s
# against 0.164 s for 2,000 epochs, bench/compiled_loop_parts.py). Longer epochs loop.
_UNROLLED_STEPS = 4
# The trainer attribute that holds its traced functions: a sweep reuses one trainer for many
# runs (transfer.RunCache), and tracing train_step again for each run would cost more than a
# head-only run itself. On the trainer, not in a module-level table keyed by it, so that a
# trainer the cache drops is freed with them (the functions refer to their trainer).


@dataclass
class Start:
    """Where a resumed run starts: after ``epoch`` epochs, with their history ``rows`` and
    test-curve points ``curve``."""

    epoch: int = 0
    rows: list[dict] = field(default_factory=list)
    curve: dict[int, float] = field(default_factory=dict)


@dataclass
class CompiledResult:
    """What ``transfer.EvaluateEvery`` gives after ``fit()``: the curve and the final result;
    and the final evaluation's predicted classes (``transfer_result.per_class_accuracy``
    then needs no second pass over the test set)."""

    curve: dict[int, float] = field(default_factory=dict)
    final: dict = field(default_factory=dict)
    predictions: np.ndarray | None = None


@dataclass(frozen=True)
class IndexedBatches:
    """Training batches held as tensors, for epochs ``first_epoch`` on: batch j of epoch
    ``first_epoch + e`` is ``features[order[e * n + j * batch_size : min(e * n + (j + 1) *
    batch_size, (e + 1) * n)]]`` (and its labels), n the number of examples:
    ``data.epoch_order``'s layout, so the same batches as ``data.epoch_batches`` over the
    same examples."""

    features: tf.Tensor
    labels: tf.Tensor
    order: tf.Tensor
    batch_size: int
    first_epoch: int = 0


def curve_epochs(epochs: int, every: int) -> list[int]:
    """The epochs (1-based) after which the test curve is measured: every ``every``-th and
    the last one (``EvaluateEvery``'s points)."""
    points = list(range(every, epochs + 1, every)) if every else []
    return points if points and points[-1] == epochs else points + [epochs]


def fit_compiled(trainer, train_ds, epochs: int, steps_per_epoch: int, eval_every: int,
                 curve_set, test_set, history_file: Path, verbose: bool,
                 start: Start | None = None, on_stretch=None,
                 functions: dict | None = None) -> CompiledResult:
    """Trains ``trainer`` for ``epochs`` epochs of ``steps_per_epoch`` batches of
    ``train_ds`` and measures the test curve on ``curve_set`` at ``curve_epochs``, the final
    result on ``test_set`` (each a (features, labels) pair of tensors, or a dataset of
    such batches for features streamed from disk); see the module docstring.

    Args:
      start: resume after ``start.epoch`` epochs (None: from the beginning).
      on_stretch: optional ``fn(epochs_done, rows, curve)`` after each stretch.
      functions: the caller's store of this trainer's traced functions (a network's
        ``compiled_functions``), kept across its runs so that they are traced once; None:
        traced for this call only.

    Raises:
      UserError: when the training loss becomes non-finite (as ``fit()``'s NaN guard; in
        the one-call schedule, after the call: a diverged run costs its whole schedule).
    """
    start = start or Start()
    if isinstance(train_ds, IndexedBatches) and train_ds.first_epoch != start.epoch:
        raise ValueError(f"the batches start at epoch {train_ds.first_epoch}, the run at "
                         f"{start.epoch}")
    traced = _functions(trainer, steps_per_epoch, {} if functions is None else functions)
    evaluate = traced["evaluate"]
    result, rows, done = CompiledResult(dict(start.curve)), list(start.rows), start.epoch
    points = set(curve_epochs(epochs, eval_every))
    predictions = None
    if on_stretch is None and not verbose and _one_call_possible(train_ds, curve_set):
        # Nothing to do between stretches: one call, the curve evaluated inside it (a call
        # per curve point cost more than the training at the replication's every 5 epochs),
        # but for a last point on the final test set: that evaluation is made once, after.
        last_after = test_set is curve_set and done < epochs
        _train_in_one_call(traced["schedule"], train_ds, curve_set,
                           points - {epochs} if last_after else points, epochs, start, rows,
                           result.curve)
        done = epochs
        if last_after:
            predictions = _measure_point(evaluate, curve_set, rows[-1], result.curve)
    stretch = _stretch_runner(traced, train_ds)
    for end in (e for e in _stretch_ends(points, epochs) if e > done):
        began = time.time()
        losses, accuracies, rates = (t.numpy() for t in stretch(done, end - done))
        rows += _history_rows(done, (time.time() - began) / (end - done), losses, accuracies,
                              rates)
        _stop_if_not_finite(rows[done:])
        done = end
        if end in points:
            predictions = _measure_point(evaluate, curve_set, rows[-1], result.curve)
        if on_stretch is not None:
            on_stretch(done, rows, result.curve)
        if verbose:
            _print_progress(rows[-1], epochs)
    if test_set is curve_set and "test_accuracy" in rows[-1]:  # the last point was on it
        accuracy, loss = rows[-1]["test_accuracy"], rows[-1]["test_loss"]
        if predictions is None:  # resumed after the last epoch: no evaluation made yet
            predictions = evaluate(test_set)[2]
    else:
        accuracy, loss, predictions = evaluate(test_set)
    result.final = {"test_accuracy": float(accuracy), "test_loss": float(loss)}
    result.predictions = np.asarray(predictions)
    write_csv_atomic(history_file, rows)  # callbacks.HistoryCSV's columns and order
    return result


def _measure_point(evaluate, curve_set, row: dict, curve: dict):
    """The curve point after ``row``'s epoch, into the row and ``curve``; returns the
    evaluation's predicted classes."""
    accuracy, loss, predictions = evaluate(curve_set)
    row.update(test_accuracy=float(accuracy), test_loss=float(loss))
    curve[row["epoch"]] = float(accuracy)
    return predictions


def _one_call_possible(train_ds, curve_set) -> bool:
    """Whether the whole schedule fits one compiled call: training batches and the curve's
    set both held in memory as tensors."""
    return isinstance(train_ds, IndexedBatches) and isinstance(curve_set, tuple)


def _train_in_one_call(run, batches: "IndexedBatches", curve_set, points: set[int],
                       epochs: int, start: Start, rows: list, curve: dict) -> None:
    """Epochs ``start.epoch + 1 .. epochs`` in one call of the schedule function, appending
    their history rows (``seconds``: the call's time over its epochs) and curve points."""
    first = start.epoch
    if first >= epochs:
        return
    is_point = tf.constant([epoch in points for epoch in range(first + 1, epochs + 1)])
    began = time.time()
    outputs = [t.numpy() for t in run(batches.features, batches.labels, batches.order,
                                      tf.constant(batches.batch_size, tf.int64), is_point,
                                      *curve_set)]
    new_rows = _history_rows(first, (time.time() - began) / (epochs - first), *outputs[:3])
    for row, test_accuracy, test_loss in zip(new_rows, *outputs[3:]):
        if row["epoch"] in points:
            row.update(test_accuracy=float(test_accuracy), test_loss=float(test_loss))
            curve[row["epoch"]] = float(test_accuracy)
    rows += new_rows
    _stop_if_not_finite(rows[first:])


def _history_rows(done: int, seconds: float, losses, accuracies, rates) -> list[dict]:
    """``history.csv`` rows of the epochs after ``done``, ``seconds`` each (the call's time
    divided evenly)."""
    return [{"epoch": done + offset + 1, "seconds": round(seconds, 5),
             "accuracy": float(accuracy), "loss": float(loss), "learning_rate": float(rate)}
            for offset, (loss, accuracy, rate) in enumerate(zip(losses, accuracies, rates))]


def _stretch_ends(points: set[int], epochs: int) -> list[int]:
    """The last epoch of each compiled call: every curve point, and at most
    ``_LONGEST_STRETCH`` epochs apart."""
    return sorted(points | set(range(_LONGEST_STRETCH, epochs, _LONGEST_STRETCH)))


def _functions(trainer, steps_per_epoch: int, per_trainer: dict) -> dict:
    """The traced functions of ``trainer`` for ``steps_per_epoch``, from (or added to) its
    owner's store ``per_trainer``: the stretch over an ``iterator`` or over ``indexed``
    batches, the one-call ``schedule``, and ``evaluate`` (a set -> accuracy, loss, predicted
    classes)."""
    if steps_per_epoch not in per_trainer:
        on_tensors, on_batches = _evaluation_function(trainer), _streamed_evaluation(trainer)

        def evaluate(evaluation_set):
            if isinstance(evaluation_set, tf.data.Dataset):
                return on_batches(evaluation_set)
            return on_tensors(*evaluation_set)
        per_trainer[steps_per_epoch] = {
            "iterator": _stretch_function(trainer, steps_per_epoch),
            "indexed": _indexed_stretch_function(trainer, steps_per_epoch),
            "schedule": _schedule_function(trainer, steps_per_epoch),
            "evaluate": evaluate}
    return per_trainer[steps_per_epoch]


def _stretch_runner(functions: dict, train_ds):
    """``fn(epochs_done, n)``: the next n epochs of ``train_ds`` (a dataset whose stream
    starts where the run does, or ``IndexedBatches``), with the trainer's traced
    ``functions``."""
    if isinstance(train_ds, IndexedBatches):
        run = functions["indexed"]
        return lambda done, n: run(train_ds.features, train_ds.labels, train_ds.order,
                                   tf.constant(done - train_ds.first_epoch, tf.int64),
                                   tf.constant(n), tf.constant(train_ds.batch_size, tf.int64))
    iterator = iter(train_ds)
    return lambda done, n: functions["iterator"](iterator, tf.constant(n))


def _epochs(trainer, steps_per_epoch: int, n, batch_of, test_after=None):
    """(loss[n], accuracy[n], learning_rate[n]) of n epochs of ``trainer.train_step`` on
    ``batch_of(epoch, step)``, the trackers reset at each epoch's start as ``fit()`` does
    (traced inside the stretch functions). ``test_after(epoch)``: (test accuracy, test loss)
    after that epoch, then returned too as two more [n] arrays."""
    trackers = (trainer.loss_tracker, trainer.accuracy_tracker)
    arrays = [tf.TensorArray(tf.float32, size=n) for _ in range(5 if test_after else 3)]
    for epoch in tf.range(n):
        for tracker in trackers:
            tracker.reset_state()
        rate = tf.cast(trainer.optimizer.learning_rate, tf.float32)
        unrolled = steps_per_epoch <= _UNROLLED_STEPS
        for step in range(steps_per_epoch) if unrolled else tf.range(steps_per_epoch):
            trainer.train_step(batch_of(epoch, step))
        values = [trackers[0].result(), trackers[1].result(), rate]
        if test_after:
            values += list(test_after(epoch))
        arrays = [array.write(epoch, value) for array, value in zip(arrays, values)]
    return tuple(array.stack() for array in arrays)


def _stretch_function(trainer, steps_per_epoch: int):
    """A tf.function ``(iterator, n)``: ``_epochs`` on the iterator's next batches."""
    @tf.function
    def run(iterator, n):
        return _epochs(trainer, steps_per_epoch, n, lambda epoch, step: next(iterator))
    return run


def _indexed_batch(batches_and_order, first, batch_size):
    """``batch_of(epoch, step)`` over ``IndexedBatches``' (features, labels, order) tensors,
    the epochs counted from the layout's epoch ``first``."""
    features, labels, order = batches_and_order
    count = tf.shape(features, out_type=tf.int64)[0]

    def batch_of(epoch, step):  # int64: N x epochs may pass 2**31 positions
        epoch_start = (first + tf.cast(epoch, tf.int64)) * count
        begin = epoch_start + tf.cast(step, tf.int64) * batch_size
        positions = order[begin:tf.minimum(begin + batch_size, epoch_start + count)]
        return tf.gather(features, positions), tf.gather(labels, positions)
    return batch_of


def _schedule_function(trainer, steps_per_epoch: int):
    """A tf.function ``(features, labels, order, batch_size, is_point, curve_x, curve_y)``:
    ``_epochs`` over all of ``IndexedBatches``' epochs, the curve set evaluated after the
    epochs where ``is_point`` (NaN elsewhere)."""
    @tf.function(reduce_retracing=True)
    def run(features, labels, order, batch_size, is_point, curve_x, curve_y):
        def test_after(epoch):
            if is_point[epoch]:
                return _evaluate_tensors(trainer, curve_x, curve_y, predictions=False)
            return tf.constant(math.nan), tf.constant(math.nan)
        return _epochs(trainer, steps_per_epoch, tf.shape(is_point)[0],
                       _indexed_batch((features, labels, order), tf.constant(0, tf.int64),
                                      batch_size), test_after)
    return run


def _indexed_stretch_function(trainer, steps_per_epoch: int):
    """A tf.function ``(features, labels, order, first, n, batch_size)``: ``_epochs`` on the
    batches of ``IndexedBatches`` from its epoch ``first`` on, gathered from the tensors."""
    @tf.function(reduce_retracing=True)  # N and the number of epochs vary within a sweep
    def run(features, labels, order, first, n, batch_size):
        return _epochs(trainer, steps_per_epoch, n,
                       _indexed_batch((features, labels, order), first, batch_size))
    return run


def _evaluation_function(trainer):
    """A tf.function ``(features, labels) -> (accuracy, mean cross-entropy, predicted
    classes)`` with the model in inference mode: what ``evaluate()`` reports through the
    trainer's ``test_step``, on tensors held in memory (a tf.data pass per curve point cost
    more than the evaluation itself)."""
    @tf.function
    def evaluate(features, labels):
        return _evaluate_tensors(trainer, features, labels)
    return evaluate


def _evaluate_tensors(trainer, features, labels, predictions: bool = True):
    """(accuracy, mean cross-entropy[, predicted classes]) of tensors held in memory, traced
    inside ``_evaluation_function`` or the schedule function, in batches of
    ``feature_store.evaluation_batch_size`` examples: one batch without a loop when the set
    fits (a loop of one iteration per curve point cost more than the evaluation itself)."""
    count = tf.shape(features)[0]
    row = features.shape[1:].num_elements()
    batch_size = evaluation_batch_size(row * features.dtype.size) if row else 256

    def in_batches():
        correct, total = tf.constant(0.0), tf.constant(0.0)
        predicted = tf.TensorArray(tf.int64, size=0, dynamic_size=True, infer_shape=False,
                                   element_shape=tf.TensorShape([None]))
        for start in tf.range(0, count, batch_size):
            batch_correct, batch_total, batch_predicted = _batch_sums(
                trainer, features[start:start + batch_size], labels[start:start + batch_size])
            correct += batch_correct
            total += batch_total
            if predictions:  # not inside the schedule: its curve points keep none
                predicted = predicted.write(predicted.size(), batch_predicted)
        return correct, total, (predicted.concat() if predictions else tf.zeros([0], tf.int64))

    correct, total, predicted = tf.cond(
        count <= batch_size, lambda: _batch_sums(trainer, features, labels), in_batches)
    accuracy, loss = correct / tf.cast(count, tf.float32), total / tf.cast(count, tf.float32)
    return (accuracy, loss, predicted) if predictions else (accuracy, loss)


def _streamed_evaluation(trainer):
    """``_evaluation_function`` over a dataset of (features, labels) batches (features
    that did not fit in memory): the same batches summed in the same order, so the same
    result as on tensors."""
    @tf.function
    def evaluate(dataset):
        count, correct, total = tf.constant(0), tf.constant(0.0), tf.constant(0.0)
        predicted = tf.TensorArray(tf.int64, size=0, dynamic_size=True, infer_shape=False,
                                   element_shape=tf.TensorShape([None]))
        for features, labels in dataset:
            batch_correct, batch_total, batch_predicted = _batch_sums(trainer, features, labels)
            correct += batch_correct
            total += batch_total
            count += tf.shape(features)[0]
            predicted = predicted.write(predicted.size(), batch_predicted)
        return (correct / tf.cast(count, tf.float32), total / tf.cast(count, tf.float32),
                predicted.concat())
    return evaluate


def _batch_sums(trainer, features, labels):
    """(correct predictions, summed cross-entropy, predicted classes) of one batch, in
    inference mode."""
    logits = tf.cast(trainer(features, training=False), tf.float32)
    y = tf.cast(tf.reshape(labels, [-1]), tf.int64)
    predicted = tf.argmax(logits, -1)
    correct = tf.reduce_sum(tf.cast(tf.equal(predicted, y), tf.float32))
    total = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
    return correct, total, predicted


def _stop_if_not_finite(rows: list[dict]) -> None:
    bad = next((row["epoch"] for row in rows if not math.isfinite(row["loss"])), None)
    if bad is not None:
        raise UserError(f"Fine-tuning diverged: the training loss became NaN at epoch {bad}; "
                        f"lower the learning rate or check the data.")


def _print_progress(row: dict, epochs: int) -> None:
    test = (f" - test_accuracy: {row['test_accuracy']:.4f}" if "test_accuracy" in row else "")
    print(f"Epoch {row['epoch']}/{epochs} - loss: {row['loss']:.4f} - accuracy: "
          f"{row['accuracy']:.4f}{test}", file=sys.stderr)
