"""The containers every loader returns: one split (``ImageSet``) and a dataset (``TargetData``),
and the readers and decoder they share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import tensorflow as tf


@dataclass(frozen=True)
class ImageSet:
    """One split's examples: labels in memory, images in memory or read lazily.

    ``read(indices)`` returns an unbatched dataset of ``(uint8 image [h, w, c], label)``
    for the examples at ``indices``, in that order.
    """

    labels: np.ndarray
    read: Callable[[np.ndarray], tf.data.Dataset]
    fixed_shape: tuple | None = None   # (h, w, c) when every image has the same shape

    def __len__(self):
        return len(self.labels)


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
        shape = self.train.fixed_shape
        return shape is not None and shape[-1] == 1


def array_reader(images: np.ndarray, labels: np.ndarray):
    """Reads ``images[indices]`` and their labels from in-memory arrays."""
    def read(indices):
        indices = np.asarray(indices)
        return tf.data.Dataset.from_tensor_slices((images[indices], labels[indices]))
    return read


def decode(encoded):
    """Encoded image bytes (JPEG, PNG, GIF, BMP) -> uint8 RGB [h, w, 3]."""
    return tf.io.decode_image(encoded, channels=3, expand_animations=False)
