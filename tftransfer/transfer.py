"""The fine-tuning recipe: a new head on a source network, the last N blocks unfrozen.

``fine_tune(cfg)`` is the one place the recipe lives (``transfer``, ``sweep`` and
``tune`` all call it). When the frozen part of the network sees the same input every
epoch (no augmentation, frozen BatchNorm in inference mode), its output is computed
once (``RunCache``) and only the unfrozen part is trained, on the cached
activations: the same result, many times faster. A sweep also reuses loaded sources
and datasets and the built, traced networks (reset before each run).
"""

from __future__ import annotations

import math
import re
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from tftransfer import (architectures, checkpoints, compiled_loop, data, hub, runs, runtime,
                        saving, sources)
from tftransfer.adversarial import AdversarialTrainer
from tftransfer.callbacks import HistoryCSV, StopOnNaN
from tftransfer.config import TransferConfig, to_dict
from tftransfer.errors import UserError
from tftransfer.optim import make_optimizer
from tftransfer.rundir import check_run_dir, clear_run_record, resume_point

DEFAULT_SOURCE = sources.DEFAULT_SOURCE
# The head attached to a source no registered architecture describes (registered ones name
# theirs: ``architectures.Architecture.head_layer``, "fc" for every ResNet).
HEAD_NAME = architectures.DEFAULT_HEAD


# ----------------------------------------------------------------------------- source

@dataclass(frozen=True)
class SourceModel:
    """A loaded source network and where it came from."""

    model: keras.Model
    identity: dict = field(default_factory=dict)


def load_source(reference: str | None) -> SourceModel:
    """Loads a source by registered name or path; None loads ``DEFAULT_SOURCE``."""
    reference = reference or DEFAULT_SOURCE
    path = hub.model_dir(reference)
    # Before loading: a SavedModel cannot be fine-tuned, trusted or not (one sentence either way).
    saving.check_fine_tunable(path)
    model = saving.load_model(path)
    config = saving.read_config(path)
    registered = sources.get(reference)
    attack, eps = (registered.attack, registered.eps) if registered else threat_model(config)
    identity = {
        "source": reference,
        "source_path": str(saving.resolve_model_path(path)),
        "source_arch": config.get("arch", model.name),
        "source_dataset": config.get("dataset"),
        "source_attack": attack,
        "source_eps": eps,
        "source_git_commit": config.get("git_commit"),
    }
    return SourceModel(model, identity)


def threat_model(config: dict) -> tuple[str, float]:
    """``(attack, eps)`` a source model was trained with, from its ``config.json``.

    ``pretrain`` stores ``{"attack": {"attack": "l2", "eps": 0.5, ...}}``; ``convert``
    stores ``{"attack": "l2", "eps": 3.0}`` (or ``None`` when the checkpoint's origin is
    unknown). A model without either is taken as natural.
    """
    attack = config.get("attack")
    if isinstance(attack, dict):
        return str(attack.get("attack", "none")), float(attack.get("eps") or 0.0)
    if isinstance(attack, str):
        return attack, float(config.get("eps") or 0.0)
    return "none", 0.0


def with_input_size(model: keras.Model, image_size: int, precision: str | None = None,
                    always_copy: bool = False) -> keras.Model:
    """The same network for ``image_size`` inputs and the ``precision`` dtype policy, weights
    copied; ``model`` itself when both already match (unless ``always_copy``).

    ResNets are fully convolutional up to the global pooling, so any size works. A loaded
    model keeps the dtype policy it was saved with, whatever the global policy is, so a
    different ``precision`` also needs this rebuild.
    """
    config = model.get_config()
    layers = config["layers"]
    same_size = model.inputs[0].shape[1] == image_size
    same_policy = precision is None or all(
        _policy_name(layer) == precision for layer in layers[1:-1])
    if same_size and same_policy and not always_copy:
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

