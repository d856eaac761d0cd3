"""PyTorch ResNet checkpoints (robustness library, robust-models-transfer, torchvision) -> Keras.

Three on-disk layouts are read:

* ``robustness``: the MadryLab robustness library's ``.pt`` files, a dict whose
  ``'model'`` (legacy: ``'state_dict'``) entry holds ``module.model.*`` (the
  network), ``module.normalizer.new_mean/new_std`` (the input normalization) and
  a duplicate of both under ``module.attacker.*`` (ignored);
* ``robust-models-transfer``: Salman et al.'s ``.ckpt`` files (same layout);
* ``torchvision``: a plain ResNet state dict (``conv1.weight``, ..., ``fc.bias``).

The weights are mapped by name onto the registered architecture's model
(``tftransfer.architectures``; the ResNets' layer names mirror torchvision's),
transposed to Keras' layouts and shape-checked; an unexpected, missing or misshapen
key stops the conversion with a message naming it. ``reference_logits`` re-runs the
checkpoint in PyTorch (functional ops, no torchvision needed) so a conversion can verify
itself numerically.

PyTorch is an optional extra and is imported only inside this module's functions.
"""

from __future__ import annotations

import hashlib
import pickle
import re
import sys
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tftransfer import architectures
from tftransfer.errors import UserError

# Architectures whose torchvision layout this module can read (the CIFAR-style
# resnet20 has no published PyTorch counterpart with these names).
ARCHITECTURES = tuple(name for name in architectures.NAMES
                      if architectures.get(name).torchvision)
FORMATS = ("robustness", "robust-models-transfer", "torchvision")
IMAGENET_IMAGE_SIZE = 224
BN_EPSILON = 1e-5
# torch.save's legacy (pre-1.6, non-zip) files start with this pickled magic number.
_LEGACY_MAGIC = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)[:-1]  # drop the STOP opcode
_TORCH_MISSING = ('Converting PyTorch checkpoints needs PyTorch, which is not installed; '
                  'install it with: pip install -e ".[torch]"')
_PICKLE_WARNING = (
    "warning: loading {path} with --trust-pickle: this unpickles the file with full Python "
    "pickle/dill, which can run arbitrary code hidden in it. Only do this for a file from a "
    "source you trust (ideally with a checked sha256).")


class UnsafePickleError(UserError):
    """The safe loader refused a checkpoint holding pickled Python objects.

    Attributes:
      path: the checkpoint file.
      reason: the safe unpickler's reason (e.g. the refused global).
    """

    def __init__(self, message: str, path: Path, reason: str):
        super().__init__(message)
        self.path = path
        self.reason = reason


@dataclass
class Checkpoint:
    """The network weights read from a checkpoint, in PyTorch layout.

    Attributes:
      path: the checkpoint file.
      format: one of ``FORMATS``.
      state: network weights by torchvision key (``conv1.weight``, ...), float32 arrays.
      mean, std: the input normalization stored in the checkpoint, or None.
      metadata: small facts found next to the weights (e.g. ``epoch``).
    """

    path: Path
    format: str
    state: dict
    mean: tuple | None = None
    std: tuple | None = None
    metadata: dict = field(default_factory=dict)


def import_torch():
    """Imports PyTorch, or stops with the install command for the optional extra."""
    try:
        import torch
    except ImportError as error:
        raise UserError(_TORCH_MISSING) from error
    return torch


