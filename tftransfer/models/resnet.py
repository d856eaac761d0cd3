"""Torchvision-layout ResNets for Keras.

The layer names mirror torchvision's state-dict keys (``conv1``, ``bn1``,
``layer1.0.conv1``, ``layer1.0.downsample.0``, ..., ``fc``) so that PyTorch
checkpoints map onto these models by name (see ``tftransfer.convert.checkpoint``).

Every model takes RGB float images in [0, 1]; the mean/std normalization is the
``normalize`` layer inside the model, so attacks and eps live in pixel space.
"""

from __future__ import annotations

import keras
import numpy as np

from tftransfer.models import architectures
from tftransfer.errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

# The registered architectures this module builds (their stages and block type are in
# ``tftransfer.models.architectures``).
ARCHITECTURES = tuple(name for name in architectures.NAMES
                      if architectures.get(name).builder == "tftransfer.models.resnet:build")

# PyTorch BatchNorm: eps 1e-5 and momentum 0.1 (= Keras momentum 0.9).
_BN_KWARGS = {"epsilon": 1e-5, "momentum": 0.9}


@keras.saving.register_keras_serializable(package="tftransfer")
class Normalize(keras.layers.Layer):
    """Per-channel ``(x - mean) / std`` with the statistics stored as weights.

    Stored as (non-trainable) weights rather than constants so that checkpoint
    conversion can copy a robustness-library normalizer into them.
    """

    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD, **kwargs):
        super().__init__(**kwargs)
        self._init_mean = [float(v) for v in mean]
        self._init_std = [float(v) for v in std]

    def build(self, input_shape):
        channels = len(self._init_mean)
        self.mean = self.add_weight(
            name="mean", shape=(channels,), trainable=False,
            initializer=keras.initializers.Constant(self._init_mean))
        self.std = self.add_weight(
            name="std", shape=(channels,), trainable=False,
            initializer=keras.initializers.Constant(self._init_std))

    def call(self, inputs):
        mean = keras.ops.cast(self.mean, inputs.dtype)
        std = keras.ops.cast(self.std, inputs.dtype)
        return (inputs - mean) / std

    def get_config(self):
        config = super().get_config()
        config.update(mean=[float(v) for v in keras.ops.convert_to_numpy(self.mean)]
                      if self.built else self._init_mean,
                      std=[float(v) for v in keras.ops.convert_to_numpy(self.std)]
                      if self.built else self._init_std)
        return config


def conv(x, filters, kernel, stride, name, padding):
    """A bias-free convolution with PyTorch's symmetric zero padding.

    Args:
      x: the input tensor.
      filters, kernel, stride: as PyTorch's ``Conv2d``.
      name: the layer's name (the padding layer is ``<name>_pad``).
      padding: PyTorch's ``padding`` (0: none).

    Returns:
      The convolution's output tensor.
    """
    if padding:
        x = keras.layers.ZeroPadding2D(padding, name=f"{name}_pad")(x)
    return keras.layers.Conv2D(filters, kernel, strides=stride, padding="valid",
                               use_bias=False, name=name)(x)


def batch_norm(x, name):
    """PyTorch's ``BatchNorm2d`` defaults (eps 1e-5, momentum 0.1) as a Keras layer on ``x``."""
    return keras.layers.BatchNormalization(name=name, **_BN_KWARGS)(x)


def _shortcut(x, filters, stride, prefix):
    if stride == 1 and x.shape[-1] == filters:
        return x
    x = conv(x, filters, 1, stride, f"{prefix}.downsample.0", padding=0)
    return batch_norm(x, f"{prefix}.downsample.1")


def _basic_block(x, planes, stride, prefix):
    shortcut = _shortcut(x, planes, stride, prefix)
    y = conv(x, planes, 3, stride, f"{prefix}.conv1", padding=1)
    y = keras.layers.ReLU(name=f"{prefix}.relu1")(batch_norm(y, f"{prefix}.bn1"))
    y = conv(y, planes, 3, 1, f"{prefix}.conv2", padding=1)
    y = batch_norm(y, f"{prefix}.bn2")
    y = keras.layers.Add(name=f"{prefix}.add")([y, shortcut])
    return keras.layers.ReLU(name=f"{prefix}.relu")(y)


