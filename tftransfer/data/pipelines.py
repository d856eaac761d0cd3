"""``ImageSet`` + indices -> batched ``tf.data``: training epochs (seeded, resumable), evaluation
batches, and stacked arrays for analyses."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import tensorflow as tf

from tftransfer.data.augmentation import WHOLE_IMAGE_POLICIES, augment, augment_example
from tftransfer.data.preprocess import resize_shorter_side, to_model_input, unit_rgb
from tftransfer.data.sets import ImageSet
from tftransfer.errors import UserError


def epoch_batches(examples: tf.data.Dataset, num_examples: int, batch_size: int, seed: int,
                  epochs: int, first_epoch: int = 0, per_example=None) -> tf.data.Dataset:
    """Batches for epochs ``first_epoch .. epochs - 1``, each epoch shuffled with its own seed.

    Because epoch e's order (and ``per_example``'s randomness, keyed by (seed, e, position))
    depends only on e, a run resumed at epoch k sees exactly the batches that an
    uninterrupted run sees from epoch k on. Use with ``fit(steps_per_epoch=...)``.

    Args:
      examples: unbatched (x, y) examples (cache them before: they are re-read every epoch).
      num_examples: how many there are.
      batch_size: examples per batch (the last batch of an epoch may be smaller).
      seed: the run's seed.
      epochs, first_epoch: which epochs to produce.
      per_example: optional ``fn(x, y, stateless_seed) -> (x, y)``, e.g. augmentation.
    """
    buffer = min(num_examples, 50_000)

    epoch_range = range(first_epoch, epochs)
    if not epoch_range:
        return examples.batch(batch_size).take(0)
    epoch_seeds = [seed * 1_000_003 + epoch for epoch in epoch_range]
    # The (seed, seed2) pair Dataset.shuffle(seed=epoch_seed) derives from the global seed.
    op_seeds = np.asarray([tf.compat.v1.get_seed(s) for s in epoch_seeds], np.int64)

    def one_epoch(epoch_seed, op_seed):
        ds = _shuffled(examples, buffer, op_seed[0], op_seed[1])
        if per_example is not None:
            ds = ds.enumerate().map(
                lambda i, xy: per_example(xy[0], xy[1], tf.stack([epoch_seed, i])),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return ds.batch(batch_size)

    # One pipeline whatever the number of epochs (one Dataset object per epoch cost about 6 ms
    # each to build: 12 s for the replication's 2,000-epoch head-only cells).
    epochs_ds = tf.data.Dataset.from_tensor_slices((np.asarray(epoch_seeds, np.int64), op_seeds))
    return epochs_ds.flat_map(one_epoch).prefetch(tf.data.AUTOTUNE)


# The longest order ``epoch_order`` builds (128 MB of int64 positions; a longer schedule
# streams its batches from ``epoch_batches`` instead), and the positions it keeps in all.
MAX_ORDER_POSITIONS = 1 << 24
# Orders kept by ``epoch_order``: a sweep's runs share them (every source, target and block
# count of one N and seed), and computing one costs about as much as a head-only run's training.
_ORDERS: "OrderedDict[tuple, np.ndarray]" = OrderedDict()


def epoch_order(num_examples: int, seed: int, epochs: int, first_epoch: int = 0) -> np.ndarray:
    """The example positions of epochs ``first_epoch .. epochs - 1`` in ``epoch_batches``'s
    order, one epoch after another (int64, ``num_examples`` per epoch): batch j of epoch e is
    ``order[e * n + j * batch_size : min(e * n + (j + 1) * batch_size, (e + 1) * n)]`` with e
    counted from ``first_epoch``. It is ``epoch_batches`` run over the positions themselves,
    so gathering examples by it gives exactly that stream's batches.

    Kept (read-only) per (number of examples, the epochs' shuffle seeds; the global seed is
    part of those), so the runs of a sweep that share an N and a seed compute it once; at
    most ``MAX_ORDER_POSITIONS`` positions are kept in all, the oldest orders dropped first.

    Raises:
      ValueError: for more than ``MAX_ORDER_POSITIONS`` positions (use ``epoch_batches``).
    """
    epoch_seeds = [seed * 1_000_003 + epoch for epoch in range(first_epoch, epochs)]
    key = (num_examples, tuple(tf.compat.v1.get_seed(s) for s in epoch_seeds))
    if key in _ORDERS:
        _ORDERS.move_to_end(key)
        return _ORDERS[key]
    total = num_examples * len(epoch_seeds)
    if total > MAX_ORDER_POSITIONS:
        raise ValueError(f"{total} positions are more than epoch_order builds "
                         f"({MAX_ORDER_POSITIONS}); stream epoch_batches instead.")
    positions = tf.data.Dataset.from_tensor_slices(np.arange(num_examples, dtype=np.int64))
    batches = epoch_batches(positions, num_examples, num_examples, seed, epochs, first_epoch)
    # One C++ pass over every epoch (a Python loop over 2,000 epochs cost more than training);
    # each epoch is one batch of all the positions, stacked whole (unbatching them into
    # single positions first cost a fifth more).
    order = (batches.batch(len(epoch_seeds)).get_single_element().numpy().reshape(-1)
             if total else np.zeros([0], np.int64))
    order.setflags(write=False)
    _ORDERS[key] = order
    while sum(len(kept) for kept in _ORDERS.values()) > MAX_ORDER_POSITIONS:
        _ORDERS.popitem(last=False)
    return order


def forget_epoch_orders() -> None:
    """Drops the orders ``epoch_order`` keeps (the next call of each computes it again)."""
    _ORDERS.clear()


def _shuffled(examples: tf.data.Dataset, buffer: int, seed, seed2) -> tf.data.Dataset:
    """``examples.shuffle(buffer, seed=..., reshuffle_each_iteration=False)`` with the op's
    two seeds as tensors: ``Dataset.shuffle`` takes a Python-int seed only (a tensor seed
    fails when a global seed is set), and a tensor lets one ``flat_map`` build every epoch."""
    specs = tf.nest.flatten(examples.element_spec)
    variant = tf.raw_ops.ShuffleDatasetV3(
        input_dataset=tf.data.experimental.to_variant(examples),
        buffer_size=tf.constant(buffer, tf.int64), seed=seed, seed2=seed2,
        seed_generator=tf.raw_ops.DummySeedGenerator(), reshuffle_each_iteration=False,
        output_types=[spec.dtype for spec in specs], output_shapes=[spec.shape for spec in specs])
    return tf.data.experimental.from_variant(variant, examples.element_spec)


def training_pipeline(image_set: ImageSet, indices, image_size: int | None, batch_size: int,
                      seed: int, epochs: int, first_epoch: int = 0, augmentation: bool = True,
                      flip: bool = True, color_jitter: bool = False,
                      policy: str = "pad_crop_flip") -> tf.data.Dataset:
    """The training input of ``epochs`` epochs: decoded once and cached, then shuffled per
    epoch and (optionally) augmented with stateless ops; see ``epoch_batches``.

    ``policy``: a value of ``augmentation.AUGMENT_POLICIES``: ``pad_crop_flip``
    (``stateless_augment``) and ``utrera2021`` (``paper_augment``, none at all for grayscale
    images, as the paper) work on the evaluation input; ``imagenet`` (``imagenet_augment``)
    crops the whole image, cached with its shorter side at ``image_size``."""
    indices = np.arange(len(image_set)) if indices is None else np.asarray(indices)
    if image_size is None and image_set.fixed_shape is None:
        raise UserError("This dataset has images of different sizes: give an --image-size.")
    augmentation = augmentation and not (policy == "utrera2021" and image_set.grayscale)
    whole = augmentation and policy in WHOLE_IMAGE_POLICIES
    size = image_size or min(image_set.fixed_shape[:2])

    def prepare(x, y):
        if whole:
            return resize_shorter_side(unit_rgb(x), size), y
        return to_model_input(x, image_size, image_set.preprocessing), y

    examples = image_set.read(indices).map(prepare, num_parallel_calls=tf.data.AUTOTUNE).cache()
    augment_fn = None
    if augmentation:
        def augment_fn(x, y, example_seed):
            return augment_example(policy, x, example_seed, flip, color_jitter, size), y
    return epoch_batches(examples, len(indices), batch_size, seed, epochs, first_epoch,
                         augment_fn)


def pipeline(image_set: ImageSet, indices, image_size: int | None, batch_size: int,
             training: bool = False, augmentation: bool = True, flip: bool = True,
             color_jitter: bool = False, seed: int = 0, cache: bool = True) -> tf.data.Dataset:
    """A batched ``tf.data`` pipeline over ``image_set[indices]``.

    Args:
      image_set: the split to read.
      indices: which examples (e.g. from ``select_subset``); None for all.
      image_size: output side in pixels (None keeps fixed-size images as they are).
      batch_size: examples per batch.
      training: shuffle every epoch (seeded) and augment if ``augmentation``.
      augmentation, flip, color_jitter: see ``augment``.
      seed: seed of the shuffle and the augmentation.
      cache: keep the decoded, resized images in memory after the first epoch.

    Returns:
      Batches of (float32 [B, S, S, 3] in [0, 1], int32 [B]).
    """
    if indices is None:
        indices = np.arange(len(image_set))
    if image_size is None and image_set.fixed_shape is None:
        raise UserError("This dataset has images of different sizes: give an --image-size.")
    ds = image_set.read(np.asarray(indices))
    ds = ds.map(lambda x, y: (to_model_input(x, image_size, image_set.preprocessing), y),
                num_parallel_calls=tf.data.AUTOTUNE)
    if cache:
        ds = ds.cache()
    if training:
        ds = ds.shuffle(min(len(indices), 50_000), seed=seed, reshuffle_each_iteration=True)
        if augmentation:
            ds = ds.map(lambda x, y: (augment(x, flip, color_jitter), y),
                        num_parallel_calls=tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = True
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE).with_options(options)


def subset_arrays(image_set: ImageSet, indices, image_size: int | None,
                  batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """The model-ready images and labels of ``image_set[indices]`` as numpy arrays.

    For analyses that need every image at once (saliency, influence figures, probes):
    the evaluation ``pipeline`` (no shuffle, no augmentation), read once and stacked.

    Args:
      image_set: the split to read.
      indices: which examples, in the order wanted (at least one).
      image_size: output side in pixels (None keeps fixed-size images as they are).
      batch_size: images decoded per step; bounds the transient memory, not the result.

    Returns:
      float32 images [n, S, S, 3] in [0, 1] and int32 labels [n], in ``indices`` order.
    """
    # One pass: caching the decoded images in tf.data would only duplicate the arrays.
    batches = [(x.numpy(), y.numpy()) for x, y in
               pipeline(image_set, np.asarray(indices), image_size, batch_size, cache=False)]
    return np.concatenate([x for x, _ in batches]), np.concatenate([y for _, y in batches])