def file_sha256(path) -> str:
    """The hex sha256 of a file, read in chunks (checkpoints are hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _looks_like_torch_file(path: Path) -> bool:
    """True for a zip archive (torch.save since 1.6) or a legacy torch.save file."""
    if zipfile.is_zipfile(path):
        return True
    with open(path, "rb") as handle:
        return handle.read(len(_LEGACY_MAGIC)) == _LEGACY_MAGIC


def load_checkpoint_object(path, trust_pickle: bool = False):
    """Reads a ``torch.save`` file safely (``weights_only=True``) unless told otherwise.

    The robustness library's older files were pickled with dill and hold objects
    that the safe loader refuses; those need ``trust_pickle=True``, which warns on
    standard error because unpickling can run arbitrary code.

    Args:
      path: the checkpoint file.
      trust_pickle: allow a full (unsafe) unpickling when the safe load is refused.

    Returns:
      The unpickled object (usually a dict).
    """
    torch = import_torch()
    path = Path(path)
    if not path.is_file():
        raise UserError(f"Checkpoint file {str(path)!r} does not exist.")
    if not _looks_like_torch_file(path):
        raise UserError(f"{str(path)!r} is not a PyTorch checkpoint (neither a torch.save zip "
                        f"archive nor a legacy torch.save file; an interrupted download looks "
                        f"like this too).")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if not trust_pickle:
            reason = _refusal_reason(error)
            raise UnsafePickleError(
                f"{str(path)!r} cannot be read safely (weights_only=True): it contains pickled "
                f"Python objects ({reason}), as the robustness library's older dill-pickled "
                f"files do, and tftransfer has not checked its sha256 ({file_sha256(path)}) "
                f"against any published value, so pass --trust-pickle only if you trust where "
                f"the file comes from (unpickling can run arbitrary code).", path,
                reason) from error
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise UserError(f"Could not read checkpoint {str(path)!r} (truncated or corrupt?): "
                        f"{_first_line(error)}") from error
    return _load_trusted(torch, path)


def _load_trusted(torch, path: Path):
    """The full-pickle load behind ``--trust-pickle``, announced on standard error."""
    print(_PICKLE_WARNING.format(path=path), file=sys.stderr)
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except ModuleNotFoundError as error:
        # dill-pickled files name dill's own helpers, so unpickling imports dill.
        raise UserError(f"Reading {str(path)!r} needs the Python module {error.name!r}; install "
                        f"it (pip install {error.name}) and retry.") from error
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError,
            AttributeError) as error:
        raise UserError(f"Could not read checkpoint {str(path)!r}: {_first_line(error)}") from error


def _refusal_reason(error: BaseException) -> str:
    """The safe unpickler's one-line reason (e.g. the refused global)."""
    match = re.search(r"WeightsUnpickler error: ([^\n]*?)(?:\. Please|\n|$)", str(error))
    return f"the safe loader says: {match.group(1)}" if match else "the safe loader refused it"


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _inner_state_dict(obj, path: Path) -> tuple[Mapping, dict]:
    """The state dict inside a checkpoint object, plus metadata such as the epoch."""
    if not isinstance(obj, Mapping):
        raise UserError(f"{str(path)!r} holds a {type(obj).__name__}, not a state dict or a "
                        f"checkpoint dict with a 'model' or 'state_dict' entry.")
    metadata = {}
    if isinstance(obj.get("epoch"), int):
        metadata["epoch"] = obj["epoch"]
    for entry in ("model", "state_dict"):  # 'state_dict': the robustness library's legacy files
        if isinstance(obj.get(entry), Mapping):
            return obj[entry], metadata
    return obj, metadata


def _strip_data_parallel(state: Mapping) -> dict:
    """Removes the ``module.`` prefix that ``torch.nn.DataParallel`` puts on every key."""
    if state and all(str(key).startswith("module.") for key in state):
        return {key[len("module."):]: value for key, value in state.items()}
    return dict(state)


def _is_robustness_layout(state: Mapping) -> bool:
    return any(key.startswith(("model.", "normalizer.")) for key in state)


def _to_numpy(torch, key: str, value, path: Path) -> np.ndarray:
    if not isinstance(value, torch.Tensor):
        raise UserError(f"Checkpoint {str(path)!r}: entry {key!r} is a {type(value).__name__}, "
                        f"not a tensor.")
    return value.detach().cpu().to(torch.float32).numpy()


def _split_robustness(torch, state: Mapping, path: Path) -> tuple[dict, tuple, tuple]:
    """Network weights and normalization from a robustness-library state dict."""
    network, normalizer = {}, {}
    for key, value in state.items():
        if key.startswith("attacker."):
            continue  # the attacker holds a second reference to the same network
        if key.startswith("model."):
            network[key[len("model."):]] = value
        elif key in ("normalizer.new_mean", "normalizer.new_std"):
            normalizer[key] = _to_numpy(torch, key, value, path).reshape(-1)
        else:
            raise UserError(f"Checkpoint {str(path)!r} has an unexpected key {key!r}: a "
                            f"robustness-library checkpoint holds only model.*, normalizer.* "
                            f"and attacker.* entries.")
    for key in ("normalizer.new_mean", "normalizer.new_std"):
        if key not in normalizer:
            raise UserError(f"Checkpoint {str(path)!r} is missing the key {key!r} (the input "
                            f"normalization of a robustness-library checkpoint).")
        if normalizer[key].shape != (3,):
            raise UserError(f"Checkpoint {str(path)!r}: {key!r} has {normalizer[key].size} "
                            f"values, expected 3 (one per RGB channel).")
    # str() of a float32 is its shortest round-trip form: 0.4, not 0.4000000059604645.
    return (network, tuple(float(str(v)) for v in normalizer["normalizer.new_mean"]),
            tuple(float(str(v)) for v in normalizer["normalizer.new_std"]))