def attach_head(source: keras.Model, num_classes: int, head_init: str, seed: int | None = None
                ) -> keras.Model:
    """Replaces the source's head by a new one for ``num_classes``, its kernel drawn with
    ``seed`` (see ``head_initializer``).

    The head and the features it takes are the source architecture's (``architectures``);
    a source no record describes must end in a Dense layer, which a new ``fc`` replaces.

    Args:
      source: the source classifier (not modified; the new model shares its layers).
      num_classes: the target's number of classes.
      head_init: ``normal`` or ``glorot`` (see ``head_initializer``).
      seed: the head initializer's seed.

    Returns:
      A model named ``<source name>_finetuned`` with the same trunk and the new head.
    """
    record = architectures.for_model(source)
    last = source.get_layer(record.head_layer) if record else source.layers[-1]
    if not isinstance(last, keras.layers.Dense):
        raise UserError(f"The source model {source.name!r} does not end in a Dense classifier "
                        f"layer (its last layer is a {type(last).__name__}); tftransfer needs "
                        f"a classifier whose head it can replace.")
    if num_classes < 2:
        raise UserError(f"The target has {num_classes} class; fine-tuning needs at least 2.")
    head = keras.layers.Dense(num_classes, name=record.head_layer if record else HEAD_NAME,
                              dtype="float32",
                              kernel_initializer=head_initializer(head_init, seed),
                              bias_initializer="zeros")
    features = architectures.features(source)
    return keras.Model(source.inputs, head(features),
                       name=f"{source.name}{architectures.FINETUNED_SUFFIX}")


def head_initializer(head_init: str, seed: int | None = None) -> keras.initializers.Initializer:
    """``normal``: the paper's normal(0, 1) (the default, to reproduce it); ``glorot``: Keras'
    usual choice, gentler on wide feature vectors. A seeded initializer draws the same
    values on every call, so a reused network gets exactly the head a new one would."""
    if head_init == "normal":
        return keras.initializers.RandomNormal(0.0, 1.0, seed=seed)
    return keras.initializers.GlorotUniform(seed=seed)


def unfrozen_block_names(model: keras.Model, unfrozen_blocks: int) -> list[str]:
    """The residual blocks fine-tuned for ``unfrozen_blocks`` (counted from the end).

    Args:
      model: a network the architecture registry describes (else it has no blocks).
      unfrozen_blocks: how many blocks, from the last; -1: all of them.

    Returns:
      The blocks' names in forward order.
    """
    blocks = architectures.block_names(model)
    if unfrozen_blocks == -1:
        return blocks
    if unfrozen_blocks > len(blocks):
        raise UserError(f"--unfrozen-blocks {unfrozen_blocks} is more than the {len(blocks)} "
                        f"residual blocks of {model.name}; use 0..{len(blocks)}, or -1 for all.")
    return blocks[len(blocks) - unfrozen_blocks:] if unfrozen_blocks else []