def _bottleneck_block(x, planes, stride, prefix):
    # torchvision "v1.5": the stride sits on the 3x3 convolution.
    shortcut = _shortcut(x, planes * 4, stride, prefix)
    y = conv(x, planes, 1, 1, f"{prefix}.conv1", padding=0)
    y = keras.layers.ReLU(name=f"{prefix}.relu1")(batch_norm(y, f"{prefix}.bn1"))
    y = conv(y, planes, 3, stride, f"{prefix}.conv2", padding=1)
    y = keras.layers.ReLU(name=f"{prefix}.relu2")(batch_norm(y, f"{prefix}.bn2"))
    y = conv(y, planes * 4, 1, 1, f"{prefix}.conv3", padding=0)
    y = batch_norm(y, f"{prefix}.bn3")
    y = keras.layers.Add(name=f"{prefix}.add")([y, shortcut])
    return keras.layers.ReLU(name=f"{prefix}.relu")(y)


def _stem(x, filters, small_inputs):
    if small_inputs:
        x = conv(x, filters, 3, 1, "conv1", padding=1)
        return keras.layers.ReLU(name="relu")(batch_norm(x, "bn1"))
    x = conv(x, filters, 7, 2, "conv1", padding=3)
    x = keras.layers.ReLU(name="relu")(batch_norm(x, "bn1"))
    x = keras.layers.ZeroPadding2D(1, name="maxpool_pad")(x)
    return keras.layers.MaxPooling2D(3, strides=2, name="maxpool")(x)


def build(arch: str, num_classes: int, image_size: int, width: float = 1.0,
          small_inputs: bool = False, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> keras.Model:
    """Builds a torchvision-layout ResNet that takes RGB images in [0, 1].

    Args:
      arch: one of ``ARCHITECTURES`` (resnet18/34/50/101, or the CIFAR-style resnet20;
        their stages are registered in ``tftransfer.models.architectures``).
      num_classes: size of the ``fc`` head.
      image_size: input height and width in pixels.
      width: multiplier on every stage's channel count (1.0 = torchvision's).
      small_inputs: 3x3 stride-1 stem without max-pool, for 32-pixel images
        (always used by ``resnet20``).
      mean, std: per-channel normalization applied inside the model.

    Returns:
      A functional ``keras.Model`` named after ``arch`` whose ``fc`` layer
      produces float32 logits (also under mixed precision).
    """
    record = architectures.get(arch)
    if arch not in ARCHITECTURES:
        raise UserError(f"{arch!r} is not a ResNet; build it with tftransfer.models.architectures.build.")
    if num_classes < 2:
        raise UserError(f"num_classes must be at least 2, got {num_classes}.")
    if width <= 0:
        raise UserError(f"width must be positive, got {width}.")
    cifar_style = record.options["cifar_style"]
    base = 16 if cifar_style else 64
    planes = [max(1, int(round(base * width * 2 ** i))) for i in range(len(record.stages))]
    block = _basic_block if record.options["block"] == "basic" else _bottleneck_block

    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = Normalize(mean, std, name="normalize")(inputs)
    x = _stem(x, planes[0], small_inputs or cifar_style)
    for stage, (stage_record, stage_planes) in enumerate(zip(record.stages, planes), start=1):
        for index, name in enumerate(stage_record.blocks):
            stride = 2 if index == 0 and stage > 1 else 1
            x = block(x, stage_planes, stride, name)
    x = keras.layers.GlobalAveragePooling2D(name=record.feature_layer)(x)
    # float32 logits: the loss and the attack gradients stay accurate under mixed precision.
    outputs = keras.layers.Dense(num_classes, name=record.head_layer, dtype="float32")(x)
    return keras.Model(inputs, outputs, name=arch)


def residual_block_names(model: keras.Model) -> list[str]:
    """Names of the residual blocks (``layer3.1``, ...) in forward order, as the
    architecture registry describes them ([] for a model it does not describe)."""
    return architectures.block_names(model)


def trainable_parameter_count(model: keras.Model) -> int:
    """Number of trainable parameters (torchvision's ``numel`` over parameters)."""
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))
