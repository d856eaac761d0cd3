"""Tiny TFDS dataset builders for tests: real ``download_and_prepare`` runs, offline.

Importing this module registers them with TFDS (by class name in snake case). They live in a
module of the ``tests`` package because TFDS locates a builder's metadata through its package.
``TftransferTinyPhotos`` reads PNG files that the test writes (``write_photos``); the others
generate their examples, or fail the way a real download fails.
"""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

_VERSION = tfds.core.Version("1.0.0")


def write_photos(root, sizes=((20, 30), (30, 20), (24, 24), (18, 28)), classes=2) -> Path:
    """PNG files ``root/<split>/<label>_<i>.png`` of the given (height, width) sizes, class k
    brighter for larger k; ``TftransferTinyPhotos`` reads them."""
    root = Path(root)
    for split, per_class in (("train", 3), ("test", 2)):
        (root / split).mkdir(parents=True, exist_ok=True)
        for label in range(classes):
            for i in range(per_class):
                h, w = sizes[(label * per_class + i) % len(sizes)]
                pixels = np.full((h, w, 3), 60 + 120 * label, np.uint8)
                Image.fromarray(pixels).save(root / split / f"{label}_{i}.png")
    return root


class TftransferTinyPhotos(tfds.core.GeneratorBasedBuilder):
    """Variable-size colour photos from the PNG files under ``source_dir`` (set by the test)."""

    VERSION = _VERSION
    source_dir: Path | None = None

    def _info(self):
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3)),
                "label": tfds.features.ClassLabel(names=["dark", "bright"])}),
            supervised_keys=("image", "label"))

    def _split_generators(self, dl_manager):
        return {split: self._generate_examples(Path(self.source_dir) / split)
                for split in ("train", "test")}

    def _generate_examples(self, folder):
        for file in sorted(folder.glob("*.png")):
            yield file.name, {"image": str(file), "label": int(file.name.split("_")[0])}


class TftransferTinyTextures(tfds.core.GeneratorBasedBuilder):
    """Like ``dtd`` and ``sun397``: no supervised keys (one image, one class label and a file
    name), and like ``food101``: train and validation splits only."""

    VERSION = _VERSION

    def _info(self):
        return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
            "file_name": tfds.features.Text(),
            "image": tfds.features.Image(shape=(8, 8, 3)),
            "label": tfds.features.ClassLabel(num_classes=3)}))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(9), "validation": self._generate_examples(6)}

    def _generate_examples(self, count):
        for i in range(count):
            yield i, {"file_name": f"{i}.png", "label": i % 3,
                      "image": np.full((8, 8, 3), 40 * (i % 3), np.uint8)}


class TftransferTwoImages(tfds.core.GeneratorBasedBuilder):
    """Two image and two class-label features, no supervised keys: the keys must be named."""

    VERSION = _VERSION

    def _info(self):
        return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
            "photo": tfds.features.Image(shape=(8, 8, 3)),
            "mask": tfds.features.Image(shape=(8, 8, 1)),
            "species": tfds.features.ClassLabel(num_classes=2),
            "breed": tfds.features.ClassLabel(num_classes=4)}))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(8), "test": self._generate_examples(4)}

    def _generate_examples(self, count):
        for i in range(count):
            yield i, {"photo": np.full((8, 8, 3), 30 * (i % 4), np.uint8),
                      "mask": np.zeros((8, 8, 1), np.uint8), "species": i % 2, "breed": i % 4}


class _Failing(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A builder whose preparation raises ``failure()`` where a download would run."""

    VERSION = _VERSION

    def _info(self):
        return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(8, 8, 3)),
            "label": tfds.features.ClassLabel(num_classes=2)}), supervised_keys=("image", "label"))

    def _split_generators(self, dl_manager):
        raise self.failure()

    def _generate_examples(self):
        yield from ()


class TftransferNeedsModule(_Failing):
    """Fails as a builder whose own import of an extra package fails."""

    @staticmethod
    def failure():
        return ModuleNotFoundError("No module named 'tftransfer_absent_module'",
                                   name="tftransfer_absent_module")


class TftransferNoDns(_Failing):
    """Fails as a download on a machine without DNS (requests wraps socket.gaierror)."""

    @staticmethod
    def failure():
        error = ConnectionError("HTTPSConnectionPool(host='data.example.org', port=443): "
                                "Max retries exceeded with url: /files/data.zip")
        error.__cause__ = socket.gaierror(-3, "Temporary failure in name resolution")
        return error


class TftransferManualOnly(_Failing):
    """Needs a manual download: reads ``dl_manager.manual_dir``, which TFDS refuses when empty."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = "Register on the dataset's site and download data.zip."

    def _split_generators(self, dl_manager):
        return {"train": self._generate_from(dl_manager.manual_dir)}

    def _generate_from(self, folder):
        yield from ()