def freeze(model: keras.Model, unfrozen_blocks: int, frozen_bn: str) -> list[str]:
    """Sets which layers train: the head, the last ``unfrozen_blocks`` blocks (-1: all) and,
    when a block trains, the architecture's ``top_layers`` (between the last block and the
    head).

    Frozen BatchNorm layers run in inference mode (``frozen_bn='inference'``, Keras'
    convention) or keep updating their statistics while their scale and offset stay
    fixed (``'train'``, what the paper's PyTorch code did).

    Returns:
      The names of the unfrozen blocks.
    """
    blocks = unfrozen_block_names(model, unfrozen_blocks)
    everything = unfrozen_blocks == -1
    head = architectures.head_name(model)
    top = architectures.top_layers(model) if blocks else ()
    for layer in model.layers:
        trainable = (everything or layer.name == head or layer.name in top
                     or architectures.in_blocks(layer.name, blocks))
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
    the head's input (the architecture's features) when only the head trains.

    Args:
      model: the network being fine-tuned.
      blocks: its unfrozen blocks (``freeze``'s result).

    Returns:
      A symbolic tensor of ``model``'s graph.
    """
    if not blocks:
        return architectures.features(model)
    return architectures.block_input(model, blocks[0])


# ----------------------------------------------------------------------------- run cache

class RunCache:
    """What consecutive runs of a sweep (or a search) share instead of redoing.

    - loaded source models and target datasets;
    - the frozen trunk's activations, per image, keyed by (source, target, split,
      boundary, image size): a sweep computes each image's features once;
    - built and traced networks (``Network``), keyed by everything that shapes the
      graph or the optimizer, and reset to the source's weights before each run, so
      that runs differing only in seed or training images re-trace nothing.
    """

    def __init__(self, max_networks: int = 4):
        self._features: dict[tuple, dict[int, np.ndarray]] = {}
        self._sources: dict[str | None, SourceModel] = {}
        self._targets: dict[tuple, data.TargetData] = {}
        self._networks: OrderedDict[tuple, Network] = OrderedDict()
        # (features, labels, dataset)
        self._evaluation_sets: OrderedDict[tuple, tuple] = OrderedDict()
        self.max_networks = max_networks
        self.computed = 0          # images whose trunk features were computed
        self.networks_built = 0

    def source(self, reference: str | None) -> SourceModel:
        """``load_source(reference)``, loaded once. Never train this model itself: networks
        are built from private copies of it."""
        if reference not in self._sources:
            self._sources[reference] = load_source(reference)
        return self._sources[reference]

    def target(self, cfg: TransferConfig) -> data.TargetData:
        """The target dataset of ``cfg``, loaded once."""
        key = (cfg.target, cfg.data.data_dir, cfg.data.download, cfg.data.test_fraction)
        if key not in self._targets:
            self._targets[key] = data.load(*key)
        return self._targets[key]

    def network(self, cfg: TransferConfig, source: SourceModel, num_classes: int,
                image_size: int, steps_per_epoch: int, augment: bool | None = None,
                normalization: tuple | None = None) -> Network:
        """A ``Network`` for this run's recipe, built or reused (least recently used ones
        are dropped beyond ``max_networks``). ``augment``: whether the training images are
        augmented (default ``cfg.data.augment``); ``normalization``: (mean, std) replacing
        the source's input statistics (None keeps them)."""
        augment = cfg.data.augment if augment is None else augment
        key = (source.identity["source_path"], image_size, num_classes, cfg.precision,
               cfg.head_init, cfg.unfrozen_blocks, cfg.frozen_bn, cfg.feature_cache,
               augment, cfg.optim, cfg.epochs, steps_per_epoch, normalization)
        if key in self._networks:
            self._networks.move_to_end(key)
        else:
            self._networks[key] = build_network(cfg, source, num_classes, image_size,
                                                steps_per_epoch, augment, normalization)
            self.networks_built += 1
            while len(self._networks) > self.max_networks:
                self._networks.popitem(last=False)
        return self._networks[key]

    def features(self, key: tuple, trunk, image_set, indices, image_size,
                 batch_size: int = 256, keep: bool = True) -> np.ndarray:
        """Trunk outputs for ``image_set[indices]``, in the order of ``indices``.

        ``trunk`` is a Keras model or a function of a batch of images. ``keep=False``
        computes what is not stored yet without storing it (for sets kept elsewhere).
        """
        store = self._features.setdefault(key, {}) if keep else self._features.get(key, {})
        missing = np.asarray([i for i in np.unique(indices) if i not in store], dtype=np.int64)
        fresh = {}
        if len(missing):
            ds = data.pipeline(image_set, missing, image_size, batch_size, cache=False)
            fresh = dict(zip(missing.tolist(), _predict(trunk, ds)))
            self.computed += len(missing)
            if keep:
                store.update(fresh)
        return np.stack([fresh[int(i)] if int(i) in fresh else store[int(i)] for i in indices])

    def evaluation_set(self, key: tuple, trunk, image_set, indices, image_size,
                       within=None, tensors: bool = False):
        """Batches of (trunk features, label) for ``image_set[indices]``, built once: every
        run of a sweep evaluates on the same test images, and turning 10,000 feature maps
        into a tensor again each time would cost more than evaluating them.

        ``within``: the indices of an evaluation set built before that contains
        ``indices`` (the per-epoch curve's images inside the test images); its features
        are gathered instead of computed again. ``tensors``: return the (features, labels)
        tensors instead of the dataset (what ``compiled_loop`` evaluates).
        """
        indices = np.asarray(indices)
        full_key = _set_key(key, indices)
        if full_key not in self._evaluation_sets:
            x = self._gathered(key, within, indices)
            if x is None:
                # Not kept per image too: this tensor is the one copy (330 MB for the
                # 10,000 test images at resnet20's last-stage boundary).
                x = tf.constant(self.features(key, trunk, image_set, indices, image_size,
                                              keep=False))
            dataset = (tf.data.Dataset.from_tensor_slices((x, image_set.labels[indices]))
                       .batch(256).prefetch(tf.data.AUTOTUNE))
            self._evaluation_sets[full_key] = (x, tf.constant(image_set.labels[indices]),
                                               dataset)
            while len(self._evaluation_sets) > 2 * self.max_networks:
                self._evaluation_sets.popitem(last=False)
        self._evaluation_sets.move_to_end(full_key)
        x, y, dataset = self._evaluation_sets[full_key]
        return (x, y) if tensors else dataset

    def _gathered(self, key: tuple, within, indices: np.ndarray):
        """The features of ``indices`` taken from the evaluation set of ``within``, or None
        when that set is not built or does not contain them all."""
        if within is None:
            return None
        container = self._evaluation_sets.get(_set_key(key, np.asarray(within)))
        position = {int(index): p for p, index in enumerate(within)}
        if container is None or not all(int(i) in position for i in indices):
            return None
        return tf.gather(container[0], [position[int(i)] for i in indices])


