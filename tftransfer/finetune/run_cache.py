"""What consecutive fine-tuning runs share: loaded sources and targets, built networks and
the frozen trunk's features (``RunCache``)."""

from __future__ import annotations

from collections import OrderedDict

import keras
import numpy as np
import tensorflow as tf

from tftransfer import data
from tftransfer.finetune.compiled_loop import IndexedBatches
from tftransfer.config import DEFAULT_FEATURE_CACHE_MEMORY, TransferConfig, parse_size
from tftransfer.finetune.feature_store import (DiskFolder, FeatureView, evaluation_batch_size, extract,
                                      view_of)
from tftransfer.finetune.networks import Network, build_network, inference_function
from tftransfer.sources.loading import SourceModel, load_source

# A training set held in memory is read into one array, then copied into a tensor, beside the
# stored features: it is trained from tensors only if both copies fit the budget too (counting
# one, a 2GB budget let a 0.8 GB layer4 training set peak at 5.1 GB); else it streams.
TRAINING_SET_COPIES = 2


class RunCache:
    """What consecutive runs of a sweep (or a search) share instead of redoing.

    - loaded source models and target datasets;
    - the frozen trunk's activations, per image, keyed by (source, target, split,
      boundary, image size): a sweep computes each image's features once; they are held
      in memory up to ``memory_budget`` bytes, beyond it in files (``finetune.feature_store``);
    - built and traced networks (``Network``), keyed by everything that shapes the
      graph or the optimizer, and reset to the source's weights before each run, so
      that runs differing only in seed or training images re-trace nothing.
    """

    def __init__(self, max_networks: int = 4, memory_budget: int | None = None):
        # Per key: (chunks, {image index: (chunk, row)}); see feature_store.
        self._features: dict[tuple, tuple[list, dict]] = {}
        self._sources: dict[str | None, SourceModel] = {}
        self._targets: dict[tuple, data.TargetData] = {}
        self._networks: OrderedDict[tuple, Network] = OrderedDict()
        # (features, labels, dataset)
        self._evaluation_sets: OrderedDict[tuple, tuple] = OrderedDict()
        self.max_networks = max_networks
        self.computed = 0          # images whose trunk features were computed
        self.networks_built = 0
        # Bytes of features held in memory; features beyond the budget go to disk.
        self.memory_budget = (parse_size(DEFAULT_FEATURE_CACHE_MEMORY) if memory_budget is None
                              else memory_budget)
        self.memory_used = 0
        self.disk = DiskFolder(self)

    def close(self) -> None:
        """Removes the feature files on disk now (the cache's features on disk are gone;
        use it no more). Without a call, they go with the cache or at the interpreter's
        exit, and a later run removes those of a killed process."""
        self.disk.close()

    def __enter__(self) -> RunCache:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def source(self, reference: str | None) -> SourceModel:
        """``load_source(reference)``, loaded once. Never train this model itself: networks
        are built from private copies of it."""
        if reference not in self._sources:
            self._sources[reference] = load_source(reference)
        return self._sources[reference]

    def target(self, cfg: TransferConfig) -> data.TargetData:
        """The target dataset of ``cfg``, loaded once."""
        options = cfg.data.load_options()  # keys, splits, evaluation preprocessing
        key = (cfg.target, cfg.data.data_dir, cfg.data.download, tuple(sorted(options.items())),
               cfg.data.strict_images)
        if key not in self._targets:
            self._targets[key] = data.load(cfg.target, cfg.data.data_dir, cfg.data.download,
                                           strict_images=cfg.data.strict_images, **options)
        return self._targets[key]

    def network(self, cfg: TransferConfig, source: SourceModel, num_classes: int,
                image_size: int, steps_per_epoch: int, augment: bool | None = None,
                normalization: tuple | None = None) -> Network:
        """A ``Network`` for this run's recipe, built or reused (least recently used ones
        are dropped beyond ``max_networks``). ``augment``: whether the training images are
        augmented (default ``cfg.data.augment``); ``normalization``: (mean, std) replacing
        the source's input statistics (None keeps them)."""
        augment = cfg.data.augment if augment is None else augment
        key = network_key(cfg, source, num_classes, image_size, steps_per_epoch, augment,
                          normalization)
        if key in self._networks:
            self._networks.move_to_end(key)
        else:
            self._networks[key] = build_network(cfg, source, num_classes, image_size,
                                                steps_per_epoch, augment, normalization)
            self.networks_built += 1
            while len(self._networks) > self.max_networks:
                self._networks.popitem(last=False)
        return self._networks[key]

    def fits(self, nbytes: int) -> bool:
        """Whether ``nbytes`` more features fit the memory budget."""
        return self.memory_used + nbytes <= self.memory_budget

    def features(self, key: tuple, trunk, image_set, indices, image_size,
                 batch_size: int = 256, keep: bool = True) -> np.ndarray:
        """Trunk outputs for ``image_set[indices]``, in the order of ``indices``, as one
        array (``feature_view`` without reading them into memory)."""
        view = self.feature_view(key, trunk, image_set, indices, image_size, batch_size, keep)
        return view.read(np.arange(len(view)))

    def feature_view(self, key: tuple, trunk, image_set, indices, image_size,
                     batch_size: int = 256, keep: bool = True,
                     progress: bool = False) -> FeatureView:
        """The trunk outputs for ``image_set[indices]``, in the order of ``indices``.

        ``trunk`` is a Keras model or a function of a batch of images. Images not stored
        yet are computed, into memory while the budget allows, else into a file on disk.
        ``keep=False`` computes what is not stored yet without storing it (for sets kept
        elsewhere). ``progress``: images/s and ETA on stderr while computing.
        """
        chunks, where = self._store(key, keep)
        missing = np.asarray([i for i in np.unique(indices) if int(i) not in where], np.int64)
        if len(missing):
            batch_size = extraction_batch_size(batch_size, image_size)
            ds = data.pipeline(image_set, missing, image_size, batch_size, cache=False)
            chunk = extract(_as_function(trunk), ds, len(missing), self.fits, self.disk,
                            progress)
            chunks.append(chunk)
            where.update({int(i): (len(chunks) - 1, row) for row, i in enumerate(missing)})
            self.computed += len(missing)
            if keep and isinstance(chunk, np.ndarray):
                self.memory_used += chunk.nbytes
        return view_of(chunks, where, indices)

    def _store(self, key: tuple, keep: bool) -> tuple[list, dict]:
        """The (chunks, where) of ``key``: the stored ones, or a copy of them that what is
        computed now is added to without being stored (``keep=False``)."""
        if keep:
            return self._features.setdefault(key, ([], {}))
        chunks, where = self._features.get(key, ([], {}))
        return list(chunks), dict(where)

    def training_batches(self, key: tuple, trunk, image_set, indices, image_size,
                         batch_size: int, seed: int, epochs: int, first_epoch: int = 0,
                         progress: bool = False, indexed: bool = False):
        """``data.epoch_batches`` of (trunk features, label) for ``image_set[indices]``.
        Features held in memory are batched as tensors when the budget also holds their
        ``TRAINING_SET_COPIES``; others are read from their chunks or files
        batch by batch, in the same epoch-seeded order (the shuffle permutes positions
        exactly as it permutes the examples), so both give the same batches.

        ``indexed``: features held in memory come as ``compiled_loop.IndexedBatches``
        instead (the tensors and ``data.epoch_order``; the same batches, gathered inside
        the compiled loop without a tf.data pipeline, whose per-epoch shuffle cost more
        than a head-only epoch's training)."""
        view = self.feature_view(key, trunk, image_set, indices, image_size,
                                 progress=progress)
        labels = image_set.labels[indices]
        if view.in_memory and self.fits(TRAINING_SET_COPIES * view.nbytes):
            features = view.read(np.arange(len(view)))
            if indexed and len(view) * (epochs - first_epoch) <= data.MAX_ORDER_POSITIONS:
                order = data.epoch_order(len(view), seed, epochs, first_epoch)
                return IndexedBatches(tf.constant(features), tf.constant(labels),
                                      tf.constant(order), batch_size, first_epoch)
            examples = tf.data.Dataset.from_tensor_slices((features, labels))
            return data.epoch_batches(examples, len(view), batch_size, seed, epochs,
                                      first_epoch)
        read = view.reader()
        positions = tf.data.Dataset.from_tensor_slices((np.arange(len(view)), labels))
        return (data.epoch_batches(positions, len(view), batch_size, seed, epochs, first_epoch)
                .map(lambda p, y: (read(p), y)).prefetch(tf.data.AUTOTUNE))

    def evaluation_set(self, key: tuple, trunk, image_set, indices, image_size,
                       within=None, tensors: bool = False, progress: bool = False):
        """Batches of (trunk features, label) for ``image_set[indices]``, built once: every
        run of a sweep evaluates on the same test images, and turning 10,000 feature maps
        into a tensor again each time would cost more than evaluating them.

        ``within``: the indices of an evaluation set built before that contains
        ``indices`` (the per-epoch curve's images inside the test images); its features
        are gathered instead of computed again. ``tensors``: return the (features, labels)
        tensors instead of the dataset (what ``finetune.compiled_loop`` evaluates); for features
        that do not fit the memory budget, the dataset streamed from disk either way.
        """
        indices = np.asarray(indices)
        full_key = _set_key(key, indices)
        if full_key not in self._evaluation_sets:
            x = self._gathered(key, within, indices)
            if x is None:
                view = self.feature_view(key, trunk, image_set, indices, image_size,
                                         keep=False, progress=progress)
                # Not kept per image too: this tensor is the one copy (330 MB for the
                # 10,000 test images at resnet20's last-stage boundary).
                x = (tf.constant(view.read(np.arange(len(view))))
                     if view.in_memory and self.fits(view.nbytes) else view)
            self._evaluation_sets[full_key] = self._evaluation_entry(x, image_set.labels[indices])
            while len(self._evaluation_sets) > 2 * self.max_networks:
                self.memory_used -= self._evaluation_sets.popitem(last=False)[1][3]
        self._evaluation_sets.move_to_end(full_key)
        x, y, dataset, _ = self._evaluation_sets[full_key]
        return (x, y) if tensors and not isinstance(x, FeatureView) else dataset

    def _evaluation_entry(self, x, labels) -> tuple:
        """(features, labels, dataset, bytes in memory) of an evaluation set."""
        if isinstance(x, FeatureView):
            return x, tf.constant(labels), x.batches(labels), 0
        row_bytes = int(x.shape[1:].num_elements()) * 4
        dataset = (tf.data.Dataset.from_tensor_slices((x, labels))
                   .batch(evaluation_batch_size(row_bytes)).prefetch(tf.data.AUTOTUNE))
        nbytes = int(x.shape.num_elements()) * 4
        self.memory_used += nbytes
        return x, tf.constant(labels), dataset, nbytes

    def _gathered(self, key: tuple, within, indices: np.ndarray):
        """The features of ``indices`` taken from the evaluation set of ``within``, or None
        when that set is not built or does not contain them all."""
        if within is None:
            return None
        container = self._evaluation_sets.get(_set_key(key, np.asarray(within)))
        position = {int(index): p for p, index in enumerate(within)}
        if container is None or not all(int(i) in position for i in indices):
            return None
        positions = [position[int(i)] for i in indices]
        if isinstance(container[0], FeatureView):
            return container[0].subset(positions)
        return tf.gather(container[0], positions)


