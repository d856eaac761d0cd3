"""TFDS image-classification datasets by name -> ``TargetData``, and the prepared ones listed."""

from __future__ import annotations

import difflib
import functools
import json
import os
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf

from tftransfer.data.catalog import tfds_name
from tftransfer.data import download_guard
from tftransfer.data.download_errors import explain, unreachable_sentence
from tftransfer.data.tfds_schema import layout
from tftransfer.data.sets import ImageSet, TargetData, array_reader, decode
from tftransfer.errors import UserError

# Mirroring changes the meaning of digits and characters; everything else may flip.
NO_FLIP_DATASETS = frozenset({"mnist", "kmnist", "emnist", "svhn_cropped", "omniglot",
                              "binarized_mnist", "fashion_mnist_digits"})


def default_data_dir() -> str:
    """TFDS's data directory: ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``."""
    return os.environ.get("TFDS_DATA_DIR", os.path.expanduser("~/tensorflow_datasets"))


def load_tfds(name: str, data_dir: str | None = None, download: bool = True,
              image_key: str | None = None, label_key: str | None = None,
              train_split: str | None = None, test_split: str | None = None) -> TargetData:
    """Loads a TFDS image-classification dataset (see ``load``).

    ``name`` may also be a robust-models-transfer name (``flowers``, ``pets``; ``catalog``).
    The keys and splits default as ``tfds_schema.layout`` says; given ones are checked there.
    """
    name = tfds_name(name)
    builder = _tfds_builder(name, data_dir, download)
    chosen = layout(builder, name, image_key, label_key, train_split, test_split)
    class_names = tuple(builder.info.features[chosen.label_key].names)
    shape = tuple(builder.info.features[chosen.image_key].shape)
    fixed = shape if None not in shape else None
    keys = (chosen.image_key, chosen.label_key)
    return TargetData(
        name=name, class_names=class_names,
        train=_tfds_split(builder, name, data_dir, chosen.train_split, *keys, fixed),
        test=_tfds_split(builder, name, data_dir, chosen.test_split, *keys, fixed),
        flip=name not in NO_FLIP_DATASETS)


def _tfds_builder(name: str, data_dir: str | None, download: bool):
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        close = difflib.get_close_matches(name, tfds.list_builders(), n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise UserError(f"Unknown dataset {name!r}: it is neither a TFDS dataset nor a folder."
                        f"{hint}") from None
    except ValueError as error:  # a known dataset without this config or version
        raise UserError(f"TFDS has no such config or version as {name!r}: "
                        f"{str(error).splitlines()[0][:300]}") from None
    if _is_prepared(builder):
        return builder
    where = data_dir or default_data_dir()
    if not download:
        raise UserError(
            f"Dataset {name!r} is not prepared in {where} (looked for {builder.data_path}); "
            f"point --data-dir (or TFDS_DATA_DIR) at a folder that has it, or allow --download.")
    _probe_download_hosts(builder, name)
    print(f"Downloading and preparing {name!r} into {where} ...", file=sys.stderr)
    try:
        with download_guard.removed_on_failure(where, builder.name):
            builder.download_and_prepare()
    except Exception as error:  # network, module, checksum, manual-download errors: all here
        raise UserError(explain(error, name, where)) from error
    return builder


def _probe_download_hosts(builder, name: str) -> None:
    """Stops at once, before TFDS writes or retries anything, when a host the dataset's files
    come from cannot be reached (offline, TFDS would retry for minutes)."""
    failed = download_guard.unreachable(download_guard.download_hosts(builder))
    if failed is not None:
        raise UserError(unreachable_sentence(name, *failed, download_guard.PROBE_SECONDS))


def _is_prepared(builder) -> bool:
    return tf.io.gfile.exists(os.path.join(str(builder.data_path), "dataset_info.json"))


def _tfds_split(builder, name, data_dir, split, image_key, label_key, fixed_shape) -> ImageSet:
    if fixed_shape is not None:
        images, labels = _tfds_arrays(name, data_dir, split, image_key, label_key)
        return ImageSet(labels=labels, read=array_reader(images, labels), fixed_shape=fixed_shape)
    labels = _tfds_labels(builder, split, image_key, label_key)
    return ImageSet(labels=labels,
                    read=_streaming_reader(builder, split, image_key, label_key, len(labels)))


@functools.lru_cache(maxsize=8)
def _tfds_arrays(name, data_dir, split, image_key, label_key):
    """All images of a fixed-shape split as one uint8 array (cached per process,
    so a sweep reads each dataset once)."""
    import tensorflow_datasets as tfds

    builder = tfds.builder(name, data_dir=data_dir)
    ds = builder.as_dataset(split=split, batch_size=-1)
    arrays = tfds.as_numpy(ds)
    return arrays[image_key], arrays[label_key].astype(np.int32)


def _tfds_labels(builder, split, image_key, label_key) -> np.ndarray:
    import tensorflow_datasets as tfds

    ds = builder.as_dataset(split=split, decoders={image_key: tfds.decode.SkipDecoding()})
    labels = [int(example[label_key]) for example in tfds.as_numpy(ds)]
    return np.asarray(labels, dtype=np.int32)


def _streaming_reader(builder, split, image_key, label_key, num_examples):
    """Reads selected examples of a split whose images differ in size.

    One pass over the split collects the selected examples' *encoded* bytes (small next
    to decoded pixels); they are then served in the order of ``indices`` and decoded in
    parallel, so images and labels stay aligned whatever order the caller asks for.
    """
    import tensorflow_datasets as tfds

    def read(indices):
        indices = np.asarray(indices, dtype=np.int64)
        wanted = np.zeros(num_examples, bool)
        wanted[indices] = True
        ds = builder.as_dataset(split=split, decoders={image_key: tfds.decode.SkipDecoding()})
        encoded, labels = {}, {}
        for position, example in enumerate(tfds.as_numpy(ds)):
            if wanted[position]:
                encoded[position] = example[image_key]
                labels[position] = int(example[label_key])
        ordered = tf.data.Dataset.from_tensor_slices(
            ([encoded[i] for i in indices.tolist()],
             np.asarray([labels[i] for i in indices.tolist()], np.int32)))
        return ordered.map(lambda image, label: (decode(image), label),
                           num_parallel_calls=tf.data.AUTOTUNE)
    return read


def prepared_datasets(data_dir: str | None = None) -> list[dict]:
    """The TFDS datasets prepared in ``data_dir``: name, version, splits and sizes."""
    root = Path(data_dir or default_data_dir())
    found = []
    for info_file in sorted(root.glob("*/*/dataset_info.json")):
        info = json.loads(info_file.read_text())
        splits = {s["name"]: sum(int(n) for n in s.get("shardLengths", [])) for s in info["splits"]}
        found.append({"name": info_file.parent.parent.name, "version": info_file.parent.name,
                      "splits": splits, "path": str(info_file.parent)})
    return found