def _set_key(key: tuple, indices: np.ndarray) -> tuple:
    return key + (len(indices), hash(indices.tobytes()))


def _predict(trunk, dataset) -> np.ndarray:
    if isinstance(trunk, keras.Model):
        trunk = inference_function(trunk)
    return np.concatenate([trunk(images).numpy().astype(np.float32) for images, _ in dataset])


def inference_function(model: keras.Model):
    """``model(x, training=False)`` as one tf.function for any batch size (traced once)."""
    spec = tf.TensorSpec([None, *model.inputs[0].shape[1:]], tf.float32)
    return tf.function(lambda x: model(x, training=False), input_signature=[spec])


# ----------------------------------------------------------------------------- networks

@dataclass
class Network:
    """A private copy of the source with a new head, its frozen part set, compiled.

    ``trained`` is what the optimizer trains: the whole ``model``, or, with the feature
    cache, only the part above the frozen trunk (fed with the trunk's cached outputs by
    ``trunk``). ``reset`` puts the weights and the optimizer back to where a new run
    starts, so one traced network serves many runs.
    """

    model: keras.Model
    blocks: list[str]
    trained: keras.Model
    trainer: AdversarialTrainer
    trunk: object | None          # tf.function images -> boundary activations, or None
    boundary_key: str
    normalization: tuple | None = None   # (mean, std) replacing the source's, or None
    _initial_weights: list = field(default_factory=list, repr=False)
    _initial_optimizer: list = field(default_factory=list, repr=False)

    @property
    def cached(self) -> bool:
        """Whether training runs on cached trunk activations."""
        return self.trunk is not None

    def reset(self, head_init: str, seed: int) -> None:
        """Source weights, a new head drawn with ``seed``, a fresh optimizer state."""
        self.trained.set_weights(self._initial_weights)
        head = self.model.get_layer(architectures.head_name(self.model))
        head.kernel.assign(head_initializer(head_init, seed)(head.kernel.shape))
        head.bias.assign(tf.zeros_like(head.bias))
        for variable, value in zip(self.trainer.optimizer.variables, self._initial_optimizer):
            variable.assign(value)


def build_network(cfg: TransferConfig, source: SourceModel, num_classes: int, image_size: int,
                  steps_per_epoch: int, augment: bool | None = None,
                  normalization: tuple | None = None) -> Network:
    """A ``Network`` for ``cfg``: copy of the source, head, freezing, compiled trainer
    (``augment`` and ``normalization`` as in ``RunCache.network``)."""
    copy = with_input_size(source.model, image_size, cfg.precision, always_copy=True)
    model = attach_head(copy, num_classes, cfg.head_init, cfg.seed)
    if normalization is not None:
        set_normalization(model, *normalization)
    blocks = freeze(model, cfg.unfrozen_blocks, cfg.frozen_bn)
    trained, trunk = model, None
    augment = cfg.data.augment if augment is None else augment
    if _use_feature_cache(cfg, blocks, model, augment):
        boundary = feature_boundary(model, blocks)
        trunk = inference_function(keras.Model(model.inputs, boundary))
        trained = keras.Model(boundary, model.outputs)
    trainer = AdversarialTrainer(trained, weight_decay=cfg.optim.weight_decay)
    trainer.compile(optimizer=make_optimizer(cfg.optim, cfg.epochs, steps_per_epoch),
                    loss=classification_loss(cfg.optim.label_smoothing))
    trainer.optimizer.build(trainer.trainable_variables)  # so its initial state can be kept
    boundary_key = blocks[0] if blocks else architectures.head_name(model)
    return Network(model, blocks, trained, trainer, trunk, boundary_key,
                   normalization, trained.get_weights(),
                   [v.numpy() for v in trainer.optimizer.variables])


def set_normalization(model: keras.Model, mean, std) -> None:
    """Replaces the input statistics of ``model``'s ``normalize`` layer (the paper's code
    builds the normaliser from the target dataset instead of the source's)."""
    try:
        layer = model.get_layer("normalize")
    except ValueError:
        raise UserError(f"The source model {model.name!r} has no 'normalize' layer whose "
                        f"statistics --normalization could replace; use --normalization "
                        f"source.") from None
    layer.mean.assign(np.asarray(mean, np.float32))
    layer.std.assign(np.asarray(std, np.float32))


def normalization_statistics(cfg: TransferConfig, target, train_idx, image_size: int):
    """(mean, std) for ``cfg.normalization``: None (the source's), the target's fixed
    per-dataset statistics (``data.target_statistics``, the paper's), or those of the run's
    training images (``subset``)."""
    if cfg.normalization == "source":
        return None
    if cfg.normalization == "target":
        return data.target_statistics(target.name)
    from tftransfer.training import channel_statistics  # training imports nothing of ours
    return channel_statistics(target.train, train_idx, image_size, cfg.seed)


