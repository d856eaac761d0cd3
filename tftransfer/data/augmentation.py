"""Training augmentations, as named presets (``--augment``): ``cifar`` (pad-and-crop + flip,
optional jitter), ``paper`` (the paper's target augmentation) and ``imagenet`` (random-resized
crop + flip). Flips are the caller's to switch off (digits)."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tftransfer.data.preprocess import resize


def augment(image, flip: bool, color_jitter: bool = False):
    """Training augmentation: pad-and-crop (1/8 of the side), optional flip and jitter."""
    size = image.shape[0]
    pad = max(1, size // 8)
    padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
    image = tf.image.random_crop(padded, tf.shape(image))
    if flip:
        image = tf.image.random_flip_left_right(image)
    if color_jitter:
        image = tf.image.random_brightness(image, 0.2)
        image = tf.image.random_contrast(image, 0.8, 1.2)
        image = tf.image.random_saturation(image, 0.8, 1.2)
        image = tf.clip_by_value(image, 0.0, 1.0)
    return image


def paper_augment(image, seed, flip: bool = True):
    """The paper's target augmentation, with stateless ops (``seed``: a [2] int tensor).

    tools/transforms.py TRAIN_TRANSFORMS_DEFAULT of utrerf/robust_transfer_learning, in
    its order: RandomCrop(size, padding=4) (zero padding), RandomHorizontalFlip,
    ColorJitter(0.25, 0.25, 0.25) (brightness, contrast and saturation factors uniform in
    [0.75, 1.25]; torchvision applies them in a random order, here always in that one),
    RandomRotation(2) (uniform in [-2, 2] degrees, nearest neighbour, zero fill).
    """
    seeds = tf.random.experimental.stateless_split(seed, num=6)
    shape = tf.shape(image)
    padded = tf.pad(image, [[4, 4], [4, 4], [0, 0]])
    image = tf.image.stateless_random_crop(padded, shape, seeds[0])
    if flip:
        image = tf.image.stateless_random_flip_left_right(image, seeds[1])
    brightness = tf.random.stateless_uniform([], seeds[2], 0.75, 1.25)
    image = tf.clip_by_value(image * brightness, 0.0, 1.0)
    image = tf.image.stateless_random_contrast(image, 0.75, 1.25, seeds[3])
    image = tf.clip_by_value(image, 0.0, 1.0)
    image = tf.image.stateless_random_saturation(image, 0.75, 1.25, seeds[4])
    image = tf.clip_by_value(image, 0.0, 1.0)
    angle = tf.random.stateless_uniform([], seeds[5], -2.0, 2.0) * (np.pi / 180.0)
    return rotate(image, angle)


def rotate(image, angle):
    """``image`` [H, W, C] rotated by ``angle`` radians about its centre (nearest, zero fill)."""
    height = tf.cast(tf.shape(image)[0], tf.float32)
    width = tf.cast(tf.shape(image)[1], tf.float32)
    cx, cy = (width - 1.0) / 2.0, (height - 1.0) / 2.0
    cos, sin = tf.cos(angle), tf.sin(angle)
    # Output pixel (x, y) reads input (cos*x - sin*y + a, sin*x + cos*y + b), centre fixed.
    transform = tf.stack([cos, -sin, cx - cos * cx + sin * cy,
                          sin, cos, cy - sin * cx - cos * cy, 0.0, 0.0])
    rotated = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[tf.newaxis], transforms=transform[tf.newaxis],
        output_shape=tf.shape(image)[:2], fill_value=0.0, interpolation="NEAREST",
        fill_mode="CONSTANT")
    return tf.reshape(rotated[0], tf.shape(image))


def stateless_augment(image, seed, flip: bool, color_jitter: bool = False):
    """``augment`` with stateless random ops: the same (image, seed) always gives the same
    result, so a resumed run sees exactly the augmentations an uninterrupted one would."""
    seeds = tf.random.experimental.stateless_split(seed, num=5)
    size = image.shape[0]
    pad = max(1, size // 8)
    padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
    image = tf.image.stateless_random_crop(padded, tf.shape(image), seeds[0])
    if flip:
        image = tf.image.stateless_random_flip_left_right(image, seeds[1])
    if color_jitter:
        image = tf.image.stateless_random_brightness(image, 0.2, seeds[2])
        image = tf.image.stateless_random_contrast(image, 0.8, 1.2, seeds[3])
        image = tf.image.stateless_random_saturation(image, 0.8, 1.2, seeds[4])
        image = tf.clip_by_value(image, 0.0, 1.0)
    return image


def random_resized_crop(image, size: int, seed, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """torchvision's ``RandomResizedCrop(size)`` with stateless ops: a box of ``scale`` of the
    area and ``ratio`` aspect (10 tries, else the whole image), resized to ``size`` square."""
    begin, extent, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), bounding_boxes=tf.zeros([1, 0, 4]), seed=seed, area_range=scale,
        aspect_ratio_range=ratio, max_attempts=10, use_image_if_no_bounding_boxes=True)
    box = tf.slice(image, begin, extent)
    return resize(box, (size, size))


def imagenet_augment(image, seed, size: int, flip: bool = True):
    """The ImageNet-style training augmentation of microsoft/robust-models-transfer
    (``RandomResizedCrop(size)``, ``RandomHorizontalFlip``), stateless (``seed``: [2] ints)."""
    seeds = tf.random.experimental.stateless_split(seed, num=2)
    image = random_resized_crop(image, size, seeds[0])
    if flip:
        image = tf.image.stateless_random_flip_left_right(image, seeds[1])
    return image


# --augment names -> DataConfig.augment_policy (the names written in config.json).
AUGMENT_POLICIES = {"cifar": "pad_crop_flip", "paper": "utrera2021", "imagenet": "imagenet"}
# Policies that work on the whole resized image (not on the evaluation crop).
WHOLE_IMAGE_POLICIES = ("imagenet",)


def augment_example(policy: str, image, seed, flip: bool, color_jitter: bool = False,
                    size: int | None = None):
    """One training image augmented by ``policy`` (a value of ``AUGMENT_POLICIES``).

    ``imagenet`` takes the image with its shorter side at ``size`` and returns the ``size``
    square; the others keep the shape of the (already square) image.
    """
    if policy == "utrera2021":
        return paper_augment(image, seed, flip)
    if policy == "imagenet":
        return imagenet_augment(image, seed, size, flip)
    if policy == "pad_crop_flip":
        return stateless_augment(image, seed, flip, color_jitter)
    raise ValueError(f"unknown augmentation policy {policy!r}")
