"""The containers every loader returns: one split (``ImageSet``) and a dataset (``TargetData``),
and the readers and decoder they share."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import numpy as np
import tensorflow as tf

from tftransfer.data.preprocess import Preprocessing


@dataclass(frozen=True)
class ImageSet:
    """One split's examples: labels in memory, images in memory or read lazily.

    ``read(indices)`` returns an unbatched dataset of ``(uint8 image [h, w, c], label)``
    for the examples at ``indices``, in that order. ``preprocessing`` is how every pipeline
    over this split turns an image into the model's evaluation input.
    """

    labels: np.ndarray
    read: Callable[[np.ndarray], tf.data.Dataset]
    fixed_shape: tuple | None = None   # (h, w, c) when every image has the same shape
    preprocessing: Preprocessing = Preprocessing()

    def __len__(self):
        return len(self.labels)

    @property
    def grayscale(self) -> bool:
        """Whether the images have one channel (known for fixed-shape datasets only)."""
        return self.fixed_shape is not None and self.fixed_shape[-1] == 1


@dataclass(frozen=True)
class TargetData:
    """A dataset with a training and a test split and its class names."""

    name: str
    class_names: tuple
    train: ImageSet
    test: ImageSet
    flip: bool = True

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def grayscale(self) -> bool:
        """Whether the images have one channel (known for fixed-shape datasets only)."""
        return self.train.grayscale

    def with_preprocessing(self, preprocessing: Preprocessing) -> "TargetData":
        """This dataset with both splits read through ``preprocessing``."""
        return dataclasses.replace(
            self, train=dataclasses.replace(self.train, preprocessing=preprocessing),
            test=dataclasses.replace(self.test, preprocessing=preprocessing))


def array_reader(images: np.ndarray, labels: np.ndarray):
    """Reads ``images[indices]`` and their labels from in-memory arrays."""
    def read(indices):
        indices = np.asarray(indices)
        return tf.data.Dataset.from_tensor_slices((images[indices], labels[indices]))
    return read


def decode(encoded):
    """Encoded image bytes (JPEG, PNG, GIF, BMP) -> uint8 RGB [h, w, 3]."""
    return tf.io.decode_image(encoded, channels=3, expand_animations=False)
