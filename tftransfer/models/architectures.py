"""The architecture registry: what the toolkit knows about a network's layout.

One ``Architecture`` record per ``--arch`` value: its builder, its stages and their
residual blocks in forward order, the feature layer (whose output is the head's input)
and the head layer. Fine-tuning (freezing, ``--unfrozen-blocks``, the feature-cache
boundary, the new head), tuning (its stage choices), conversion and config validation
ask this module instead of knowing any architecture's layer names; a new architecture
is one builder module plus one entry in ``_REGISTRY``.

The protocol a builder follows (``tests/architectures_test.py`` checks every entry):

* ``builder(arch, num_classes, image_size, width, small_inputs, mean, std)`` returns a
  functional ``keras.Model`` named ``arch`` that takes RGB images in [0, 1] and has a
  ``normalize`` layer;
* every layer of block ``B`` is named ``B.<part>`` (``layer3.1.conv2``), and the first
  such layer in ``model.layers`` takes the block's input;
* the head layer is the model's last layer, a ``Dense`` producing float32 logits, fed by
  the feature layer's output;
* ``top_layers`` are the layers between the last block and the head that fine-tune
  whenever any block does (a pre-activation network's final BatchNorm).

This module imports no TensorFlow: ``config`` validates ``--arch`` with it and the CLI
lists the choices without loading TensorFlow. So builders are named as
``"module:function"`` and imported when a model is built (``build``); the functions
that read a built model only use its ``name`` and ``layers``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

from tftransfer.errors import UserError

# What attach_head names a new head on a source that no record describes, and the suffix
# it adds to the model's name (a fine-tuned model keeps its source's architecture).
DEFAULT_HEAD = "fc"
FINETUNED_SUFFIX = "_finetuned"


@dataclass(frozen=True)
class Stage:
    """A group of residual blocks at one resolution (``layer3``: ``layer3.0``, ...)."""

    name: str
    blocks: tuple[str, ...]


@dataclass(frozen=True)
class Architecture:
    """One registered architecture (see the module docstring for the protocol).

    Attributes:
      name: the ``--arch`` value and the built model's name.
      builder: ``"module:function"`` building the model.
      stages: the stages in forward order, each with its blocks in forward order.
      feature_layer: the layer whose output the head takes.
      head_layer: the classifier layer that fine-tuning replaces.
      top_layers: layers after the last block that train whenever a block trains.
      torchvision: whether ``convert`` reads torchvision / robustness checkpoints of it.
      options: builder-specific settings (block type, base width, ...).
    """

    name: str
    builder: str
    stages: tuple[Stage, ...]
    feature_layer: str = "avgpool"
    head_layer: str = DEFAULT_HEAD
    top_layers: tuple[str, ...] = ()
    torchvision: bool = False
    options: dict = field(default_factory=dict, hash=False, compare=False)

    @property
    def block_names(self) -> tuple[str, ...]:
        """Every residual block, in forward order."""
        return tuple(block for stage in self.stages for block in stage.blocks)

    def build(self, num_classes: int, image_size: int, width: float = 1.0,
              small_inputs: bool = False, mean=None, std=None):
        """Builds this architecture.

        Args:
          num_classes: size of the head.
          image_size: input height and width in pixels.
          width: multiplier on every channel count.
          small_inputs: the 32-pixel stem, for builders that have two.
          mean, std: the ``normalize`` layer's statistics (None: the builder's defaults).

        Returns:
          The builder's ``keras.Model``, named ``self.name``.
        """
        module, function = self.builder.split(":")
        builder = getattr(importlib.import_module(module), function)
        statistics = {k: v for k, v in (("mean", mean), ("std", std)) if v is not None}
        return builder(self.name, num_classes, image_size, width=width,
                       small_inputs=small_inputs, **statistics)


def torchvision_stages(blocks_per_stage) -> tuple[Stage, ...]:
    """Stages named as torchvision's ResNets name them: ``layer1`` with ``layer1.0``, ..."""
    return tuple(Stage(f"layer{s}", tuple(f"layer{s}.{i}" for i in range(n)))
                 for s, n in enumerate(blocks_per_stage, start=1))


def _resnet(name, block, blocks_per_stage, torchvision=True, cifar_style=False):
    return Architecture(name, "tftransfer.models.resnet:build", torchvision_stages(blocks_per_stage),
                        torchvision=torchvision,
                        options={"block": block, "cifar_style": cifar_style})


