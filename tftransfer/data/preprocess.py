"""Any decoded image -> the model's input: float32 RGB in [0, 1] at the model's size.

Evaluation (and the cached trunk features, which are computed from evaluation inputs) resize
the shorter side and take the centre square by default, so a photo keeps its aspect ratio;
``squash`` resizes the whole image to a square instead. A square image gives the same pixels
either way (at ``crop_fraction`` 1), so 28 or 32 px datasets are read exactly as before.
"""

from __future__ import annotations

from dataclasses import dataclass

import tensorflow as tf

from tftransfer.errors import UserError

RESIZE_MODES = ("center_crop", "squash")


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes an ``image_size`` square for evaluation.

    ``resize``: ``center_crop`` (the shorter side to ``image_size / crop_fraction``, then the
    centre ``image_size`` square; ImageNet's convention is ``crop_fraction`` 0.875, 224 of
    256) or ``squash`` (the whole image to the square, aspect ratio lost). ``downsample``:
    the result resized down to that many pixels a side and back up (the paper's low-resolution
    targets: 32 px upsampled to 224), or None.
    """

    resize: str = "center_crop"
    crop_fraction: float = 1.0
    downsample: int | None = None

    def __post_init__(self):
        if self.resize not in RESIZE_MODES:
            raise UserError(f"resize must be one of {', '.join(RESIZE_MODES)}, "
                            f"got {self.resize!r}.")
        if not 0.0 < self.crop_fraction <= 1.0:
            raise UserError(f"crop_fraction must be in (0, 1], got {self.crop_fraction}.")
        if self.downsample is not None and self.downsample < 2:
            raise UserError(f"downsample must be at least 2 pixels, got {self.downsample}.")


def unit_rgb(image):
    """uint8 (or float) image with 1, 3 or 4 channels -> float32 RGB in [0, 1]."""
    image = tf.convert_to_tensor(image)
    if image.dtype == tf.uint8:
        image = tf.cast(image, tf.float32) / 255.0
    else:
        image = tf.cast(image, tf.float32)
    if image.shape[-1] == 1:
        image = tf.image.grayscale_to_rgb(image)
    elif image.shape[-1] == 4:
        image = image[..., :3]
    return image


def resize(image, size):
    """Bilinear, antialiased resize to ``size`` (height, width), clipped to [0, 1]."""
    resized = tf.image.resize(image, size, method="bilinear", antialias=True)
    return tf.clip_by_value(resized, 0.0, 1.0)


def resize_shorter_side(image, side):
    """``image`` resized so that its shorter side is ``side`` pixels, aspect ratio kept."""
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    side = tf.cast(side, tf.float32)
    scaled = tf.maximum(side, tf.round(shape * side / tf.reduce_min(shape)))
    return resize(image, tf.cast(scaled, tf.int32))


def center_crop(image, size: int):
    """The centre ``size`` x ``size`` square of an image at least that large."""
    shape = tf.shape(image)
    top, left = (shape[0] - size) // 2, (shape[1] - size) // 2
    cropped = image[top:top + size, left:left + size]
    cropped.set_shape([size, size, image.shape[-1]])
    return cropped


def to_model_input(image, image_size: int | None, preprocessing: Preprocessing | None = None):
    """uint8 (or float) image of any size/channels -> float32 RGB in [0, 1] at ``image_size``
    (see ``Preprocessing``; default: centre crop of the whole shorter side).

    The export signature uses this same function, so serving sees what training saw.
    """
    image = unit_rgb(image)
    if image_size is None:
        return image
    preprocessing = preprocessing or Preprocessing()
    if preprocessing.resize == "squash":
        image = resize(image, (image_size, image_size))
    else:
        side = round(image_size / preprocessing.crop_fraction)
        image = center_crop(resize_shorter_side(image, side), image_size)
    if preprocessing.downsample is not None:
        small = resize(image, (preprocessing.downsample, preprocessing.downsample))
        image = resize(small, (image_size, image_size))
    return image