def augments(cfg: TransferConfig, target) -> bool:
    """Whether this run's training images are augmented: ``cfg.data.augment``, except that
    the paper's policy leaves grayscale targets as they are (its BLACK_N_WHITE transform)."""
    if cfg.data.augment_policy == "utrera2021" and target.grayscale:
        return False
    return cfg.data.augment


# ----------------------------------------------------------------------------- the recipe

def fine_tune(cfg: TransferConfig, cache: RunCache | None = None, save_model: bool = True,
              verbose: bool = True, existing_run: str = "replace", checkpoint: bool = False,
              resume: bool = False) -> dict:
    """Fine-tunes ``cfg.source`` on ``cfg.target`` and records the run.

    A run starts from epoch 0, and the run directory's old record files are removed before
    training, so it never holds parts of two runs; unless ``resume``: then it continues from
    the run directory's checkpoint (``rundir.resume_point``: the same configuration, or more
    epochs to extend it; a finished run is reported as it is).

    Args:
      cfg: the run's configuration.
      cache: a RunCache shared across runs (a new one when None).
      save_model: write the fine-tuned model into the run directory.
      verbose: per-epoch progress on stderr.
      existing_run: what a finished run of another configuration in the run directory
        gets: ``replace`` (it is replaced whole) or ``refuse`` (a UserError naming it,
        before any work; the ``transfer`` command's choice). See ``rundir.check_run_dir``.
      checkpoint: write ``checkpoints.CHECKPOINT_FILE`` after every epoch or compiled
        stretch, so that ``resume`` can continue a killed run or extend a finished one.
      resume: continue from that checkpoint (implies ``checkpoint``).

    Returns:
      The result row: test accuracy (a fraction) and loss, the paper's variables, time,
      per-epoch test accuracies and the run directory.
    """
    # The precision policy holds while the networks are built, and is the caller's again after.
    with runtime.precision_policy(cfg.precision):
        return _fine_tune(cfg, cache or RunCache(), save_model, verbose, existing_run,
                          checkpoint, resume)


def _fine_tune(cfg: TransferConfig, cache: RunCache, save_model: bool, verbose: bool,
               existing_run: str, checkpoint: bool, resume: bool) -> dict:
    """``fine_tune`` under its precision policy."""
    source = cache.source(cfg.source)
    out = Path(cfg.out) if cfg.out else default_run_dir(cfg, source)
    # A resumed run is compared with its checkpoint instead (resume_point), epochs aside.
    check_run_dir(out, cfg, "replace" if resume else existing_run)
    point = resume_point(out, cfg) if resume else None
    if point is not None and point.finished is not None:
        print(f"{out} holds this finished run ({point.checkpoint.epoch} epochs); reporting "
              f"it (a larger --epochs extends it).", file=sys.stderr)
        return point.finished
    target = cache.target(cfg)
    image_size = cfg.data.image_size or int(source.model.inputs[0].shape[1])
    train_idx, test_idx, curve_idx = _indices(cfg, target)
    steps = math.ceil(len(train_idx) / cfg.data.batch_size)
    augment = augments(cfg, target)
    network = cache.network(cfg, source, target.num_classes, image_size, steps, augment,
                            normalization_statistics(cfg, target, train_idx, image_size))
    network.reset(cfg.head_init, cfg.seed)
    runtime.set_seed(cfg.seed)
    first = point.checkpoint.epoch if point else 0
    if point:
        checkpoints.restore(point.checkpoint, network.trained, network.trainer.optimizer)
    if verbose:
        print(f"transfer: {source.identity['source']} -> {target.name} "
              f"({len(train_idx)} images, {image_size}px), unfrozen blocks "
              f"{cfg.unfrozen_blocks} {network.blocks}, {cfg.epochs} epochs, "
              f"feature cache {'on' if network.cached else 'off'} -> {out}"
              + (f"; resumed after epoch {first}" if point else ""), file=sys.stderr)

    if not point:
        clear_run_record(out)  # only now: a run that stops on bad input keeps the old one
    start = time.time()
    compiled = _use_compiled_loop(cfg, network)
    if network.cached:
        datasets = _cached_datasets(cfg, network, source, target, (train_idx, test_idx,
                                                                   curve_idx), image_size, cache,
                                    tensors=compiled, first_epoch=first)
    else:
        datasets = _image_datasets(cfg, target, (train_idx, test_idx, curve_idx), image_size,
                                   augment, first_epoch=first)
    saver = _Checkpointer(cfg, network, out, point) if checkpoint or resume else None
    evaluator = _train(cfg, network.trainer, *datasets, steps, out, verbose, compiled, saver)
    _check_finite_result(cfg, network.trained, evaluator)
    seconds = time.time() - start

    result = _result_row(cfg, source, target, (train_idx, test_idx, curve_idx), evaluator,
                         seconds, out, network.cached)
    extended = _extensions(point)
    result.update(extended)
    if save_model:
        config = {"kind": "transfer", "arch": source.identity["source_arch"],
                  "dataset": target.name, "num_classes": target.num_classes,
                  "class_names": list(target.class_names), "image_size": image_size,
                  "unfrozen_block_names": network.blocks, **source.identity,
                  "resolved_config": to_dict(cfg), "test_accuracy": result["test_accuracy"],
                  **extended}
        saving.save_model_dir(network.model, out, config)
    runs.write_json(out / "metrics.json", result)
    return result


