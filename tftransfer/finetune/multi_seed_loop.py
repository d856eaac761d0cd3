"""K seeds of one fine-tuning cell trained by one compiled loop, each as it trains alone.

The seeds of a cell share the source, the frozen trunk's cached features and the schedule;
their training images, head draw and batch order differ. Each seed keeps a network of its
own (unfrozen blocks, BatchNorm, head, optimizer state), and one traced function steps all
of them: at every step seed k takes its own batch and makes its own update with the ops of
its single run (``compiled_loop``'s batches, ``train_step`` and evaluation sums), so each
seed ends where it ends alone, to float tolerance; the K updates share no variable, so
TensorFlow may run them side by side. The curve and final evaluations read each batch of
the shared test features once and run the K networks on it.

As ``compiled_loop.fit_compiled``: with every seed's training batches and the curve's set
in memory, the whole schedule is one call (the curve inside it, but for a last point on the
final test set, evaluated once after it); otherwise one call per stretch between curve
points, each seed's batches gathered from its tensors or read from its stream of features on
disk. The ``history.csv`` columns are the single run's; ``seconds`` is the call's time
divided evenly over its epochs and seeds. A seed whose loss becomes non-finite does not stop
the others: its result is the ``UserError`` its single run raises.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from tftransfer.errors import UserError
# The single loop's own pieces (its batch gather, step unrolling, evaluation sums, history
# rows and divergence check), used on purpose: a seed must run exactly its single run's ops.
from tftransfer.finetune import compiled_loop
from tftransfer.finetune.compiled_loop import CompiledResult, IndexedBatches, curve_epochs
from tftransfer.finetune.feature_store import evaluation_batch_size
from tftransfer.runs import write_csv_atomic


def fit_seeds(trainers: list, train_sets: list, epochs: int, steps_per_epoch: int,
              eval_every: int, curve_set, test_set, history_files: list[Path],
              functions: dict | None = None) -> list:
    """Trains each of ``trainers`` for ``epochs`` epochs on its own training batches and
    measures their test curves and final results; see the module docstring.

    Args:
      trainers: the seeds' compiled trainers (one network each).
      train_sets: each seed's batches from epoch 0 (``compiled_loop.IndexedBatches``, or a
        dataset of (features, labels) batches streamed from disk).
      epochs, steps_per_epoch, eval_every: the schedule every seed shares.
      curve_set, test_set: (features, labels) tensors or a dataset of such batches, shared
        by the seeds (``test_set is curve_set`` when the curve uses every test image).
      history_files: each seed's ``history.csv``, written when the seed did not diverge.
      functions: the caller's store of these trainers' traced functions, kept across groups
        of seeds so that they are traced once; None: traced for this call only.

    Returns:
      Per seed, a ``compiled_loop.CompiledResult``, or the ``UserError`` of a diverged run.
    """
    traced = _functions(trainers, steps_per_epoch, {} if functions is None else functions)
    rows, curves = [[] for _ in trainers], [{} for _ in trainers]
    points = set(curve_epochs(epochs, eval_every))
    sources = [_source(train_set) for train_set in train_sets]
    predictions = None
    if all(isinstance(t, IndexedBatches) for t in train_sets) and isinstance(curve_set, tuple):
        last_after = test_set is curve_set
        inner = points - {epochs} if last_after else points
        _train(traced["train"], sources, 0, epochs, rows, curves, (inner, curve_set))
        if last_after:
            predictions = _measure_points(traced["evaluate"], curve_set, rows, curves)
    else:
        done = 0
        for end in compiled_loop._stretch_ends(points, epochs):
            _train(traced["train"], sources, done, end, rows, curves)
            done = end
            if end in points:
                predictions = _measure_points(traced["evaluate"], curve_set, rows, curves)
    if test_set is curve_set:
        finals = [(seed_rows[-1]["test_accuracy"], seed_rows[-1]["test_loss"])
                  for seed_rows in rows]
    else:
        evaluated = traced["evaluate"](test_set)
        finals = [(accuracy, loss) for accuracy, loss, _ in evaluated]
        predictions = [seed_predictions for _, _, seed_predictions in evaluated]
    return [_seed_result(*parts) for parts in zip(rows, curves, finals, predictions,
                                                  history_files)]


def _source(train_set):
    """What the traced function takes for one seed's batches: the ``IndexedBatches``
    tensors (features, labels, order, batch size), or an iterator over its stream."""
    if isinstance(train_set, IndexedBatches):
        if train_set.first_epoch:
            raise ValueError("seeds trained together start at epoch 0")
        return (train_set.features, train_set.labels, train_set.order,
                tf.constant(train_set.batch_size, tf.int64))
    return iter(train_set)


def _train(run, sources: list, done: int, end: int, rows: list, curves: list,
           schedule: tuple | None = None) -> None:
    """Epochs ``done + 1 .. end`` of every seed in one call, their history rows appended;
    ``schedule``: (the epochs of curve points, the curve set), measured inside the call."""
    points, curve_set = schedule or (set(), None)
    is_point = (tf.constant([epoch in points for epoch in range(done + 1, end + 1)])
                if schedule else None)
    began = time.time()
    outputs = run(sources, tf.constant(done, tf.int64), tf.constant(end - done), is_point,
                  curve_set)
    seconds = (time.time() - began) / ((end - done) * len(sources))
    for seed_rows, curve, seed_outputs in zip(rows, curves, outputs):
        values = [t.numpy() for t in seed_outputs]
        new_rows = compiled_loop._history_rows(done, seconds, *values[:3])
        for offset, row in enumerate(new_rows):
            if row["epoch"] in points:
                accuracy, loss = (float(v[offset]) for v in values[3:])
                row.update(test_accuracy=accuracy, test_loss=loss)
                curve[row["epoch"]] = accuracy
        seed_rows += new_rows


def _measure_points(evaluate, curve_set, rows: list, curves: list) -> list:
    """Every seed's curve point after its last row's epoch, into the row and its curve;
    returns the seeds' predicted classes."""
    predictions = []
    for seed_rows, curve, (accuracy, loss, predicted) in zip(rows, curves, evaluate(curve_set)):
        seed_rows[-1].update(test_accuracy=float(accuracy), test_loss=float(loss))
        curve[seed_rows[-1]["epoch"]] = float(accuracy)
        predictions.append(predicted)
    return predictions


