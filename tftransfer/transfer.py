"""The fine-tuning recipe: a new head on a source network, the last N blocks unfrozen.

``fine_tune(cfg)`` is the one place the recipe lives (``transfer``, ``sweep`` and
``tune`` all call it). When the frozen part of the network sees the same input every
epoch (no augmentation, frozen BatchNorm in inference mode), its output is computed
once (``FeatureCache``) and only the unfrozen part is trained, on the cached
activations: the same result, many times faster.
"""

from __future__ import annotations

import math
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from tftransfer import data, resnet, runs, runtime, saving, sources
from tftransfer.adversarial import AdversarialTrainer
from tftransfer.callbacks import HistoryCSV
from tftransfer.config import TransferConfig, to_dict
from tftransfer.errors import UserError
from tftransfer.optim import make_optimizer

DEFAULT_SOURCE = sources.DEFAULT_SOURCE
HEAD_NAME = "fc"


# ----------------------------------------------------------------------------- source

@dataclass(frozen=True)
class SourceModel:
    """A loaded source network and where it came from."""

    model: keras.Model
    identity: dict = field(default_factory=dict)


def load_source(reference: str | None) -> SourceModel:
    """Loads a source by registered name or path; None loads ``DEFAULT_SOURCE``."""
    reference = reference or DEFAULT_SOURCE
    model = saving.load_model(reference)
    config = saving.read_config(reference)
    registered = sources.get(reference)
    attack = config.get("attack", {}) if isinstance(config.get("attack"), dict) else {}
    identity = {
        "source": reference,
        "source_path": str(saving.resolve_model_path(reference)),
        "source_arch": config.get("arch", model.name),
        "source_dataset": config.get("dataset"),
        "source_attack": registered.attack if registered else attack.get("attack", "none"),
        "source_eps": registered.eps if registered else attack.get("eps", 0.0),
        "source_git_commit": config.get("git_commit"),
    }
    return SourceModel(model, identity)


def with_input_size(model: keras.Model, image_size: int, precision: str | None = None
                    ) -> keras.Model:
    """The same network for ``image_size`` inputs and the ``precision`` dtype policy, weights
    copied; ``model`` itself when both already match.

    ResNets are fully convolutional up to the global pooling, so any size works. A loaded
    model keeps the dtype policy it was saved with, whatever the global policy is, so a
    different ``precision`` also needs this rebuild.
    """
    config = model.get_config()
    layers = config["layers"]
    same_size = model.inputs[0].shape[1] == image_size
    same_policy = precision is None or all(
        _policy_name(layer) == precision for layer in layers[1:-1])
    if same_size and same_policy:
        return model
    for layer in layers:
        if layer["class_name"] == "InputLayer":
            shape = list(layer["config"]["batch_shape"])
            layer["config"]["batch_shape"] = [shape[0], image_size, image_size, shape[3]]
        elif precision is not None and layer is not layers[-1]:
            layer["config"]["dtype"] = precision  # the last layer (the head) stays float32
    rebuilt = keras.Model.from_config(config)
    rebuilt.set_weights(model.get_weights())
    return rebuilt


def _policy_name(layer_config: dict) -> str | None:
    dtype = layer_config["config"].get("dtype")
    if isinstance(dtype, dict):
        return dtype.get("config", {}).get("name")
    return dtype


# ----------------------------------------------------------------------------- head and freezing

def attach_head(source: keras.Model, num_classes: int, head_init: str) -> keras.Model:
    """Replaces the source's last Dense layer by a new ``fc`` head for ``num_classes``.

    ``normal`` is the paper's normal(0, 1) initialization (the default, to reproduce it);
    ``glorot`` is Keras' usual choice and gentler on wide feature vectors.
    """
    last = source.layers[-1]
    if not isinstance(last, keras.layers.Dense):
        raise UserError(f"The source model {source.name!r} does not end in a Dense classifier "
                        f"layer (its last layer is a {type(last).__name__}); tftransfer needs "
                        f"a classifier whose head it can replace.")
    if num_classes < 2:
        raise UserError(f"The target has {num_classes} class; fine-tuning needs at least 2.")
    initializer = (keras.initializers.RandomNormal(0.0, 1.0) if head_init == "normal"
                   else keras.initializers.GlorotUniform())
    head = keras.layers.Dense(num_classes, name=HEAD_NAME, dtype="float32",
                              kernel_initializer=initializer, bias_initializer="zeros")
    features = last.input
    return keras.Model(source.inputs, head(features), name=f"{source.name}_finetuned")


