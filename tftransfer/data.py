"""Image-classification data -> ``tf.data``: TFDS datasets by name, or a folder of images.

Every pipeline yields ``(images, labels)`` with images float32 RGB in [0, 1] at the
requested size (grayscale repeated to 3 channels, variable sizes resized) and
integer labels. The paper's variable "number of training images" is
``select_subset``: N images in total, stratified, seeded, and nested (the subset
for N is a prefix of the one for 2N with the same seed).
"""

from __future__ import annotations

import difflib
import functools
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import tensorflow as tf

from tftransfer.errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp")
# Mirroring changes the meaning of digits and characters; everything else may flip.
NO_FLIP_DATASETS = frozenset({"mnist", "kmnist", "emnist", "svhn_cropped", "omniglot",
                              "binarized_mnist", "fashion_mnist_digits"})
_TEST_SPLIT_NAMES = ("test", "validation")

# Per-dataset (mean, std) of the paper's code (tools/custom_datasets.py name_to_dataset), used
# by ``--normalization target``. Its Fashion-MNIST and KMNIST entries are a placeholder there (its
# comment says the Fashion-MNIST values were still to be computed; the training split's own are
# 0.2860 / 0.3530, measured on ../shared/tfds): they are kept, since they are what the paper ran.
_IMAGENET_STATISTICS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
_CIFAR_STATISTICS = ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
TARGET_STATISTICS = {
    "mnist": ((0.1307,) * 3, (0.3081,) * 3),
    "fashion_mnist": ((0.1801,) * 3, (0.3421,) * 3),
    "kmnist": ((0.1801,) * 3, (0.3421,) * 3),
    "cifar10": _CIFAR_STATISTICS,
    "cifar100": _CIFAR_STATISTICS,
    "svhn_cropped": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    "food101": ((0.5493, 0.4450, 0.3435), (0.2730, 0.2759, 0.2800)),
    "caltech101": _IMAGENET_STATISTICS,
}


def target_statistics(name: str) -> tuple[tuple, tuple]:
    """The paper's fixed (mean, std) for the TFDS dataset ``name`` (``TARGET_STATISTICS``)."""
    base = name.split(":")[0].split("/")[0]
    if base not in TARGET_STATISTICS:
        raise UserError(f"No recorded normalisation statistics for {name!r} (known: "
                        f"{', '.join(sorted(TARGET_STATISTICS))}); use --normalization subset "
                        f"(computed from the training images) or source.")
    return TARGET_STATISTICS[base]


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


# ----------------------------------------------------------------------------- loading

def load(target: str, data_dir: str | None = None, download: bool = True,
         test_fraction: float = 0.2, seed: int = 0) -> TargetData:
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

    Returns:
      A ``TargetData``.
    """
    if _looks_like_path(target):
        return load_folder(target, test_fraction=test_fraction, seed=seed)
    return load_tfds(target, data_dir=data_dir, download=download)


# TFDS names with a config and/or version, e.g. "imagenet_resized/32x32:0.1.0".
_TFDS_NAME = re.compile(r"^[a-z][a-z0-9_]*(/[A-Za-z0-9_.\-]+)?(:[0-9.*]+)?$")


def _looks_like_path(target: str) -> bool:
    # "name/config" is a TFDS name unless a folder of that name exists.
    if Path(target).is_dir() or target.startswith((".", os.sep, "~")):
        return True
    return os.sep in target and not _TFDS_NAME.match(target)


def default_data_dir() -> str:
    """TFDS's data directory: ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``."""
    return os.environ.get("TFDS_DATA_DIR", os.path.expanduser("~/tensorflow_datasets"))


