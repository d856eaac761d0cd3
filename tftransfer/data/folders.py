"""A folder of images, one sub-folder per class (optionally under train/ and test/) -> ``TargetData``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf

from tftransfer.data.hygiene import check_images
from tftransfer.data.sets import ImageSet, TargetData, decode
from tftransfer.data.subsets import stratified_holdout
from tftransfer.errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp")


def load_folder(path: str, test_fraction: float = 0.2, seed: int = 0,
                strict_images: bool = False) -> TargetData:
    """Loads a folder of images, one sub-folder per class (see ``load``).

    Unreadable image files (those the training pipeline's decoder cannot decode) are
    skipped with one warning that counts them: one bad file in a scraped folder should not
    end a long run, and the count says if it is many. A class folder left without a
    readable training image, and a test class that the training classes lack, stop with
    one sentence instead: the head would have an output that never trains, or a test
    class would silently vanish from the test set.

    Readable files that do not look like photos of the task (a placeholder's name, a format
    the rest of the folder does not use, a byte-identical copy) are named in one warning
    line, or refused with ``strict_images`` (``hygiene.check_images``).
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
    check_images([*train[0], *test[0]], root, strict=strict_images)
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
    _refuse_mounted_classes(root, classes)
    return classes


def _refuse_mounted_classes(root: Path, classes) -> None:
    """Refuses class folders that are other file systems (``--target /``: /proc, /sys, /dev)
    before their files are listed, which would walk a whole system (and fail in /proc)."""
    device = os.stat(root).st_dev
    mounted = [name for name in classes if os.stat(root / name).st_dev != device]
    if mounted:
        raise UserError(
            f"Image folder {str(root)!r} has class sub-folders that are other file systems "
            f"({', '.join(repr(str(root / name)) for name in mounted[:3])}), so it is not a "
            f"folder of images; pass the folder that holds one sub-folder of images per "
            f"class.")


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
    """Whether the training pipeline's own decoder (``sets.decode``) decodes ``file``.

    Checked with that decoder and no other library: PIL, say, reads files (1-bit BMPs)
    that TensorFlow cannot decode, which would fail the run mid-training.
    """
    try:
        decode(tf.io.read_file(str(file)))
        return True
    except tf.errors.OpError:  # not an image, truncated, unsupported variant, unreadable file
        return False


def _file_set(paths: np.ndarray, labels: np.ndarray) -> ImageSet:
    def read(indices):
        indices = np.asarray(indices)
        ds = tf.data.Dataset.from_tensor_slices((paths[indices], labels[indices]))
        return ds.map(lambda p, y: (decode(tf.io.read_file(p)), y),
                      num_parallel_calls=tf.data.AUTOTUNE)
    return ImageSet(labels=labels, read=read)