def unfrozen_block_names(model: keras.Model, unfrozen_blocks: int) -> list[str]:
    """The residual blocks fine-tuned for ``unfrozen_blocks`` (counted from the end)."""
    blocks = resnet.residual_block_names(model)
    if unfrozen_blocks == -1:
        return blocks
    if unfrozen_blocks > len(blocks):
        raise UserError(f"--unfrozen-blocks {unfrozen_blocks} is more than the {len(blocks)} "
                        f"residual blocks of {model.name}; use 0..{len(blocks)}, or -1 for all.")
    return blocks[len(blocks) - unfrozen_blocks:] if unfrozen_blocks else []


def freeze(model: keras.Model, unfrozen_blocks: int, frozen_bn: str) -> list[str]:
    """Sets which layers train: the head, the last ``unfrozen_blocks`` blocks (-1: all).

    Frozen BatchNorm layers run in inference mode (``frozen_bn='inference'``, Keras'
    convention) or keep updating their statistics while their scale and offset stay
    fixed (``'train'``, what the paper's PyTorch code did).

    Returns:
      The names of the unfrozen blocks.
    """
    blocks = unfrozen_block_names(model, unfrozen_blocks)
    everything = unfrozen_blocks == -1
    prefixes = tuple(f"{b}." for b in blocks)
    for layer in model.layers:
        trainable = everything or layer.name == HEAD_NAME or layer.name.startswith(prefixes)
        if isinstance(layer, keras.layers.BatchNormalization) and not trainable \
                and frozen_bn == "train":
            layer.trainable = True  # statistics update in training mode ...
            for variable in (layer.gamma, layer.beta):
                variable.trainable = False  # ... but scale and offset stay frozen
        else:
            layer.trainable = trainable
    return blocks


def feature_boundary(model: keras.Model, blocks: list[str]):
    """The tensor where the frozen part ends: the input of the first unfrozen block, or
    the head's input when only the head trains."""
    if not blocks:
        return model.get_layer(HEAD_NAME).input
    first = next(layer for layer in model.layers if layer.name.startswith(f"{blocks[0]}."))
    return first.input


# ----------------------------------------------------------------------------- feature cache

class FeatureCache:
    """Activations of a frozen trunk, computed once per image and reused across runs.

    Keyed by (source, target, split, boundary, image size): a sweep that fine-tunes
    the same source on the same target many times computes each image's features once.
    """

    def __init__(self):
        self._store: dict[tuple, dict[int, np.ndarray]] = {}
        self.computed = 0

    def features(self, key: tuple, trunk: keras.Model, image_set, indices, image_size,
                 batch_size: int = 256) -> np.ndarray:
        """Trunk outputs for ``image_set[indices]``, in the order of ``indices``."""
        store = self._store.setdefault(key, {})
        missing = np.asarray([i for i in np.unique(indices) if i not in store], dtype=np.int64)
        if len(missing):
            ds = data.pipeline(image_set, missing, image_size, batch_size, cache=False)
            outputs = _predict(trunk, ds)
            store.update(zip(missing.tolist(), outputs))
            self.computed += len(missing)
        return np.stack([store[int(i)] for i in indices])


def _predict(model: keras.Model, dataset) -> np.ndarray:
    run = tf.function(lambda x: model(x, training=False))
    return np.concatenate([run(images).numpy().astype(np.float32) for images, _ in dataset])


# ----------------------------------------------------------------------------- the recipe

