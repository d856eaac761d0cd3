"""``load``: a target name (TFDS) or path (image folder) -> ``TargetData``."""

from __future__ import annotations

import os
import re
from pathlib import Path

from tftransfer.data.folders import load_folder
from tftransfer.data.preprocess import Preprocessing
from tftransfer.data.sets import TargetData
from tftransfer.data.tfds_loader import load_tfds
from tftransfer.errors import UserError


def load(target: str, data_dir: str | None = None, download: bool = True,
         test_fraction: float = 0.2, seed: int = 0, image_key: str | None = None,
         label_key: str | None = None, train_split: str | None = None,
         test_split: str | None = None, resize: str = "center_crop",
         crop_fraction: float = 1.0, downsample: int | None = None,
         strict_images: bool = False) -> TargetData:
    """Loads a TFDS dataset by name or a folder of images.

    Args:
      target: a TFDS name (``mnist``, ``cifar10``, ``oxford_flowers102``...) or a path to
        a folder with ``train/`` and ``test/`` sub-folders of class folders, or with
        class folders only (then a stratified ``test_fraction`` is held out).
      data_dir: TFDS data directory (default: TFDS's own, honouring ``TFDS_DATA_DIR``).
      download: let TFDS download and prepare a dataset that is not there yet.
      test_fraction: held-out share for a folder without a ``test/`` sub-folder.
      seed: seed of that hold-out (fixed, not the run's seed, so that every run and
        ``evaluate`` see the same test images).
      image_key, label_key: TFDS feature keys of the images and the labels (default: the
        builder's supervised keys, else its only image and its only class-label feature).
      train_split, test_split: TFDS split names or slices (default: ``train``, and ``test``
        or else ``validation``).
      resize, crop_fraction: how images become the evaluation input (``Preprocessing``:
        the centre square of the shorter side by default, or ``squash``).
      downsample: resize every image down to this size and back up (``Preprocessing``).
      strict_images: an image folder's files that do not look like photos of the task
        stop the load instead of a warning (``hygiene.check_images``); TFDS: no effect.

    Returns:
      A ``TargetData``.
    """
    preprocessing = Preprocessing(resize, crop_fraction, downsample)
    tfds_only = {"--image-key": image_key, "--label-key": label_key,
                 "--train-split": train_split, "--test-split": test_split}
    if _looks_like_path(target):
        given = [flag for flag, value in tfds_only.items() if value is not None]
        if given:
            raise UserError(f"{', '.join(given)} apply to TFDS datasets only; the image folder "
                            f"{target!r} is split by its train/ and test/ sub-folders (or "
                            f"--test-fraction).")
        target_data = load_folder(target, test_fraction=test_fraction, seed=seed,
                                  strict_images=strict_images)
    else:
        target_data = load_tfds(target, data_dir=data_dir, download=download,
                                image_key=image_key, label_key=label_key,
                                train_split=train_split, test_split=test_split)
    return target_data.with_preprocessing(preprocessing)


# TFDS names with a config and/or version, e.g. "imagenet_resized/32x32:0.1.0".
_TFDS_NAME = re.compile(r"^[a-z][a-z0-9_]*(/[A-Za-z0-9_.\-]+)?(:[0-9.*]+)?$")


def _looks_like_path(target: str) -> bool:
    # "name/config" is a TFDS name unless a folder of that name exists.
    if Path(target).is_dir() or target.startswith((".", os.sep, "~")):
        return True
    return os.sep in target and not _TFDS_NAME.match(target)