def network_key(cfg: TransferConfig, source: SourceModel, num_classes: int, image_size: int,
                steps_per_epoch: int, augment: bool, normalization: tuple | None) -> tuple:
    """What a built ``Network`` depends on (the graph and the optimizer's schedule): runs
    with the same key can share one, reset between them (``RunCache.network``)."""
    return (source.identity["source_path"], image_size, num_classes, cfg.precision,
            cfg.head_init, cfg.unfrozen_blocks, cfg.frozen_bn, cfg.feature_cache, augment,
            cfg.optim, cfg.epochs, steps_per_epoch, normalization, cfg.head_warmup_epochs,
            cfg.unfrozen_lr_scale)


def _set_key(key: tuple, indices: np.ndarray) -> tuple:
    return key + (len(indices), hash(indices.tobytes()))


def extraction_batch_size(batch_size: int, image_size: int | None) -> int:
    """``batch_size`` capped at the pixels of 64 images of 224 px: the activations of
    ResNet-50's forward pass grow with batch x pixels, and 256 images at 224 px need several
    GB (a trunk's outputs do not depend on the batch, so only memory changes; 32-px images
    keep batches of 256)."""
    if not image_size:
        return batch_size
    return max(1, min(batch_size, int(64 * (224 / image_size) ** 2)))


def _as_function(trunk):
    """``trunk`` as a function of a batch of images (a Keras model is traced once)."""
    return inference_function(trunk) if isinstance(trunk, keras.Model) else trunk