def _indices(cfg: TransferConfig, target):
    """Training images (the run's seed), test images and the per-epoch curve's test images
    (fixed seed 0, nested: the curve's images are a stratified part of the test images)."""
    train_idx = data.select_subset(target.train.labels, cfg.data.train_images, cfg.seed,
                                   method=cfg.data.subset)
    test_idx = data.select_subset(target.test.labels, cfg.data.test_images, 0, "--test-images")
    if cfg.data.test_images is None:
        test_idx = np.sort(test_idx)
    curve_idx = test_idx
    if cfg.curve_test_images is not None and cfg.curve_test_images < len(test_idx):
        curve_idx = data.select_subset(target.test.labels, cfg.curve_test_images, 0,
                                       "--curve-test-images")
    return train_idx, test_idx, curve_idx


def default_run_dir(cfg: TransferConfig, source: SourceModel) -> Path:
    """``runs/transfer/<target>__<source>__n<N>__b<blocks>__s<seed>``."""
    def slug(text):
        return re.sub(r"[^A-Za-z0-9.+-]+", "_", str(text)).strip("_")[-60:]
    n = cfg.data.train_images or "all"
    return Path("runs/transfer") / (f"{slug(cfg.target)}__{slug(source.identity['source'])}"
                                    f"__n{n}__b{cfg.unfrozen_blocks}__s{cfg.seed}")


def _use_feature_cache(cfg: TransferConfig, blocks: list[str], model: keras.Model,
                       augment: bool) -> bool:
    frozen_part_is_fixed = (not augment and cfg.frozen_bn == "inference"
                            and cfg.unfrozen_blocks != -1
                            and len(blocks) < len(architectures.block_names(model)))
    if cfg.feature_cache == "on" and not frozen_part_is_fixed:
        raise UserError("--feature-cache on needs a frozen part that sees the same input every "
                        "epoch: no augmentation, --frozen-bn inference, and not all blocks "
                        "unfrozen.")
    return frozen_part_is_fixed and cfg.feature_cache != "off"


def feature_key(cfg: TransferConfig, source: SourceModel, target, network: Network,
                image_size: int) -> tuple:
    """The RunCache key of a network's trunk features (add the split): the same for every
    run and search trial that shares the source, target, boundary, size and precision."""
    return (source.identity["source_path"], target.name, cfg.data.test_fraction,
            network.boundary_key, image_size, cfg.precision, network.normalization)


def _cached_datasets(cfg, network: Network, source, target, indices, image_size,
                     cache: RunCache, tensors: bool = False, first_epoch: int = 0):
    """(train, test, curve) datasets of trunk activations; with ``tensors``, test and curve
    are (features, labels) tensors instead (``compiled_loop`` evaluates those). The training
    batches start at epoch ``first_epoch`` (a resumed run)."""
    train_idx, test_idx, curve_idx = indices
    key = feature_key(cfg, source, target, network, image_size)
    train_x = cache.features(key + ("train",), network.trunk, target.train, train_idx,
                             image_size)
    examples = tf.data.Dataset.from_tensor_slices((train_x, target.train.labels[train_idx]))
    # The same epoch-seeded order as the uncached path: both give the same result.
    train_ds = data.epoch_batches(examples, len(train_idx), cfg.data.batch_size, cfg.seed,
                                  cfg.epochs, first_epoch)

    def evaluation_set(idx, within=None):
        return cache.evaluation_set(key + ("test",), network.trunk, target.test, idx, image_size,
                                    within, tensors)
    test_ds = evaluation_set(test_idx)
    curve_ds = test_ds if curve_idx is test_idx else evaluation_set(curve_idx, test_idx)
    return train_ds, test_ds, curve_ds


