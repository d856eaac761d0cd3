"""The network being fine-tuned: a new head on a copy of the source, the frozen part set,
the boundary where the frozen trunk ends (the feature cache's input), a compiled trainer
that one traced graph keeps for many runs (``Network.reset``)."""

from __future__ import annotations

from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf

from tftransfer.models import architectures
from tftransfer.adversarial.train_step import AdversarialTrainer
from tftransfer.config import TransferConfig
from tftransfer.errors import UserError
from tftransfer.training import runtime
from tftransfer.training.optim import make_optimizer
from tftransfer.sources.loading import SourceModel, with_input_size

# The head attached to a source no registered architecture describes (registered ones name
# theirs: ``architectures.Architecture.head_layer``, "fc" for every ResNet).
HEAD_NAME = architectures.DEFAULT_HEAD


def attach_head(source: keras.Model, num_classes: int, head_init: str, seed: int | None = None,
                head_std: float = 1.0) -> keras.Model:
    """Replaces the source's head by a new one for ``num_classes``, its kernel drawn with
    ``seed`` (see ``head_initializer``).

    The head and the features it takes are the source architecture's (``architectures``);
    a source no record describes must end in a Dense layer, which a new ``fc`` replaces.

    Args:
      source: the source classifier (not modified; the new model shares its layers).
      num_classes: the target's number of classes.
      head_init: ``normal`` or ``glorot`` (see ``head_initializer``).
      seed: the head initializer's seed.
      head_std: the ``normal`` kernel's standard deviation.

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
                              kernel_initializer=head_initializer(head_init, seed, head_std),
                              bias_initializer="zeros")
    features = architectures.features(source)
    return keras.Model(source.inputs, head(features),
                       name=f"{source.name}{architectures.FINETUNED_SUFFIX}")


def head_initializer(head_init: str, seed: int | None = None, std: float = 1.0
                     ) -> keras.initializers.Initializer:
    """``normal``: normal(0, ``std``), the paper's N(0, 1) by default; ``glorot``: Keras'
    usual choice, gentler on wide feature vectors. A seeded initializer draws the same
    values on every call, so a reused network gets exactly the head a new one would."""
    if head_init == "normal":
        return keras.initializers.RandomNormal(0.0, std, seed=seed)
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


def inference_function(model: keras.Model):
    """``model(x, training=False)`` as one tf.function for any batch size (traced once)."""
    spec = tf.TensorSpec([None, *model.inputs[0].shape[1:]], tf.float32)
    return tf.function(lambda x: model(x, training=False), input_signature=[spec])


@dataclass
class Network:
    """A private copy of the source with a new head, its frozen part set, compiled.

    ``trained`` is what the optimizer trains: the whole ``model``, or, with the feature
    cache, only the part above the frozen trunk (fed with the trunk's cached outputs by
    ``trunk``). ``reset`` puts the weights and the optimizer back to where a new run
    starts, so one traced network serves many runs; ``compiled_functions`` holds the compiled
    loop's traced functions of its trainer for those runs (they go when the network goes).
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
    compiled_functions: dict = field(default_factory=dict, repr=False)

    @property
    def cached(self) -> bool:
        """Whether training runs on cached trunk activations."""
        return self.trunk is not None

    def reset(self, head_init: str, seed: int, head_std: float = 1.0) -> None:
        """Source weights, a new head drawn with ``seed``, a fresh optimizer state."""
        self.trained.set_weights(self._initial_weights)
        head = self.model.get_layer(architectures.head_name(self.model))
        head.kernel.assign(head_initializer(head_init, seed, head_std)(head.kernel.shape))
        head.bias.assign(tf.zeros_like(head.bias))
        for variable, value in zip(self.trainer.optimizer.variables, self._initial_optimizer):
            variable.assign(value)


def build_network(cfg: TransferConfig, source: SourceModel, num_classes: int, image_size: int,
                  steps_per_epoch: int, augment: bool | None = None,
                  normalization: tuple | None = None) -> Network:
    """A ``Network`` for ``cfg``: copy of the source, head, freezing, compiled trainer
    (``augment`` and ``normalization`` as in ``RunCache.network``)."""
    # auto resolved here too, for callers that build networks without fine_tune (tuning).
    precision = runtime.resolve_precision(cfg.precision)
    copy = with_input_size(source.model, image_size, precision, always_copy=True)
    model = attach_head(copy, num_classes, cfg.head_init, cfg.seed, cfg.head_std)
    if normalization is not None:
        set_normalization(model, *normalization)
    blocks = freeze(model, cfg.unfrozen_blocks, cfg.frozen_bn)
    trained, trunk = model, None
    augment = cfg.data.augment if augment is None else augment
    if use_feature_cache(cfg, blocks, model, augment):
        boundary = feature_boundary(model, blocks)
        trunk = inference_function(keras.Model(model.inputs, boundary))
        trained = keras.Model(boundary, model.outputs)
    trainer = AdversarialTrainer(trained, weight_decay=cfg.optim.weight_decay)
    # A head warm-up's second phase trains at a lower rate (finetune.warmup).
    scaled_after = ((cfg.head_warmup_epochs, cfg.unfrozen_lr_scale) if cfg.head_warmup_epochs
                    else None)
    trainer.compile(optimizer=make_optimizer(cfg.optim, cfg.epochs, steps_per_epoch,
                                             scaled_after),
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


def use_feature_cache(cfg: TransferConfig, blocks: list[str], model: keras.Model,
                      augment: bool) -> bool:
    """Whether the trunk's features are cached: ``feature_cache`` auto/on and a frozen part
    that sees the same input every epoch (a UserError for ``on`` without one)."""
    frozen_part_is_fixed = (not augment and cfg.frozen_bn == "inference"
                            and cfg.unfrozen_blocks != -1
                            and len(blocks) < len(architectures.block_names(model)))
    if cfg.feature_cache == "on" and not frozen_part_is_fixed:
        raise UserError("--feature-cache on needs a frozen part that sees the same input every "
                        "epoch: no augmentation, --frozen-bn inference, and not all blocks "
                        "unfrozen.")
    return frozen_part_is_fixed and cfg.feature_cache != "off"


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
