"""Checkpoint weights -> Keras: PyTorch tensors mapped by name onto the registered architecture's
model (``tftransfer.models.architectures``; the ResNets' layer names mirror torchvision's), transposed to
Keras' layouts and shape-checked; an unexpected, missing or misshapen key stops with a message
naming it.
"""

from __future__ import annotations

import numpy as np

from tftransfer.models import architectures
from tftransfer.convert.reading import Checkpoint
from tftransfer.errors import UserError

# Architectures whose torchvision layout this module can read (the CIFAR-style
# resnet20 has no published PyTorch counterpart with these names).
ARCHITECTURES = tuple(name for name in architectures.NAMES
                      if architectures.get(name).torchvision)
IMAGENET_IMAGE_SIZE = 224


def infer_num_classes(checkpoint: Checkpoint, head: str = architectures.DEFAULT_HEAD) -> int:
    """The number of classes, read from the shape of ``<head>.weight`` (the architecture's
    head layer; torchvision's ``fc``)."""
    weight = checkpoint.state.get(f"{head}.weight")
    if weight is None or weight.ndim != 2:
        raise UserError(f"Checkpoint {str(checkpoint.path)!r} has no 2-D '{head}.weight' to read "
                        f"the number of classes from; is it a torchvision-layout ResNet?")
    return int(weight.shape[0])


def _keras_targets(model) -> dict:
    """torchvision key -> (Keras variable, transpose axes or None) for every model weight."""
    import keras

    targets = {}
    for layer in model.layers:
        name = layer.name
        if isinstance(layer, keras.layers.Conv2D):
            # PyTorch (out, in, h, w) -> Keras (h, w, in, out)
            targets[f"{name}.weight"] = (layer.kernel, (2, 3, 1, 0))
        elif isinstance(layer, keras.layers.BatchNormalization):
            targets[f"{name}.weight"] = (layer.gamma, None)
            targets[f"{name}.bias"] = (layer.beta, None)
            targets[f"{name}.running_mean"] = (layer.moving_mean, None)
            targets[f"{name}.running_var"] = (layer.moving_variance, None)
        elif isinstance(layer, keras.layers.Dense):
            # PyTorch Linear (out, in) -> Keras Dense (in, out)
            targets[f"{name}.weight"] = (layer.kernel, (1, 0))
            targets[f"{name}.bias"] = (layer.bias, None)
    return targets


def _describe_keys(keys: list[str]) -> str:
    shown = ", ".join(repr(key) for key in keys[:3])
    return shown + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")


def _check_keys(checkpoint: Checkpoint, targets: dict, arch: str, width: float) -> None:
    """Stops on the first kind of key mismatch, naming the keys."""
    missing = [key for key in targets if key not in checkpoint.state]
    unexpected = sorted(set(checkpoint.state) - set(targets))
    model = f"{arch} (width {width:g})"
    if missing:
        raise UserError(f"Checkpoint {str(checkpoint.path)!r} is missing the key "
                        f"{_describe_keys(missing)} that {model} needs; is --arch right?")
    if unexpected:
        raise UserError(f"Checkpoint {str(checkpoint.path)!r} has the unexpected key "
                        f"{_describe_keys(unexpected)}, which {model} does not have; "
                        f"is --arch right?")


def assign_weights(model, checkpoint: Checkpoint, arch: str, width: float = 1.0) -> None:
    """Copies the checkpoint's weights into ``model`` by name, asserting every shape.

    Args:
      model: a model from ``tftransfer.models.architectures.build`` with matching arch/width/classes.
      checkpoint: the weights to copy.
      arch, width: only used to name the model in error messages.
    """
    targets = _keras_targets(model)
    _check_keys(checkpoint, targets, arch, width)
    for key, (variable, axes) in targets.items():
        value = checkpoint.state[key]
        converted = value if axes is None else np.transpose(value, axes)
        if tuple(converted.shape) != tuple(variable.shape):
            # report the expected shape in PyTorch's layout, as the key is PyTorch's
            wanted = tuple(variable.shape) if axes is None else tuple(
                int(variable.shape[i]) for i in np.argsort(axes))
            raise UserError(f"Checkpoint {str(checkpoint.path)!r}: {key!r} has shape "
                            f"{tuple(value.shape)} but {arch} (width {width:g}) expects {wanted}; "
                            f"is --arch/--width right?")
        variable.assign(converted.astype(np.float32))


def build_keras_model(checkpoint: Checkpoint, arch: str, width: float = 1.0,
                      image_size: int = IMAGENET_IMAGE_SIZE):
    """Builds the registered architecture's Keras model for a checkpoint and loads its weights.

    Args:
      checkpoint: from ``read_checkpoint``.
      arch: one of ``ARCHITECTURES``.
      width: channel multiplier the checkpoint was trained with (1.0 = torchvision's).
      image_size: input height/width of the Keras model.

    Returns:
      A ``keras.Model`` taking RGB [0, 1] images, normalization taken from the
      checkpoint when it has one (torchvision's ImageNet statistics otherwise).
    """
    from tftransfer.models import resnet

    if arch not in ARCHITECTURES:
        raise UserError(f"Cannot convert to architecture {arch!r}; choose one of "
                        f"{', '.join(ARCHITECTURES)}.")
    mean = checkpoint.mean or resnet.IMAGENET_MEAN
    std = checkpoint.std or resnet.IMAGENET_STD
    record = architectures.get(arch)
    model = record.build(infer_num_classes(checkpoint, record.head_layer), image_size,
                         width=width, mean=mean, std=std)
    assign_weights(model, checkpoint, arch, width)
    return model