def _image_datasets(cfg, target, indices, image_size, augment: bool, first_epoch: int = 0):
    """(train, test, curve) datasets of images, for a network trained end to end (training
    batches from epoch ``first_epoch`` on)."""
    train_idx, test_idx, curve_idx = indices
    train_ds = data.training_pipeline(
        target.train, train_idx, image_size, cfg.data.batch_size, cfg.seed, cfg.epochs,
        first_epoch=first_epoch, augmentation=augment, flip=target.flip, color_jitter=cfg.data.color_jitter,
        policy=cfg.data.augment_policy)
    test_ds = data.pipeline(target.test, test_idx, image_size, 256)
    curve_ds = test_ds if curve_idx is test_idx else data.pipeline(target.test, curve_idx,
                                                                   image_size, 256)
    return train_ds, test_ds, curve_ds


class EvaluateEvery(keras.callbacks.Callback):
    """Test accuracy on the curve's images every ``every`` epochs and after the last one,
    into the epoch logs (so ``HistoryCSV`` records it): the learning-speed result is a
    curve over epochs. After the last epoch, the final accuracy on all the test images
    (``final``; the curve's own value when the curve uses all of them)."""

    def __init__(self, curve_ds, every: int, epochs: int, test_ds=None):
        super().__init__()
        self.curve_ds, self.every, self.epochs = curve_ds, every, epochs
        self.test_ds = test_ds if test_ds is not None else curve_ds
        self.curve: dict[int, float] = {}
        self.final: dict = {}

    def on_epoch_end(self, epoch, logs=None):
        done = epoch + 1
        if done == self.epochs or (self.every and done % self.every == 0):
            results = self.model.evaluate(self.curve_ds, verbose=0, return_dict=True)
            logs["test_accuracy"] = float(results["accuracy"])
            logs["test_loss"] = float(results["loss"])
            self.curve[done] = logs["test_accuracy"]
            if done == self.epochs:
                if self.test_ds is not self.curve_ds:
                    results = self.model.evaluate(self.test_ds, verbose=0, return_dict=True)
                self.final = {"test_accuracy": float(results["accuracy"]),
                              "test_loss": float(results["loss"])}


def _use_compiled_loop(cfg: TransferConfig, network: Network) -> bool:
    """``training_loop`` auto: the compiled loop exactly when training runs on cached features
    (where fit()'s per-epoch overhead dominates); ``compiled`` needs the cache too."""
    if cfg.training_loop == "compiled" and not network.cached:
        raise UserError("--set training_loop=compiled needs the feature cache (no augmentation, "
                        "--frozen-bn inference, not every block unfrozen).")
    return network.cached and cfg.training_loop != "fit"


def _train(cfg, trainer, train_ds, test_ds, curve_ds, steps, out: Path, verbose: bool,
           compiled: bool = False, saver: "_Checkpointer | None" = None):
    """Trains from epoch 0, or from ``saver.start`` (a resumed run); ``saver`` also writes a
    checkpoint after every epoch (``fit()``) or compiled stretch."""
    out.mkdir(parents=True, exist_ok=True)
    history_file = out / "history.csv"  # an earlier run's is gone (clear_run_record)
    start = saver.start if saver else compiled_loop.Start()
    if compiled:
        return compiled_loop.fit_compiled(trainer, train_ds, cfg.epochs, steps, cfg.eval_every,
                                          curve_ds, test_ds, history_file, verbose, start,
                                          saver.save if saver else None)
    evaluator = EvaluateEvery(curve_ds, cfg.eval_every, cfg.epochs, test_ds)
    evaluator.curve.update(start.curve)
    history = _ResumedHistory(history_file, start.rows)
    nan_guard = StopOnNaN(check_weights=True)
    callbacks = [evaluator, history, nan_guard]
    if saver:
        callbacks.append(_SaveEveryEpoch(saver, history, evaluator))
    with runtime.progress_to_stderr():
        trainer.fit(train_ds, epochs=cfg.epochs, initial_epoch=start.epoch, steps_per_epoch=steps,
                    shuffle=False, verbose=2 if verbose else 0, callbacks=callbacks)
    if not evaluator.final:  # resumed after the last epoch's checkpoint: nothing left to train
        results = trainer.evaluate(test_ds, verbose=0, return_dict=True)
        evaluator.final = {"test_accuracy": float(results["accuracy"]),
                           "test_loss": float(results["loss"])}
    if nan_guard.bad_epoch is not None:
        # A diverged head would otherwise be recorded as a chance-level test accuracy.
        what = ("the training loss became NaN" if nan_guard.reason == "loss"
                else "the weights became NaN or infinite")
        raise _diverged(cfg, f"{what} at epoch {nan_guard.bad_epoch}")
    return evaluator