def read_checkpoint(path, trust_pickle: bool = False) -> Checkpoint:
    """Reads any of the supported checkpoint layouts into a ``Checkpoint``.

    Args:
      path: a robustness ``.pt``, a robust-models-transfer ``.ckpt`` or a torchvision state dict.
      trust_pickle: see ``load_checkpoint_object``.

    Returns:
      The network weights (PyTorch layout, ``num_batches_tracked`` dropped), the
      normalization if the checkpoint has one, and the detected format.
    """
    torch = import_torch()
    path = Path(path)
    inner, metadata = _inner_state_dict(load_checkpoint_object(path, trust_pickle), path)
    state = _strip_data_parallel(inner)
    if _is_robustness_layout(state):
        network, mean, std = _split_robustness(torch, state, path)
        fmt = "robust-models-transfer" if path.suffix == ".ckpt" else "robustness"
    else:
        network, mean, std, fmt = state, None, None, "torchvision"
    arrays = {key: _to_numpy(torch, key, value, path) for key, value in network.items()
              # a BatchNorm step counter, not a weight
              if not key.endswith(".num_batches_tracked")}
    if not arrays:
        raise UserError(f"Checkpoint {str(path)!r} holds no network weights.")
    return Checkpoint(path=path, format=fmt, state=arrays, mean=mean, std=std, metadata=metadata)


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
      model: a model from ``tftransfer.architectures.build`` with matching arch/width/classes.
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
    from tftransfer import resnet

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


def reference_logits(checkpoint: Checkpoint, images: np.ndarray) -> np.ndarray:
    """The checkpoint's logits computed by PyTorch (functional ops, torchvision layout).

    Independent of the Keras model, so it checks the whole conversion.

    Args:
      checkpoint: from ``read_checkpoint``.
      images: float32 RGB images in [0, 1], shape [N, H, W, 3].

    Returns:
      float32 logits, shape [N, num_classes].
    """
    from tftransfer import resnet

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


def model_config(checkpoint: Checkpoint, arch: str, width: float, image_size: int,
                 sha256: str, extra: dict | None = None) -> dict:
    """The ``config.json`` of a converted model: what it is and where it came from."""
    from tftransfer import resnet

    num_classes = infer_num_classes(checkpoint, architectures.get(arch).head_layer)
    config = {
        "kind": "converted",
        "arch": arch,
        "width": width,
        "num_classes": num_classes,
        # ImageNet class names are not stored in the checkpoints; indices stand in for them.
        "class_names": [str(index) for index in range(num_classes)],
        "image_size": image_size,
        "normalization": {
            "mean": list(checkpoint.mean or resnet.IMAGENET_MEAN),
            "std": list(checkpoint.std or resnet.IMAGENET_STD),
            "from": "checkpoint" if checkpoint.mean else "torchvision ImageNet default",
        },
        "source": {
            "checkpoint": str(checkpoint.path.resolve()),
            "format": checkpoint.format,
            "sha256": sha256,
            **checkpoint.metadata,
        },
        "attack": None,
        "eps": None,
    }
    config.update(extra or {})
    return config


def report_phase(message: str) -> None:
    """One line of progress on stderr: a ResNet-50 conversion takes tens of seconds, in
    phases that otherwise print nothing."""
    print(f"convert: {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Converted:
    """A converted checkpoint: the Keras model, the ``config.json`` it goes with (the caller
    saves both, e.g. with ``saving.save_model_dir``) and the facts a result row reports."""

    model: object
    config: dict
    row: dict


def convert(checkpoint_path, arch: str = "resnet50", width: float = 1.0,
            image_size: int = IMAGENET_IMAGE_SIZE, trust_pickle: bool = False,
            check: bool = True, extra_config: dict | None = None) -> Converted:
    """Converts a PyTorch checkpoint into a Keras model and its config (not saved here).

    Args:
      checkpoint_path: the PyTorch checkpoint.
      arch: one of ``ARCHITECTURES``.
      width: channel multiplier (1.0 = torchvision's widths).
      image_size: input height/width of the Keras model.
      trust_pickle: allow an unsafe full unpickling (see ``load_checkpoint_object``).
      check: compare logits with PyTorch on random images first.
      extra_config: merged into the config (e.g. dataset, attack, eps).

    Returns:
      The model, its config and a result row: arch, num_classes, format, sha256 and
      max_abs_diff.
    """
    path = Path(checkpoint_path)
    size = f" ({path.stat().st_size / 2**20:.1f} MiB)" if path.is_file() else ""
    report_phase(f"reading checkpoint {path}{size}")
    checkpoint = read_checkpoint(path, trust_pickle=trust_pickle)
    report_phase(f"converting {len(checkpoint.state)} tensors ({checkpoint.format} layout) to "
                 f"{arch} (width {width:g}, {image_size} px)")
    model = build_keras_model(checkpoint, arch, width, image_size)
    max_abs_diff = None
    if check:
        report_phase("checking the logits against PyTorch on 2 random images")
        max_abs_diff = verify(model, checkpoint, image_size)
        report_phase(f"largest logit difference {max_abs_diff:.2g}")
    sha256 = file_sha256(checkpoint.path)
    config = model_config(checkpoint, arch, width, image_size, sha256, extra_config)
    if max_abs_diff is not None:
        config["source"]["max_abs_diff_vs_pytorch"] = max_abs_diff
    row = {"arch": arch, "width": width, "num_classes": config["num_classes"],
           "format": checkpoint.format, "sha256": sha256, "max_abs_diff": max_abs_diff}
    return Converted(model, config, row)
