"""Checking a conversion numerically: the checkpoint re-run in PyTorch (functional ops in
torchvision's layout, no torchvision needed and independent of the Keras model), compared with
the converted model's logits.
"""

from __future__ import annotations

import numpy as np

from tftransfer.convert.reading import Checkpoint, import_torch
from tftransfer.errors import UserError

BN_EPSILON = 1e-5


def reference_logits(checkpoint: Checkpoint, images: np.ndarray) -> np.ndarray:
    """The checkpoint's logits computed by PyTorch (functional ops, torchvision layout).

    Independent of the Keras model, so it checks the whole conversion.

    Args:
      checkpoint: from ``read_checkpoint``.
      images: float32 RGB images in [0, 1], shape [N, H, W, 3].

    Returns:
      float32 logits, shape [N, num_classes].
    """
    from tftransfer.models import resnet

    torch = import_torch()
    functional = torch.nn.functional
    weights = {key: torch.from_numpy(value) for key, value in checkpoint.state.items()}
    mean = torch.tensor(checkpoint.mean or resnet.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(checkpoint.std or resnet.IMAGENET_STD).view(1, 3, 1, 1)

    def batch_norm(x, prefix):
        return functional.batch_norm(
            x, weights[f"{prefix}.running_mean"], weights[f"{prefix}.running_var"],
            weights[f"{prefix}.weight"], weights[f"{prefix}.bias"], training=False,
            eps=BN_EPSILON)

    def conv_bn(x, prefix, conv, bn, stride, padding):
        return batch_norm(functional.conv2d(x, weights[f"{prefix}{conv}.weight"], stride=stride,
                                            padding=padding), f"{prefix}{bn}")

    def block(x, prefix, stride):
        if f"{prefix}.downsample.0.weight" in weights:
            shortcut = conv_bn(x, prefix, ".downsample.0", ".downsample.1", stride, 0)
        else:
            shortcut = x
        if f"{prefix}.conv3.weight" in weights:  # bottleneck, stride on the 3x3 conv (v1.5)
            y = functional.relu(conv_bn(x, prefix, ".conv1", ".bn1", 1, 0))
            y = functional.relu(conv_bn(y, prefix, ".conv2", ".bn2", stride, 1))
            y = conv_bn(y, prefix, ".conv3", ".bn3", 1, 0)
        else:
            y = functional.relu(conv_bn(x, prefix, ".conv1", ".bn1", stride, 1))
            y = conv_bn(y, prefix, ".conv2", ".bn2", 1, 1)
        return functional.relu(y + shortcut)

    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).permute(0, 3, 1, 2)
        x = (x - mean) / std
        x = functional.relu(conv_bn(x, "", "conv1", "bn1", 2, 3))
        x = functional.max_pool2d(x, 3, 2, 1)
        stage = 1
        while f"layer{stage}.0.conv1.weight" in weights:
            index = 0
            while f"layer{stage}.{index}.conv1.weight" in weights:
                stride = 2 if index == 0 and stage > 1 else 1
                x = block(x, f"layer{stage}.{index}", stride)
                index += 1
            stage += 1
        x = x.mean(dim=(2, 3))
        logits = functional.linear(x, weights["fc.weight"], weights["fc.bias"])
    return logits.numpy()


def verify(model, checkpoint: Checkpoint, image_size: int, num_images: int = 2,
           seed: int = 0) -> float:
    """Largest absolute logit difference between the Keras model and PyTorch.

    Raises a ``UserError`` when it exceeds 1e-3 of the logits' scale (float32
    round-off is far below that; a mapping error is far above).
    """
    images = np.random.default_rng(seed).uniform(
        0.0, 1.0, (num_images, image_size, image_size, 3)).astype(np.float32)
    expected = reference_logits(checkpoint, images)
    actual = np.asarray(model(images, training=False))
    diff = float(np.max(np.abs(actual - expected)))
    tolerance = 1e-3 * max(1.0, float(np.max(np.abs(expected))))
    if not diff <= tolerance:  # also catches NaN
        raise UserError(f"Converted model disagrees with PyTorch on {str(checkpoint.path)!r}: "
                        f"largest logit difference {diff:.3g} > {tolerance:.3g}.")
    return diff