def load_tfds(name: str, data_dir: str | None = None, download: bool = True) -> TargetData:
    """Loads a TFDS image-classification dataset (see ``load``)."""
    builder = _tfds_builder(name, data_dir, download)
    image_key, label_key = _supervised_keys(builder, name)
    label_feature = builder.info.features[label_key]
    class_names = tuple(label_feature.names)
    # An empty split list means the metadata is not known in advance (tfds mock data).
    splits = builder.info.splits or {"train": None, "test": None}
    train_split = "train"
    test_split = next((s for s in _TEST_SPLIT_NAMES if s in splits), None)
    if train_split not in splits or test_split is None:
        raise UserError(f"Dataset {name!r} has splits {sorted(builder.info.splits)}; "
                        f"tftransfer needs a 'train' split and a 'test' (or 'validation') split.")
    shape = tuple(builder.info.features[image_key].shape)
    fixed = shape if None not in shape else None
    return TargetData(
        name=name, class_names=class_names,
        train=_tfds_split(builder, name, data_dir, train_split, image_key, label_key, fixed),
        test=_tfds_split(builder, name, data_dir, test_split, image_key, label_key, fixed),
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
    print(f"Downloading and preparing {name!r} into {where} ...", file=sys.stderr)
    try:
        builder.download_and_prepare()
    except Exception as error:  # network, checksum and manual-download errors all land here
        raise UserError(
            f"Could not download {name!r} into {where} ({type(error).__name__}: "
            f"{str(error).splitlines()[0][:200]}); offline, prepare it elsewhere and point "
            f"--data-dir at it.") from error
    return builder


def _is_prepared(builder) -> bool:
    return tf.io.gfile.exists(os.path.join(str(builder.data_path), "dataset_info.json"))


def _supervised_keys(builder, name: str):
    keys = builder.info.supervised_keys
    if not keys or len(keys) != 2:
        raise UserError(f"Dataset {name!r} is not a supervised image-classification dataset.")
    image_key, label_key = keys
    import tensorflow_datasets as tfds

    if not isinstance(builder.info.features[label_key], tfds.features.ClassLabel):
        raise UserError(f"Dataset {name!r} has no class labels ({label_key!r} is not a ClassLabel).")
    return image_key, label_key


def _tfds_split(builder, name, data_dir, split, image_key, label_key, fixed_shape) -> ImageSet:
    if fixed_shape is not None:
        images, labels = _tfds_arrays(name, data_dir, split, image_key, label_key)
        return ImageSet(labels=labels, read=_array_reader(images, labels), fixed_shape=fixed_shape)
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


def _array_reader(images: np.ndarray, labels: np.ndarray):
    def read(indices):
        indices = np.asarray(indices)
        return tf.data.Dataset.from_tensor_slices((images[indices], labels[indices]))
    return read


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
        return ordered.map(lambda image, label: (_decode(image), label),
                           num_parallel_calls=tf.data.AUTOTUNE)
    return read


def _decode(encoded):
    return tf.io.decode_image(encoded, channels=3, expand_animations=False)


# ----------------------------------------------------------------------------- folders

def load_folder(path: str, test_fraction: float = 0.2, seed: int = 0) -> TargetData:
    """Loads a folder of images, one sub-folder per class (see ``load``).

    Unreadable image files (those the training pipeline's decoder cannot decode) are
    skipped with one warning that counts them: one bad file in a scraped folder should not
    end a long run, and the count says if it is many. A class folder left without a
    readable training image, and a test class that the training classes lack, stop with
    one sentence instead: the head would have an output that never trains, or a test
    class would silently vanish from the test set.
    """
    root = Path(path)
    if not root.is_dir():
        raise UserError(f"Image folder {path!r} does not exist.")
    test_dir = next((root / n for n in ("test", "val", "validation") if (root / n).is_dir()), None)
    if (root / "train").is_dir() and test_dir is not None:
        class_names = _class_folders(root / "train")
        _check_test_classes(test_dir, class_names)
        train = _folder_files(root / "train", class_names)
        test = _folder_files(test_dir, class_names, every_class=False)
    elif (root / "train").is_dir():
        raise UserError(f"Image folder {path!r} has a train/ sub-folder but no test/ (or val/) "
                        f"one; add it, or put the class folders directly in {path!r}.")
    else:
        if not 0.0 < test_fraction < 1.0:
            raise UserError(f"--test-fraction must be between 0 and 1, got {test_fraction}.")
        class_names = _class_folders(root)
        files = _folder_files(root, class_names)
        test_idx = stratified_holdout(files[1], test_fraction, seed)
        train_mask = np.ones(len(files[1]), bool)
        train_mask[test_idx] = False
        train = (files[0][train_mask], files[1][train_mask])
        test = (files[0][test_idx], files[1][test_idx])
    return TargetData(name=str(root), class_names=tuple(class_names),
                      train=_file_set(*train), test=_file_set(*test))


def _subfolders(root: Path) -> list[str]:
    return sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))


