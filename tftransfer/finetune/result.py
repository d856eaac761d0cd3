"""The result row of a fine-tuning run: what ``metrics.json`` holds and a sweep appends,
with the per-class test accuracy and a warning when training did not converge."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import tensorflow as tf

from tftransfer import runs
from tftransfer.config import TransferConfig
from tftransfer.finetune.convergence import LossTrend, loss_trend


def result_row(cfg, source, target, indices, evaluator, seconds, out, use_cache):
    """The run's result row: final test accuracy and loss, the paper's variables, the
    protocol fields that differ from the defaults, time, the test curve and the run dir."""
    train_idx, test_idx, curve_idx = indices
    row = {
        "test_accuracy": evaluator.final["test_accuracy"],
        "test_loss": evaluator.final["test_loss"],
        "target": target.name, "source": source.identity["source"],
        "source_attack": source.identity["source_attack"],
        "source_eps": source.identity["source_eps"],
        "train_images": int(len(train_idx)), "test_images": int(len(test_idx)),
        "curve_test_images": int(len(curve_idx)),
        "unfrozen_blocks": cfg.unfrozen_blocks, "epochs": cfg.epochs, "seed": cfg.seed,
        "head_init": cfg.head_init, "frozen_bn": cfg.frozen_bn,
        **protocol_columns(cfg),
        "learning_rate": cfg.optim.learning_rate, "batch_size": cfg.data.batch_size,
        "train_seconds": round(seconds, 2), "images_seen": int(len(train_idx)) * cfg.epochs,
        "feature_cache": use_cache, "git_commit": runs.git_commit(), "run_dir": str(out),
    }
    for epoch, accuracy in sorted(evaluator.curve.items()):
        row[f"test_accuracy_epoch_{epoch}"] = accuracy
    return row


def protocol_columns(cfg: TransferConfig) -> dict:
    """The protocol fields that differ from the defaults the replication's rows were run
    with (so those rows keep their columns): normalisation, subset, augmentation, recipe,
    head scale, downsampling, a head warm-up, a precision other than float32 (the resolved
    one: ``fine_tune`` resolves auto before the row is made)."""
    columns = {}
    if cfg.normalization != "source":
        columns["normalization"] = cfg.normalization
    if cfg.data.subset != "stratified":
        columns["subset"] = cfg.data.subset
    if cfg.data.augment:
        columns["augment"] = cfg.data.augment_policy
    if cfg.recipe:
        columns["recipe"] = cfg.recipe
    if cfg.head_std != 1.0:
        columns["head_std"] = cfg.head_std
    if cfg.data.downsample is not None:
        columns["downsample"] = cfg.data.downsample
    if cfg.head_warmup_epochs:
        columns["head_warmup_epochs"] = cfg.head_warmup_epochs
        columns["unfrozen_lr_scale"] = cfg.unfrozen_lr_scale
    if cfg.precision != "float32":
        columns["precision"] = cfg.precision
    return columns


def training_columns(history_file: Path, sgd_steps: int, num_classes: int
                     ) -> tuple[dict, dict]:
    """The result columns of training (``history.csv``): ``train_accuracy`` and
    ``train_loss`` of the last epoch, the SGD steps made, and ``warning`` when the run did
    not converge; and the convergence decision with its inputs (``metrics.json``'s
    ``convergence``: ``LossTrend.record`` and the chance-level loss)."""
    with open(history_file, newline="") as handle:
        rows = list(csv.DictReader(handle))
    columns = {"train_accuracy": float(rows[-1]["accuracy"]),
               "train_loss": float(rows[-1]["loss"]), "sgd_steps": sgd_steps}
    trend = loss_trend([float(row["loss"]) for row in rows])
    warning = convergence_warning(columns, trend, num_classes)
    if warning:
        columns["warning"] = warning
    record = {**trend.record(), "chance_loss": math.log(num_classes),
              "warned": warning is not None}
    return columns, record


def convergence_warning(columns: dict, trend: LossTrend, num_classes: int) -> str | None:
    """A sentence saying why the run looks unconverged, or None: its training loss was
    still falling at the end (``trend``), or is no lower than a uniform guess's. A run whose
    loss has levelled off is converged, whatever its training accuracy."""
    loss, chance = columns["train_loss"], math.log(num_classes)
    reasons = [trend.describe()] if trend.still_falling else []
    # A loss no lower than chance has learned nothing, whatever its trend (Fashion-MNIST at
    # N = 100 and 10 epochs, 10 SGD steps, ended near chance).
    if loss >= chance:
        reasons.append(f"its training loss {loss:.3g} is no lower than a uniform guess's "
                       f"(ln {num_classes} = {chance:.3g})")
    if not reasons:
        return None
    return (f"not converged: {' and '.join(reasons)} after {columns['sgd_steps']} SGD steps; "
            f"train longer (--steps N, or more --epochs).")


def per_class_accuracy(model, test_set, labels: np.ndarray, class_names,
                       predicted: np.ndarray | None = None) -> dict[str, float]:
    """Test accuracy of each class with test images, by class name.

    Args:
      model: the trained model (the part above the trunk when features are cached).
      test_set: what the final accuracy was measured on: a dataset of (inputs, label)
        batches, or a (features, labels) pair of tensors.
      labels: the test labels, in the order of ``test_set``.
      class_names: the target's class names, by label.
      predicted: the predicted classes when the final evaluation kept them (the compiled
        loop's); else ``model`` predicts ``test_set`` again.
    """
    if predicted is None:
        if isinstance(test_set, tuple):
            test_set = tf.data.Dataset.from_tensor_slices(test_set[0]).batch(256)
        predicted = np.argmax(model.predict(test_set, verbose=0), axis=-1)
    return {str(name): float(np.mean(predicted[labels == label] == label))
            for label, name in enumerate(class_names) if np.any(labels == label)}


def per_class_summary(accuracies: dict[str, float]) -> dict:
    """The row's short form of ``per_class_accuracy``: the worst class and its accuracy, and
    the mean of the per-class accuracies (robust-models-transfer's headline metric for
    pets, flowers, aircraft and caltech: each class counts once, however many test images
    it has)."""
    worst = min(accuracies, key=accuracies.get)
    return {"worst_class": worst, "worst_class_accuracy": accuracies[worst],
            "mean_class_accuracy": float(np.mean(list(accuracies.values())))}