def _seed_result(rows: list, curve: dict, final: tuple, predictions, history_file: Path):
    """One seed's ``CompiledResult`` with its ``history.csv`` written, or the ``UserError``
    its single run raises when its loss became non-finite (no history then, as alone)."""
    try:
        compiled_loop._stop_if_not_finite(rows)
    except UserError as error:
        return error
    write_csv_atomic(history_file, rows)
    accuracy, loss = final
    return CompiledResult(curve, {"test_accuracy": float(accuracy), "test_loss": float(loss)},
                          np.asarray(predictions))


def _functions(trainers: list, steps_per_epoch: int, store: dict) -> dict:
    """The traced ``train`` and ``evaluate`` functions of ``trainers`` for
    ``steps_per_epoch``, from (or added to) ``store``."""
    key = (len(trainers), steps_per_epoch)
    if key not in store:
        on_tensors, on_batches = _evaluation_function(trainers), _streamed_evaluation(trainers)

        def evaluate(evaluation_set):
            if isinstance(evaluation_set, tf.data.Dataset):
                return [tuple(t.numpy() for t in seed) for seed in on_batches(evaluation_set)]
            return [tuple(t.numpy() for t in seed) for seed in on_tensors(*evaluation_set)]
        store[key] = {"train": _training_function(trainers, steps_per_epoch),
                      "evaluate": evaluate}
    return store[key]


def _training_function(trainers: list, steps_per_epoch: int):
    """A tf.function ``(sources, first, n, is_point, curve_set)``: per seed, (loss[n],
    accuracy[n], learning_rate[n]) of epochs ``first + 1 .. first + n`` and, with a curve
    set, its (test accuracy[n], test loss[n]) after the epochs where ``is_point`` (NaN
    elsewhere)."""
    @tf.function(reduce_retracing=True)  # N and the number of epochs vary within a sweep
    def run(sources, first, n, is_point, curve_set):
        batch_ofs = [_batch_of(source, first) for source in sources]
        test_after = (_curve_points(trainers, is_point, curve_set) if curve_set is not None
                      else None)
        return _epochs(trainers, steps_per_epoch, n, batch_ofs, test_after)
    return run


def _curve_points(trainers: list, is_point, curve_set):
    """``test_after(epoch)``: every seed's (test accuracy, test loss) on ``curve_set``
    after the epochs where ``is_point``, (NaN, NaN) after the others."""
    def test_after(epoch):
        if is_point[epoch]:
            return _evaluate_tensors(trainers, *curve_set, predictions=False)
        return [(tf.constant(math.nan), tf.constant(math.nan)) for _ in trainers]
    return test_after


def _batch_of(source, first):
    """``batch_of(epoch, step)`` of one seed: gathered from its tensors, epochs counted from
    ``first``, or the next batch of its iterator."""
    if isinstance(source, tuple):
        features, labels, order, batch_size = source
        return compiled_loop._indexed_batch((features, labels, order), first, batch_size)
    return lambda epoch, step: next(source)


