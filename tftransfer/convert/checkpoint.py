"""PyTorch ResNet checkpoints (robustness library, robust-models-transfer, torchvision) -> Keras.

``convert`` reads a checkpoint (``convert.reading``: file checks, safe unpickling, layout
detection), maps its tensors onto the registered architecture's Keras model (``convert.weight_mapping``),
checks the logits against PyTorch (``convert.verify``) and returns the model with its
``config.json``; the caller saves both. The package's face (``tftransfer.convert``) is the one
import path of the public names of these modules.

PyTorch is an optional extra and is imported only inside functions.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from tftransfer.models import architectures
from tftransfer.convert.reading import Checkpoint, file_sha256, read_checkpoint
from tftransfer.convert.verify import verify
from tftransfer.convert.weight_mapping import (IMAGENET_IMAGE_SIZE, build_keras_model,
                                               infer_num_classes)


def model_config(checkpoint: Checkpoint, arch: str, width: float, image_size: int,
                 sha256: str, extra: dict | None = None) -> dict:
    """The ``config.json`` of a converted model: what it is and where it came from."""
    from tftransfer.models import resnet

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
