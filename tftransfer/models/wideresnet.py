"""CIFAR-style Wide Residual Networks (Zagoruyko & Komodakis, 2016), e.g. WRN-16-4.

A WRN-d-k has a 3x3 stem convolution with 16 channels and three stages of (d - 4) / 6
pre-activation basic blocks each, with 16k, 32k and 64k channels (WRN-16-4: two blocks
per stage, widths 16/64/128/256), then BatchNorm-ReLU, global average pooling and the
``fc`` classifier. It is a common baseline of robust training (Madry et al.'s CIFAR-10
models, RobustBench).

The layer names follow torchvision's convention and the architecture registry's
protocol (``tftransfer.models.architectures``): ``conv1``; blocks ``layer1.0`` ... ``layer3.1``
with ``bn1``, ``relu1``, ``conv1``, ``bn2``, ``relu2``, ``conv2``, ``downsample.0`` (the
1x1 shortcut convolution, on the pre-activated input, as in the reference code) and
``add``; then ``bn1``, ``relu``, ``avgpool``, ``fc``, as RobustBench's WideResNet names
them (its ``block1.layer.0.conv1`` is our ``layer1.0.conv1``). The final ``bn1``/``relu``
are the registry's ``top_layers``: in a pre-activation network they finish the last
block, so they fine-tune whenever a block does.

Adding this architecture touched this module, one entry in the registry
(``architectures._REGISTRY``) and tests only: pretraining, fine-tuning with block-level
freezing and the feature cache, tuning's stage choices and loading all ask the registry.
"""

from __future__ import annotations

import keras

from tftransfer.models import architectures
from tftransfer.errors import UserError
from tftransfer.models.resnet import CIFAR10_MEAN, CIFAR10_STD, Normalize, batch_norm, conv

BASE_WIDTH = 16


def _pre_activation_block(x, planes, stride, prefix):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3 plus the shortcut (the input, or a 1x1 convolution
    of the pre-activated input when the shape changes)."""
    activated = keras.layers.ReLU(name=f"{prefix}.relu1")(batch_norm(x, f"{prefix}.bn1"))
    if stride == 1 and x.shape[-1] == planes:
        shortcut = x
    else:
        shortcut = conv(activated, planes, 1, stride, f"{prefix}.downsample.0", padding=0)
    y = conv(activated, planes, 3, stride, f"{prefix}.conv1", padding=1)
    y = keras.layers.ReLU(name=f"{prefix}.relu2")(batch_norm(y, f"{prefix}.bn2"))
    y = conv(y, planes, 3, 1, f"{prefix}.conv2", padding=1)
    return keras.layers.Add(name=f"{prefix}.add")([y, shortcut])


def build(arch: str, num_classes: int, image_size: int, width: float = 1.0,
          small_inputs: bool = True, mean=CIFAR10_MEAN, std=CIFAR10_STD) -> keras.Model:
    """Builds a registered CIFAR-style WideResNet that takes RGB images in [0, 1].

    Args:
      arch: a registered WideResNet (``wrn16_4``); its stages and widen factor are the
        registry's.
      num_classes: size of the ``fc`` head.
      image_size: input height and width in pixels (any size: the network is fully
        convolutional up to the global pooling).
      width: multiplier on every channel count (1.0 = the paper's; less for tiny tests).
      small_inputs: ignored; the stem is always the CIFAR one (3x3, stride 1, no max-pool),
        as for ``resnet20``.
      mean, std: per-channel normalization applied inside the model.

    Returns:
      A functional ``keras.Model`` named ``arch`` whose ``fc`` layer produces float32
      logits (also under mixed precision).
    """
    del small_inputs  # the signature is the registry's builder protocol
    record = architectures.get(arch)
    if record.builder != "tftransfer.models.wideresnet:build":
        raise UserError(f"{arch!r} is not a WideResNet; build it with "
                        f"tftransfer.models.architectures.build.")
    if num_classes < 2:
        raise UserError(f"num_classes must be at least 2, got {num_classes}.")
    if width <= 0:
        raise UserError(f"width must be positive, got {width}.")
    widen = record.options["widen_factor"]
    planes = [max(1, int(round(BASE_WIDTH * widen * width * 2 ** i)))
              for i in range(len(record.stages))]

    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = Normalize(mean, std, name="normalize")(inputs)
    x = conv(x, max(1, int(round(BASE_WIDTH * width))), 3, 1, "conv1", padding=1)
    for stage, (stage_record, stage_planes) in enumerate(zip(record.stages, planes)):
        for index, name in enumerate(stage_record.blocks):
            stride = 2 if index == 0 and stage > 0 else 1
            x = _pre_activation_block(x, stage_planes, stride, name)
    # The last block's output is not activated yet (pre-activation): BN-ReLU before pooling.
    x = keras.layers.ReLU(name="relu")(batch_norm(x, "bn1"))
    x = keras.layers.GlobalAveragePooling2D(name=record.feature_layer)(x)
    # float32 logits: the loss and the attack gradients stay accurate under mixed precision.
    outputs = keras.layers.Dense(num_classes, name=record.head_layer, dtype="float32")(x)
    return keras.Model(inputs, outputs, name=arch)
