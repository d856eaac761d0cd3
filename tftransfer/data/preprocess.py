"""Any decoded image -> the model's input: float32 RGB in [0, 1] at the model's size."""

from __future__ import annotations

import tensorflow as tf


def to_model_input(image, image_size: int | None):
    """uint8 (or float) image of any size/channels -> float32 RGB in [0, 1] at ``image_size``.

    The export signature uses this same function, so serving sees what training saw.
    """
    image = tf.convert_to_tensor(image)
    if image.dtype == tf.uint8:
        image = tf.cast(image, tf.float32) / 255.0
    else:
        image = tf.cast(image, tf.float32)
    if image.shape[-1] == 1:
        image = tf.image.grayscale_to_rgb(image)
    elif image.shape[-1] == 4:
        image = image[..., :3]
    if image_size is not None:
        image = tf.image.resize(image, (image_size, image_size), method="bilinear", antialias=True)
        image = tf.clip_by_value(image, 0.0, 1.0)
    return image