def _epochs(trainers: list, steps_per_epoch: int, n, batch_ofs: list, test_after=None):
    """``compiled_loop._epochs`` for several trainers: each epoch's trackers reset and rate
    read, then its steps, seed after seed in each, then each seed's results (and
    ``test_after(epoch)``'s per-seed pairs); returns per seed the [n] arrays."""
    width = 5 if test_after else 3
    arrays = [[tf.TensorArray(tf.float32, size=n) for _ in range(width)] for _ in trainers]
    for epoch in tf.range(n):
        rates = []
        for trainer in trainers:
            trainer.loss_tracker.reset_state()
            trainer.accuracy_tracker.reset_state()
            rates.append(tf.cast(trainer.optimizer.learning_rate, tf.float32))
        unrolled = steps_per_epoch <= compiled_loop._UNROLLED_STEPS
        for step in range(steps_per_epoch) if unrolled else tf.range(steps_per_epoch):
            for trainer, batch_of in zip(trainers, batch_ofs):
                trainer.train_step(batch_of(epoch, step))
        tests = test_after(epoch) if test_after else [()] * len(trainers)
        arrays = [[array.write(epoch, value) for array, value in zip(
            seed_arrays, [trainer.loss_tracker.result(), trainer.accuracy_tracker.result(),
                          rate, *test])]
            for seed_arrays, trainer, rate, test in zip(arrays, trainers, rates, tests)]
    return [tuple(array.stack() for array in seed_arrays) for seed_arrays in arrays]


def _evaluation_function(trainers: list):
    """A tf.function ``(features, labels)`` -> per seed (accuracy, mean cross-entropy,
    predicted classes), on tensors held in memory."""
    @tf.function
    def evaluate(features, labels):
        return _evaluate_tensors(trainers, features, labels)
    return evaluate


def _evaluate_tensors(trainers: list, features, labels, predictions: bool = True) -> list:
    """``compiled_loop._evaluate_tensors`` for several trainers: the same batches, each
    sliced once and run through every seed's network, each seed's sums in the same order."""
    count = tf.shape(features)[0]
    row = features.shape[1:].num_elements()
    batch_size = evaluation_batch_size(row * features.dtype.size) if row else 256

    def one_batch():
        return [compiled_loop._batch_sums(trainer, features, labels) for trainer in trainers]

    def in_batches():
        sums = [(tf.constant(0.0), tf.constant(0.0)) for _ in trainers]
        predicted = [_predictions_array() for _ in trainers]
        for start in tf.range(0, count, batch_size):
            x, y = features[start:start + batch_size], labels[start:start + batch_size]
            batch = [compiled_loop._batch_sums(trainer, x, y) for trainer in trainers]
            sums = [(correct + c, total + t) for (correct, total), (c, t, _) in zip(sums, batch)]
            if predictions:  # not inside the schedule: its curve points keep none
                predicted = [array.write(array.size(), p)
                             for array, (_, _, p) in zip(predicted, batch)]
        return [(correct, total, array.concat() if predictions else tf.zeros([0], tf.int64))
                for (correct, total), array in zip(sums, predicted)]

    outcomes = tf.cond(count <= batch_size, one_batch, in_batches)
    size = tf.cast(count, tf.float32)
    return [(correct / size, total / size, predicted) if predictions
            else (correct / size, total / size) for correct, total, predicted in outcomes]


def _streamed_evaluation(trainers: list):
    """``_evaluation_function`` over a dataset of (features, labels) batches (features on
    disk): each batch read once, every seed's sums in the same order as alone."""
    @tf.function
    def evaluate(dataset):
        # Tuples, not lists, as the loop's state: tf.data takes a list for one tensor.
        count = tf.constant(0)
        sums = tuple([(tf.constant(0.0), tf.constant(0.0)) for _ in trainers])
        predicted = tuple([_predictions_array() for _ in trainers])
        for features, labels in dataset:
            batch = [compiled_loop._batch_sums(trainer, features, labels) for trainer in trainers]
            sums = tuple([(correct + c, total + t)
                          for (correct, total), (c, t, _) in zip(sums, batch)])
            predicted = tuple([array.write(array.size(), p)
                               for array, (_, _, p) in zip(predicted, batch)])
            count += tf.shape(features)[0]
        size = tf.cast(count, tf.float32)
        return [(correct / size, total / size, array.concat())
                for (correct, total), array in zip(sums, predicted)]
    return evaluate


def _predictions_array() -> tf.TensorArray:
    return tf.TensorArray(tf.int64, size=0, dynamic_size=True, infer_shape=False,
                          element_shape=tf.TensorShape([None]))