_REGISTRY = {record.name: record for record in (
    _resnet("resnet18", "basic", (2, 2, 2, 2)),
    _resnet("resnet34", "basic", (3, 4, 6, 3)),
    _resnet("resnet50", "bottleneck", (3, 4, 6, 3)),
    _resnet("resnet101", "bottleneck", (3, 4, 23, 3)),
    # CIFAR-style (He et al. 2016, section 4.2); no torchvision checkpoint has its names.
    _resnet("resnet20", "basic", (3, 3, 3), torchvision=False, cifar_style=True),
    # WRN-16-4 (Zagoruyko & Komodakis 2016): pre-activation, so its final BN-ReLU trains
    # with the blocks.
    Architecture("wrn16_4", "tftransfer.models.wideresnet:build", torchvision_stages((2, 2, 2)),
                 top_layers=("bn1", "relu"), options={"widen_factor": 4}),
)}
NAMES = tuple(_REGISTRY)


def get(name: str) -> Architecture:
    """The registered architecture ``name``; a UserError naming the valid ones otherwise."""
    if name not in _REGISTRY:
        raise UserError(f"Unknown architecture {name!r}; choose one of {', '.join(NAMES)}.")
    return _REGISTRY[name]


def build(name: str, num_classes: int, image_size: int, **kwargs):
    """``get(name).build(num_classes, image_size, **kwargs)``."""
    return get(name).build(num_classes, image_size, **kwargs)


# ----------------------------------------------------------------------------- built models

def for_model(model) -> Architecture | None:
    """The record describing ``model``, or None for a network no record describes.

    Builders name the model after its architecture (and ``attach_head`` adds
    ``FINETUNED_SUFFIX``); the name is confirmed by the layers, so another library's
    model of the same name (``keras.applications``' ``resnet50``) is not mistaken for ours.
    """
    name = model.name
    while name.endswith(FINETUNED_SUFFIX):
        name = name[:-len(FINETUNED_SUFFIX)]
    record = _REGISTRY.get(name)
    if record is None:
        return None
    names = [layer.name for layer in model.layers]
    described = ({record.head_layer, record.feature_layer} <= set(names)
                 and all(any(in_blocks(n, [block]) for n in names)
                         for block in record.block_names))
    return record if described else None


def block_names(model) -> list[str]:
    """The residual blocks of ``model`` in forward order ([] when no record describes it)."""
    record = for_model(model)
    return list(record.block_names) if record else []


def stages(model) -> tuple[Stage, ...]:
    """The stages of ``model`` (() when no record describes it)."""
    record = for_model(model)
    return record.stages if record else ()


def blocks_of_last_stages(model, count: int) -> int:
    """How many blocks the last ``count`` stages of ``model`` hold (``--unfrozen-stages``:
    ResNet-50's layer3 and layer4 are 2 stages, 9 blocks).

    Raises:
      UserError: a network no record describes, or more stages than it has.
    """
    found = stages(model)
    if not found:
        raise UserError(f"--unfrozen-stages needs a network the architecture registry "
                        f"describes; {model.name!r} is not one of {', '.join(NAMES)} (use "
                        f"--unfrozen-blocks).")
    if count > len(found):
        raise UserError(f"--unfrozen-stages {count} is more than the {len(found)} stages of "
                        f"{model.name} ({', '.join(stage.name for stage in found)}); use "
                        f"0..{len(found)}.")
    return sum(len(stage.blocks) for stage in found[len(found) - count:])


def head_name(model) -> str:
    """The name of ``model``'s classifier layer: the record's, else the last layer's."""
    record = for_model(model)
    return record.head_layer if record else model.layers[-1].name


def features(model):
    """The tensor the head takes: the feature layer's output, else the last layer's input."""
    record = for_model(model)
    if record is None:
        return model.layers[-1].input
    return model.get_layer(record.feature_layer).output


def in_blocks(layer_name: str, blocks) -> bool:
    """Whether the layer named ``layer_name`` belongs to one of ``blocks``."""
    return layer_name.startswith(tuple(f"{block}." for block in blocks))


def top_layers(model) -> tuple[str, ...]:
    """Layers after the last block that train whenever a block trains (() if none)."""
    record = for_model(model)
    return record.top_layers if record else ()


def block_input(model, block: str):
    """The input tensor of ``block`` in ``model``: that of the block's first layer."""
    return next(layer for layer in model.layers if in_blocks(layer.name, [block])).input
