"""What consecutive fine-tuning runs share: loaded sources and targets, built networks and
the frozen trunk's features (``RunCache``)."""

from __future__ import annotations

from collections import OrderedDict

import keras
import numpy as np
import tensorflow as tf

from tftransfer import data
from tftransfer.config import TransferConfig
from tftransfer.networks import Network, build_network, inference_function
from tftransfer.source_loading import SourceModel, load_source


class RunCache:
    """What consecutive runs of a sweep (or a search) share instead of redoing.

    - loaded source models and target datasets;
    - the frozen trunk's activations, per image, keyed by (source, target, split,
      boundary, image size): a sweep computes each image's features once;
    - built and traced networks (``Network``), keyed by everything that shapes the
      graph or the optimizer, and reset to the source's weights before each run, so
      that runs differing only in seed or training images re-trace nothing.
    """

    def __init__(self, max_networks: int = 4):
        self._features: dict[tuple, dict[int, np.ndarray]] = {}
        self._sources: dict[str | None, SourceModel] = {}
        self._targets: dict[tuple, data.TargetData] = {}
        self._networks: OrderedDict[tuple, Network] = OrderedDict()
        # (features, labels, dataset)
        self._evaluation_sets: OrderedDict[tuple, tuple] = OrderedDict()
        self.max_networks = max_networks
        self.computed = 0          # images whose trunk features were computed
        self.networks_built = 0

    def source(self, reference: str | None) -> SourceModel:
        """``load_source(reference)``, loaded once. Never train this model itself: networks
        are built from private copies of it."""
        if reference not in self._sources:
            self._sources[reference] = load_source(reference)
        return self._sources[reference]

    def target(self, cfg: TransferConfig) -> data.TargetData:
        """The target dataset of ``cfg``, loaded once."""
        key = (cfg.target, cfg.data.data_dir, cfg.data.download, cfg.data.test_fraction)
        if key not in self._targets:
            self._targets[key] = data.load(*key)
        return self._targets[key]

    def network(self, cfg: TransferConfig, source: SourceModel, num_classes: int,
                image_size: int, steps_per_epoch: int, augment: bool | None = None,
                normalization: tuple | None = None) -> Network:
        """A ``Network`` for this run's recipe, built or reused (least recently used ones
        are dropped beyond ``max_networks``). ``augment``: whether the training images are
        augmented (default ``cfg.data.augment``); ``normalization``: (mean, std) replacing
        the source's input statistics (None keeps them)."""
        augment = cfg.data.augment if augment is None else augment
        key = (source.identity["source_path"], image_size, num_classes, cfg.precision,
               cfg.head_init, cfg.unfrozen_blocks, cfg.frozen_bn, cfg.feature_cache,
               augment, cfg.optim, cfg.epochs, steps_per_epoch, normalization)
        if key in self._networks:
            self._networks.move_to_end(key)
        else:
            self._networks[key] = build_network(cfg, source, num_classes, image_size,
                                                steps_per_epoch, augment, normalization)
            self.networks_built += 1
            while len(self._networks) > self.max_networks:
                self._networks.popitem(last=False)
        return self._networks[key]

    def features(self, key: tuple, trunk, image_set, indices, image_size,
                 batch_size: int = 256, keep: bool = True) -> np.ndarray:
        """Trunk outputs for ``image_set[indices]``, in the order of ``indices``.

        ``trunk`` is a Keras model or a function of a batch of images. ``keep=False``
        computes what is not stored yet without storing it (for sets kept elsewhere).
        """
        store = self._features.setdefault(key, {}) if keep else self._features.get(key, {})
        missing = np.asarray([i for i in np.unique(indices) if i not in store], dtype=np.int64)
        fresh = {}
        if len(missing):
            ds = data.pipeline(image_set, missing, image_size, batch_size, cache=False)
            fresh = dict(zip(missing.tolist(), _predict(trunk, ds)))
            self.computed += len(missing)
            if keep:
                store.update(fresh)
        return np.stack([fresh[int(i)] if int(i) in fresh else store[int(i)] for i in indices])

    def evaluation_set(self, key: tuple, trunk, image_set, indices, image_size,
                       within=None, tensors: bool = False):
        """Batches of (trunk features, label) for ``image_set[indices]``, built once: every
        run of a sweep evaluates on the same test images, and turning 10,000 feature maps
        into a tensor again each time would cost more than evaluating them.

        ``within``: the indices of an evaluation set built before that contains
        ``indices`` (the per-epoch curve's images inside the test images); its features
        are gathered instead of computed again. ``tensors``: return the (features, labels)
        tensors instead of the dataset (what ``compiled_loop`` evaluates).
        """
        indices = np.asarray(indices)
        full_key = _set_key(key, indices)
        if full_key not in self._evaluation_sets:
            x = self._gathered(key, within, indices)
            if x is None:
                # Not kept per image too: this tensor is the one copy (330 MB for the
                # 10,000 test images at resnet20's last-stage boundary).
                x = tf.constant(self.features(key, trunk, image_set, indices, image_size,
                                              keep=False))
            dataset = (tf.data.Dataset.from_tensor_slices((x, image_set.labels[indices]))
                       .batch(256).prefetch(tf.data.AUTOTUNE))
            self._evaluation_sets[full_key] = (x, tf.constant(image_set.labels[indices]),
                                               dataset)
            while len(self._evaluation_sets) > 2 * self.max_networks:
                self._evaluation_sets.popitem(last=False)
        self._evaluation_sets.move_to_end(full_key)
        x, y, dataset = self._evaluation_sets[full_key]
        return (x, y) if tensors else dataset

    def _gathered(self, key: tuple, within, indices: np.ndarray):
        """The features of ``indices`` taken from the evaluation set of ``within``, or None
        when that set is not built or does not contain them all."""
        if within is None:
            return None
        container = self._evaluation_sets.get(_set_key(key, np.asarray(within)))
        position = {int(index): p for p, index in enumerate(within)}
        if container is None or not all(int(i) in position for i in indices):
            return None
        return tf.gather(container[0], [position[int(i)] for i in indices])


def _set_key(key: tuple, indices: np.ndarray) -> tuple:
    return key + (len(indices), hash(indices.tobytes()))


def _predict(trunk, dataset) -> np.ndarray:
    if isinstance(trunk, keras.Model):
        trunk = inference_function(trunk)
    return np.concatenate([trunk(images).numpy().astype(np.float32) for images, _ in dataset])