def fine_tune(cfg: TransferConfig, cache: FeatureCache | None = None, save_model: bool = True,
              verbose: bool = True) -> dict:
    """Fine-tunes ``cfg.source`` on ``cfg.target`` and records the run.

    Args:
      cfg: the run's configuration.
      cache: a FeatureCache shared across runs (a new one when None).
      save_model: write the fine-tuned model into the run directory.
      verbose: per-epoch progress on stderr.

    Returns:
      The result row: test accuracy (a fraction) and loss, the paper's variables, time,
      per-epoch test accuracies and the run directory.
    """
    runtime.set_seed(cfg.seed)
    runtime.set_precision(cfg.precision)
    source = load_source(cfg.source)
    target = data.load(cfg.target, cfg.data.data_dir, cfg.data.download, cfg.data.test_fraction)
    image_size = cfg.data.image_size or int(source.model.inputs[0].shape[1])
    train_idx = data.select_subset(target.train.labels, cfg.data.train_images, cfg.seed)
    test_idx = data.select_subset(target.test.labels, cfg.data.test_images, 0, "--test-images")
    if cfg.data.test_images is None:
        test_idx = np.sort(test_idx)

    runtime.set_seed(cfg.seed)  # the head's initialization does not depend on loading order
    model = attach_head(with_input_size(source.model, image_size, cfg.precision),
                        target.num_classes, cfg.head_init)
    blocks = freeze(model, cfg.unfrozen_blocks, cfg.frozen_bn)
    use_cache = _use_feature_cache(cfg, blocks, model)
    out = Path(cfg.out) if cfg.out else default_run_dir(cfg, source)
    if verbose:
        print(f"transfer: {source.identity['source']} -> {target.name} "
              f"({len(train_idx)} images, {image_size}px), unfrozen blocks "
              f"{cfg.unfrozen_blocks} {blocks}, {cfg.epochs} epochs, "
              f"feature cache {'on' if use_cache else 'off'} -> {out}", file=sys.stderr)

    start = time.time()
    if use_cache:
        trained, train_ds, test_ds = _cached_datasets(cfg, model, blocks, source, target,
                                                      train_idx, test_idx, image_size,
                                                      cache or FeatureCache())
    else:
        trained = model
        train_ds = data.training_pipeline(
            target.train, train_idx, image_size, cfg.data.batch_size, cfg.seed, cfg.epochs,
            augmentation=cfg.data.augment, flip=target.flip, color_jitter=cfg.data.color_jitter)
        test_ds = data.pipeline(target.test, test_idx, image_size, 256)
    history = _train(cfg, trained, train_ds, test_ds, len(train_idx), out, verbose)
    seconds = time.time() - start

    result = _result_row(cfg, source, target, train_idx, test_idx, history, seconds, out,
                         use_cache)
    if save_model:
        config = {"kind": "transfer", "arch": source.identity["source_arch"],
                  "dataset": target.name, "num_classes": target.num_classes,
                  "class_names": list(target.class_names), "image_size": image_size,
                  "unfrozen_block_names": blocks, **source.identity,
                  "resolved_config": to_dict(cfg), "test_accuracy": result["test_accuracy"]}
        saving.save_model_dir(model, out, config)
    runs.write_json(out / "metrics.json", result)
    return result


def default_run_dir(cfg: TransferConfig, source: SourceModel) -> Path:
    """``runs/transfer/<target>__<source>__n<N>__b<blocks>__s<seed>``."""
    def slug(text):
        return re.sub(r"[^A-Za-z0-9.+-]+", "_", str(text)).strip("_")[-60:]
    n = cfg.data.train_images or "all"
    return Path("runs/transfer") / (f"{slug(cfg.target)}__{slug(source.identity['source'])}"
                                    f"__n{n}__b{cfg.unfrozen_blocks}__s{cfg.seed}")


def _use_feature_cache(cfg: TransferConfig, blocks: list[str], model: keras.Model) -> bool:
    frozen_part_is_fixed = (not cfg.data.augment and cfg.frozen_bn == "inference"
                            and cfg.unfrozen_blocks != -1
                            and len(blocks) < len(resnet.residual_block_names(model)))
    if cfg.feature_cache == "on" and not frozen_part_is_fixed:
        raise UserError("--feature-cache on needs a frozen part that sees the same input every "
                        "epoch: no augmentation, --frozen-bn inference, and not all blocks "
                        "unfrozen.")
    return frozen_part_is_fixed and cfg.feature_cache != "off"