class _Checkpointer:
    """Writes a run's checkpoint (``checkpoints``) and knows where a resumed run starts."""

    def __init__(self, cfg: TransferConfig, network: Network, out: Path, point=None):
        self.config, self.network, self.out = to_dict(cfg), network, out
        state = point.checkpoint if point else None
        self.extended_from = state.extended_from if state else []
        self.start = (compiled_loop.Start(state.epoch, state.rows, state.curve) if state
                      else compiled_loop.Start())
        if state:  # a killed run may have written history rows past its checkpoint
            runs.write_csv_atomic(out / "history.csv", state.rows)

    def save(self, epoch: int, rows, curve) -> None:
        """The checkpoint after ``epoch`` finished epochs; not when the weights have become
        non-finite (the run stops as diverged, and the last good checkpoint stays)."""
        state = checkpoints.capture(self.network.trained, self.network.trainer.optimizer,
                                    self.config, epoch, rows, curve, self.extended_from)
        if all(np.isfinite(w).all() for w in state.weights):
            checkpoints.save(self.out, state)


class _ResumedHistory(HistoryCSV):
    """``HistoryCSV`` that starts from the rows of a resumed run's checkpoint (those of
    the epochs before ``fit(initial_epoch=...)``), not from what the file holds."""

    def __init__(self, path, rows):
        super().__init__(path)
        self._first_rows = {int(row["epoch"]): dict(row) for row in rows}

    def on_train_begin(self, logs=None):
        self.rows = dict(self._first_rows)


class _SaveEveryEpoch(keras.callbacks.Callback):
    """Saves the checkpoint after each epoch, once its history row and curve point exist
    (so it goes after ``EvaluateEvery`` and ``HistoryCSV`` in the callback list)."""

    def __init__(self, saver: _Checkpointer, history: HistoryCSV, evaluator: EvaluateEvery):
        super().__init__()
        self.saver, self.history, self.evaluator = saver, history, evaluator

    def on_epoch_end(self, epoch, logs=None):
        rows = [self.history.rows[e] for e in sorted(self.history.rows)]
        self.saver.save(epoch + 1, rows, self.evaluator.curve)


def _extensions(point) -> dict:
    """``{"extended_from": [...]}`` for an extended run (see ``checkpoints``), else {}."""
    if point is None or not point.checkpoint.extended_from:
        return {}
    return {"extended_from": point.checkpoint.extended_from}


def _check_finite_result(cfg: TransferConfig, trained: keras.Model, evaluator) -> None:
    """Refuses to record a run whose trained weights or final test result are not finite,
    whichever loop trained it (a last update can break the weights after the last check)."""
    if not all(np.isfinite(w).all() for w in trained.get_weights()):
        raise _diverged(cfg, "the trained weights are NaN or infinite")
    if not all(math.isfinite(v) for v in evaluator.final.values()):
        raise _diverged(cfg, f"the final test result is not finite ({evaluator.final})")


def _diverged(cfg: TransferConfig, what: str) -> UserError:
    return UserError(f"Fine-tuning diverged: {what}; lower the learning rate (now "
                     f"{cfg.optim.learning_rate}) or check the data.")


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


def _result_row(cfg, source, target, indices, evaluator, seconds, out, use_cache):
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
        **_protocol_columns(cfg),
        "learning_rate": cfg.optim.learning_rate, "batch_size": cfg.data.batch_size,
        "train_seconds": round(seconds, 2), "images_seen": int(len(train_idx)) * cfg.epochs,
        "feature_cache": use_cache, "git_commit": runs.git_commit(), "run_dir": str(out),
    }
    for epoch, accuracy in sorted(evaluator.curve.items()):
        row[f"test_accuracy_epoch_{epoch}"] = accuracy
    return row


def _protocol_columns(cfg: TransferConfig) -> dict:
    """The protocol fields that differ from the defaults the replication's rows were run
    with (so those rows keep their columns): normalisation, subset, augmentation, recipe."""
    columns = {}
    if cfg.normalization != "source":
        columns["normalization"] = cfg.normalization
    if cfg.data.subset != "stratified":
        columns["subset"] = cfg.data.subset
    if cfg.data.augment:
        columns["augment"] = cfg.data.augment_policy
    if cfg.recipe:
        columns["recipe"] = cfg.recipe
    return columns