def _class_folders(root: Path) -> list[str]:
    classes = _subfolders(root)
    if len(classes) < 2:
        raise UserError(
            f"Image folder {str(root)!r} has {len(classes)} class sub-folder(s); a classifier "
            f"needs at least 2 (one sub-folder of images per class).")
    return classes


def _check_test_classes(test_dir: Path, class_names) -> None:
    """Refuses test class folders with images that the training classes lack: they would
    be left out of the test set without a word."""
    extra = [name for name in _subfolders(test_dir)
             if name not in class_names and _image_files(test_dir / name)]
    if extra:
        raise UserError(
            f"The test folder {str(test_dir)!r} has class folder(s) "
            f"{', '.join(repr(n) for n in extra)} that {str(test_dir.parent / 'train')!r} "
            f"does not have; add their training images there, or move them out of "
            f"{test_dir.name}/.")


def _image_files(folder: Path) -> list[Path]:
    """The files under ``folder`` with an image extension, sorted."""
    return [f for f in sorted(folder.rglob("*")) if f.suffix.lower() in IMAGE_EXTENSIONS] \
        if folder.is_dir() else []


def _folder_files(root: Path, class_names, every_class: bool = True
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The readable image files of each class folder of ``root`` and their labels.

    ``every_class``: each class folder must hold a readable image (training images: a
    head output for a class without any would never be trained).
    """
    paths, labels, skipped, without_images = [], [], [], []
    for label, name in enumerate(class_names):
        readable = 0
        for file in _image_files(root / name):
            if _readable_image(file):
                paths.append(str(file))
                labels.append(label)
                readable += 1
            else:
                skipped.append(str(file))
        if not readable:
            without_images.append(str(root / name))
    if skipped:
        print(f"warning: skipped {len(skipped)} unreadable image file(s) in {root} "
              f"(first: {skipped[0]})", file=sys.stderr)
    if not paths:
        raise UserError(f"Image folder {str(root)!r} has no readable images "
                        f"({', '.join(IMAGE_EXTENSIONS)}) in its class sub-folders.")
    if every_class and without_images:
        raise UserError(
            f"Class folder(s) {', '.join(repr(f) for f in without_images)} have no readable "
            f"images, so their class could not be trained; add images TensorFlow can "
            f"decode ({', '.join(IMAGE_EXTENSIONS)}) or remove the folder(s).")
    return np.asarray(paths), np.asarray(labels, dtype=np.int32)


def _readable_image(file: Path) -> bool:
    """Whether the training pipeline's own decoder (``_decode``) decodes ``file``.

    Checked with that decoder and no other library: PIL, say, reads files (1-bit BMPs)
    that TensorFlow cannot decode, which would fail the run mid-training.
    """
    try:
        _decode(tf.io.read_file(str(file)))
        return True
    except tf.errors.OpError:  # not an image, truncated, unsupported variant, unreadable file
        return False


def _file_set(paths: np.ndarray, labels: np.ndarray) -> ImageSet:
    def read(indices):
        indices = np.asarray(indices)
        ds = tf.data.Dataset.from_tensor_slices((paths[indices], labels[indices]))
        return ds.map(lambda p, y: (_decode(tf.io.read_file(p)), y),
                      num_parallel_calls=tf.data.AUTOTUNE)
    return ImageSet(labels=labels, read=read)


# ----------------------------------------------------------------------------- subsets

def select_subset(labels: np.ndarray, n: int | None, seed: int,
                  what: str = "--train-images", method: str = "stratified") -> np.ndarray:
    """Indices of ``n`` examples: seeded, stratified, nested, every class at least once.

    ``method='random'`` draws them uniformly instead, exactly as the robustness library's
    ``make_loaders(subset=n, subset_seed=seed)`` (``subset_type='rand'``) that the paper's
    code used: ``np.random.RandomState(seed).choice(len(labels), n, replace=False)``; a
    class may then be missing, and the subset for N is not nested in the one for 2N.

    The examples are put in one seeded order and the first ``n`` are taken, so the
    subset for N is contained in the subset for 2N with the same seed. The order
    starts with one example of each class and then interleaves the classes in
    proportion to their sizes (stratified quantiles).

    Args:
      labels: integer labels of the whole split.
      n: number of examples in total (None: all of them, in the seeded order).
      seed: the seed of the order.
      what: the option ``n`` came from, for error messages.

    Returns:
      int64 indices into ``labels``.
    """
    labels = np.asarray(labels)
    if method == "random":
        return random_subset(len(labels), n, seed, what)
    classes = np.unique(labels)
    if n is not None:
        if n < len(classes):
            raise UserError(f"{what} {n} is fewer than the {len(classes)} classes; "
                            f"use at least {len(classes)} so every class has an image.")
        if n > len(labels):
            raise UserError(f"{what} {n} is more than the {len(labels)} images available.")
    return nested_order(labels, seed)[:n]


def random_subset(count: int, n: int | None, seed: int, what: str = "--train-images"
                  ) -> np.ndarray:
    """``n`` of ``range(count)`` drawn uniformly without replacement with numpy's legacy
    ``RandomState(seed)`` (robustness' ``make_loaders``; None: all, in that seeded order)."""
    if n is not None and n > count:
        raise UserError(f"{what} {n} is more than the {count} images available.")
    return np.random.RandomState(seed).choice(count, size=n or count,
                                              replace=False).astype(np.int64)


def nested_order(labels: np.ndarray, seed: int) -> np.ndarray:
    """The seeded, stratified order behind ``select_subset``."""
    rng = np.random.default_rng(seed)
    keys = np.empty(len(labels))
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        members = members[rng.permutation(len(members))]
        # Rank j of n_c sits at quantile (j + 0.5) / n_c; the first of each class goes first.
        keys[members] = (np.arange(len(members)) + 0.5) / len(members)
        keys[members[0]] = -1.0
    tie_break = rng.random(len(labels))
    return np.lexsort((tie_break, keys)).astype(np.int64)


def stratified_holdout(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Seeded indices of a stratified ``fraction`` of each class (at least one per class
    that has two or more examples)."""
    rng = np.random.default_rng(seed)
    held = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        if len(members) < 2:
            continue
        k = min(len(members) - 1, max(1, int(round(fraction * len(members)))))
        held.extend(rng.choice(members, size=k, replace=False))
    return np.sort(np.asarray(held, dtype=np.int64))


def split_validation(labels: np.ndarray, indices: np.ndarray, fraction: float,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Splits training ``indices`` into (fit, validation) parts, stratified and seeded.

    The validation part comes from the training images only, never the test split.
    """
    if not 0.0 < fraction < 1.0:
        raise UserError(f"The validation fraction must be between 0 and 1, got {fraction}.")
    indices = np.asarray(indices)
    held = stratified_holdout(labels[indices], fraction, seed)
    mask = np.zeros(len(indices), bool)
    mask[held] = True
    return indices[~mask], indices[mask]


# ----------------------------------------------------------------------------- pipelines

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

    ``policy``: ``pad_crop_flip`` (``stateless_augment``) or ``utrera2021``
    (``paper_augment``)."""
    indices = np.arange(len(image_set)) if indices is None else np.asarray(indices)
    if image_size is None and image_set.fixed_shape is None:
        raise UserError("This dataset has images of different sizes: give an --image-size.")
    examples = image_set.read(indices).map(lambda x, y: (to_model_input(x, image_size), y),
                                           num_parallel_calls=tf.data.AUTOTUNE).cache()
    augment_fn = None
    if augmentation:
        def augment_fn(x, y, example_seed):
            if policy == "utrera2021":
                return paper_augment(x, example_seed, flip), y
            return stateless_augment(x, example_seed, flip, color_jitter), y
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
    ds = ds.map(lambda x, y: (to_model_input(x, image_size), y),
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


# ----------------------------------------------------------------------------- listing

def prepared_datasets(data_dir: str | None = None) -> list[dict]:
    """The TFDS datasets prepared in ``data_dir``: name, version, splits and sizes."""
    import json

    root = Path(data_dir or default_data_dir())
    found = []
    for info_file in sorted(root.glob("*/*/dataset_info.json")):
        info = json.loads(info_file.read_text())
        splits = {s["name"]: sum(int(n) for n in s.get("shardLengths", [])) for s in info["splits"]}
        found.append({"name": info_file.parent.parent.name, "version": info_file.parent.name,
                      "splits": splits, "path": str(info_file.parent)})
    return found