def _cached_datasets(cfg, model, blocks, source, target, train_idx, test_idx, image_size,
                     cache: FeatureCache):
    boundary = feature_boundary(model, blocks)
    trunk = keras.Model(model.inputs, boundary)
    top = keras.Model(boundary, model.outputs)
    boundary_key = blocks[0] if blocks else HEAD_NAME
    key = (source.identity["source_path"], target.name, cfg.data.test_fraction, boundary_key,
           image_size)
    train_x = cache.features(key + ("train",), trunk, target.train, train_idx, image_size)
    test_x = cache.features(key + ("test",), trunk, target.test, test_idx, image_size)
    examples = tf.data.Dataset.from_tensor_slices((train_x, target.train.labels[train_idx]))
    # The same epoch-seeded order as the uncached path: both give the same result.
    train_ds = data.epoch_batches(examples, len(train_idx), cfg.data.batch_size, cfg.seed,
                                  cfg.epochs)
    test_ds = (tf.data.Dataset.from_tensor_slices((test_x, target.test.labels[test_idx]))
               .batch(256).prefetch(tf.data.AUTOTUNE))
    return top, train_ds, test_ds


class EvaluateEvery(keras.callbacks.Callback):
    """Test accuracy every ``every`` epochs and after the last one, into the epoch logs
    (so ``HistoryCSV`` records it): the learning-speed result is a curve over epochs."""

    def __init__(self, test_ds, every: int, epochs: int):
        super().__init__()
        self.test_ds, self.every, self.epochs = test_ds, every, epochs
        self.curve: dict[int, float] = {}
        self.final: dict = {}

    def on_epoch_end(self, epoch, logs=None):
        done = epoch + 1
        if done == self.epochs or (self.every and done % self.every == 0):
            results = self.model.evaluate(self.test_ds, verbose=0, return_dict=True)
            logs["test_accuracy"] = float(results["accuracy"])
            logs["test_loss"] = float(results["loss"])
            self.curve[done] = logs["test_accuracy"]
            self.final = {"test_accuracy": logs["test_accuracy"], "test_loss": logs["test_loss"]}


def _train(cfg, network, train_ds, test_ds, n_train, out: Path, verbose: bool):
    steps = math.ceil(n_train / cfg.data.batch_size)
    trainer = AdversarialTrainer(network, weight_decay=cfg.optim.weight_decay)
    trainer.compile(optimizer=make_optimizer(cfg.optim, cfg.epochs, steps),
                    loss=classification_loss(cfg.optim.label_smoothing))
    evaluator = EvaluateEvery(test_ds, cfg.eval_every, cfg.epochs)
    out.mkdir(parents=True, exist_ok=True)
    history_file = out / "history.csv"
    if history_file.exists():
        history_file.unlink()  # a re-run replaces the record of an unfinished one
    with runtime.progress_to_stderr():
        trainer.fit(train_ds, epochs=cfg.epochs, steps_per_epoch=steps, shuffle=False,
                    verbose=2 if verbose else 0,
                    callbacks=[evaluator, HistoryCSV(history_file)])
    return evaluator


def classification_loss(label_smoothing: float = 0.0):
    """Cross-entropy on integer labels and logits, with optional label smoothing."""
    if not label_smoothing:
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    smoothed = keras.losses.CategoricalCrossentropy(from_logits=True,
                                                    label_smoothing=label_smoothing)

    def loss(y_true, y_pred):
        depth = tf.shape(y_pred)[-1]
        return smoothed(tf.one_hot(tf.cast(tf.reshape(y_true, [-1]), tf.int32), depth), y_pred)
    return loss


def _result_row(cfg, source, target, train_idx, test_idx, evaluator, seconds, out, use_cache):
    row = {
        "test_accuracy": evaluator.final["test_accuracy"],
        "test_loss": evaluator.final["test_loss"],
        "target": target.name, "source": source.identity["source"],
        "source_attack": source.identity["source_attack"],
        "source_eps": source.identity["source_eps"],
        "train_images": int(len(train_idx)), "test_images": int(len(test_idx)),
        "unfrozen_blocks": cfg.unfrozen_blocks, "epochs": cfg.epochs, "seed": cfg.seed,
        "head_init": cfg.head_init, "frozen_bn": cfg.frozen_bn,
        "learning_rate": cfg.optim.learning_rate, "batch_size": cfg.data.batch_size,
        "train_seconds": round(seconds, 2), "images_seen": int(len(train_idx)) * cfg.epochs,
        "feature_cache": use_cache, "git_commit": runs.git_commit(), "run_dir": str(out),
    }
    for epoch, accuracy in sorted(evaluator.curve.items()):
        row[f"test_accuracy_epoch_{epoch}"] = accuracy
    return row
