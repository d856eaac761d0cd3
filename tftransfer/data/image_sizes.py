"""The sizes of a target's images, from a sample spread over its classes: what the default
source and the input size are chosen by, and what a run's first line says.

One file says little about a folder of photos of mixed sizes (a first file of 768 px in a
folder whose median is 500x375 chose the source), so up to ``SAMPLE_LIMIT`` files are read,
evenly spaced within each class, and the sample is summarised by its median and range.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tftransfer.data.folders import IMAGE_EXTENSIONS

# Files whose sizes are read (image headers only, so a sample costs milliseconds).
SAMPLE_LIMIT = 50


@dataclass(frozen=True)
class SizeSample:
    """The (width, height) of each image of a sample, and how many images it was drawn from.

    Attributes:
      sizes: (width, height) in pixels of each image read.
      total: the images the sample was drawn from.
      unit: what they are, in words (files of a folder, images of a loaded split).
    """

    sizes: tuple
    total: int
    unit: str = "files"

    @property
    def median(self) -> tuple[int, int]:
        """(median width, median height)."""
        return tuple(int(round(statistics.median(side))) for side in zip(*self.sizes))

    @property
    def longer_side(self) -> int:
        """The median of the images' longer sides."""
        return int(round(statistics.median(max(size) for size in self.sizes)))

    @property
    def shorter_side(self) -> int:
        """The median of the images' shorter sides (what a centre crop resizes)."""
        return int(round(statistics.median(min(size) for size in self.sizes)))

    @property
    def side_range(self) -> tuple[int, int]:
        """The smallest shorter side and the largest longer side."""
        return (min(min(size) for size in self.sizes), max(max(size) for size in self.sizes))

    def describe(self) -> str:
        """``500x375 px median, sides 240-1024 px, 50 of 400 files read``; one size:
        ``32x32 px, all 12 files read``."""
        width, height = self.median
        read = (f"all {self.total}" if len(self.sizes) == self.total
                else f"{len(self.sizes)} of {self.total}")
        if len(set(self.sizes)) == 1:
            return f"{width}x{height} px, {read} {self.unit} read"
        low, high = self.side_range
        return f"{width}x{height} px median, sides {low}-{high} px, {read} {self.unit} read"


def folder_sample(folder, limit: int = SAMPLE_LIMIT) -> SizeSample | None:
    """The sizes of up to ``limit`` image files of an image folder (``data.load_folder``'s
    layout), spread over its classes: evenly spaced within each class folder (of ``train/``
    when there is one). None when no file is a readable image."""
    root = Path(folder)
    if (root / "train").is_dir():
        root = root / "train"
    classes = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    groups = [_image_files(d) for d in classes] or [_image_files(root)]
    sizes = [size for size in map(_header_size, spread(groups, limit)) if size is not None]
    return SizeSample(tuple(sizes), sum(map(len, groups))) if sizes else None


def set_sample(image_set, limit: int = SAMPLE_LIMIT) -> SizeSample:
    """The sizes of up to ``limit`` images of a loaded split (``data.ImageSet``), spread
    over its classes; a fixed-shape split's without reading any."""
    if image_set.fixed_shape is not None:
        height, width = image_set.fixed_shape[:2]
        return SizeSample(((width, height),) * min(limit, len(image_set)), len(image_set),
                          "images")
    labels = np.asarray(image_set.labels)
    groups = [list(np.flatnonzero(labels == label)) for label in np.unique(labels)]
    chosen = np.asarray(spread(groups, limit), dtype=np.int64)
    sizes = [(int(image.shape[1]), int(image.shape[0]))
             for image, _ in image_set.read(chosen).as_numpy_iterator()]
    return SizeSample(tuple(sizes), len(image_set), "images")


def spread(groups: list, limit: int) -> list:
    """Up to ``limit`` items of ``groups`` (lists), the same share of each (as far as each
    has items), evenly spaced within each group."""
    quota = math.ceil(limit / max(1, len(groups)))
    picked = [[group[int(i)] for i in np.unique(np.linspace(0, len(group) - 1, quota).round())]
              if len(group) > quota else list(group) for group in groups]
    # Round-robin, so that trimming to the limit takes from every group alike.
    ordered = [group[i] for i in range(max(map(len, picked), default=0))
               for group in picked if i < len(group)]
    return ordered[:limit]


def _image_files(folder: Path) -> list[Path]:
    return [f for f in sorted(folder.rglob("*")) if f.suffix.lower() in IMAGE_EXTENSIONS]


def _header_size(path: Path) -> tuple[int, int] | None:
    from PIL import Image, UnidentifiedImageError  # pillow ships with keras' dependencies

    try:
        with Image.open(path) as image:
            return tuple(image.size)
    except (OSError, UnidentifiedImageError):
        return None
