"""Loads a fine-tuned run for the influence analysis: its head, objective and features."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from tftransfer.config import recorded_load_options
from tftransfer.errors import UserError
from tftransfer.interpret.influence.math import Head, with_bias_column
from tftransfer.models import architectures


@dataclass(frozen=True)
class RunData:
    """Everything the influence analysis needs from one fine-tuned run.

    Attributes:
      name: the run's label in file names, tables and figures.
      run_dir: where the run lives.
      class_names: the target's class names.
      head: the trained head and its training objective.
      hessian_features: head inputs of the run's whole training subset (H averages
        over all of them: that is the objective the head minimized).
      train_labels: labels of that subset, in the same order.
      n_train: N, how many of them (a prefix) have their influence measured.
      test_features, test_labels: the M test images.
      train_indices, test_indices: where those images are in the target's splits.
      target: the ``data.TargetData`` (to draw the images).
      image_size: the model's input side.
      notes: caveats about the run (augmentation, unfinished training...).
    """

    name: str
    run_dir: str
    class_names: tuple
    head: Head
    hessian_features: np.ndarray
    train_labels: np.ndarray
    n_train: int
    test_features: np.ndarray
    test_labels: np.ndarray
    train_indices: np.ndarray
    test_indices: np.ndarray
    target: object
    image_size: int
    notes: tuple = ()


def head_of(model) -> Head:
    """The classifier layer of a fine-tuned model (``architectures.head_name``: its
    architecture's head, else its last layer) as a ``Head`` (objective not set)."""
    import keras

    layer = model.get_layer(architectures.head_name(model))
    linear = layer.get_config().get("activation") in ("linear", None)
    if not isinstance(layer, keras.layers.Dense) or not layer.use_bias or not linear:
        raise UserError(f"The head {layer.name!r} of {model.name!r} is not a linear Dense layer "
                        f"with a bias; influence assumes a softmax-regression head, as "
                        f"`transfer` attaches.")
    kernel, bias = (np.asarray(w, np.float64) for w in layer.get_weights())
    return Head(kernel=kernel, bias=bias)


def head_features(model, dataset) -> np.ndarray:
    """The head's input features of every image in ``dataset`` (``training=False``)."""
    import keras

    trunk = keras.Model(model.inputs, model.get_layer(architectures.head_name(model)).input)
    run = tf.function(lambda x: tf.cast(trunk(x, training=False), tf.float32))
    return np.concatenate([run(images).numpy() for images, _ in dataset]).astype(np.float64)


def check_head_matches_model(model, head: Head, images, features) -> float:
    """Max |model logits - head(features)| on ``images``: a mismatch means the model is
    not trunk -> head -> output, and every score would be silently wrong."""
    logits = tf.cast(model(images, training=False), tf.float64).numpy()
    difference = float(np.max(np.abs(logits - with_bias_column(features) @ head.theta)))
    if difference > 1e-3 * max(1.0, float(np.max(np.abs(logits)))):
        head = architectures.head_name(model)
        raise UserError(f"The model's logits differ from its {head!r} layer applied to its "
                        f"input by {difference:.3g}: {head!r} must be the output layer.")
    return difference


def load_run(run_dir, train_images: int | None, test_images: int, data_dir=None,
             download: bool = True, name: str | None = None) -> RunData:
    """Loads a ``transfer`` run, its head, and the head features of its images.

    Args:
      run_dir: a run directory written by ``python main.py transfer``.
      train_images: N, how many of the run's training images (a prefix of its seeded
        subset) to measure; None: all of them.
      test_images: M, a fixed stratified subset (seed 0) of the test split.
      data_dir: TFDS data directory (default: the one the run used).
      download: let TFDS download a missing dataset.
      name: the run's label (default: the directory name).

    Returns:
      A ``RunData``.
    """
    from tftransfer import data
    from tftransfer.sources import saving

    config = saving.read_config(run_dir)
    resolved = config.get("resolved_config")
    if config.get("kind") != "transfer" or not isinstance(resolved, dict):
        raise UserError(f"{str(run_dir)!r} is not a fine-tuned run directory (its config.json "
                        f"lacks kind 'transfer' and resolved_config); pass the --out of "
                        f"`python main.py transfer`.")
    settings, seed = resolved["data"], resolved.get("seed", 0)
    # The run's own keys, splits and preprocessing: the images it trained and tested on.
    target = data.load(resolved["target"], data_dir or settings.get("data_dir"), download,
                       **recorded_load_options(config))
    run_indices = data.select_subset(target.train.labels, settings.get("train_images"), seed)
    n_train = len(run_indices) if train_images is None else train_images
    if not 1 <= n_train <= len(run_indices):
        raise UserError(f"--train-images {train_images} must be between 1 and the "
                        f"{len(run_indices)} training images of {str(run_dir)!r}.")
    if test_images < 1:
        raise UserError(f"--test-images must be at least 1, got {test_images}.")
    # The prefix of the nested seed-0 order: the same images `transfer --test-images` uses.
    test_indices = data.select_subset(target.test.labels, None, 0)[:test_images]
    model = saving.load_model(run_dir)
    image_size = int(config.get("image_size") or model.inputs[0].shape[1])
    head = _with_objective(head_of(model), resolved)
    label = name or Path(run_dir).name
    print(f"influence: {label}: head features of {len(run_indices)} training and "
          f"{len(test_indices)} test images ...", file=sys.stderr)
    train_ds = data.pipeline(target.train, run_indices, image_size, 256, cache=False)
    hessian_features = head_features(model, train_ds)
    first_images = next(iter(train_ds))[0][:32]
    check_head_matches_model(model, head, first_images, hessian_features[:len(first_images)])
    test_features = head_features(
        model, data.pipeline(target.test, test_indices, image_size, 256, cache=False))
    return RunData(name=label, run_dir=str(run_dir),
                   class_names=tuple(config.get("class_names") or target.class_names),
                   head=head, hessian_features=hessian_features,
                   train_labels=target.train.labels[run_indices], n_train=n_train,
                   test_features=test_features, test_labels=target.test.labels[test_indices],
                   train_indices=run_indices[:n_train], test_indices=test_indices,
                   target=target, image_size=image_size, notes=_caveats(resolved, n_train,
                                                                        len(run_indices)))


def _with_objective(head: Head, resolved: dict) -> Head:
    optim = resolved.get("optim", {})
    # The recipe adds weight_decay / 2 * ||w||^2 over every trainable variable, the head included.
    return Head(kernel=head.kernel, bias=head.bias, l2=float(optim.get("weight_decay", 0.0)),
                label_smoothing=float(optim.get("label_smoothing", 0.0)))


def _caveats(resolved: dict, n_train: int, n_run: int) -> tuple:
    notes = []
    if resolved.get("data", {}).get("augment"):
        notes.append("the run trained on augmented images; influence uses the un-augmented ones")
    if n_train < n_run:
        notes.append(f"influence of the first {n_train} of {n_run} training images; H averages "
                     f"over all {n_run}")
    return tuple(notes)
