"""The input size a run feeds its source, and the line that says how a target's photos
become that input when a small (CIFAR-size) source meets them.

A 32 px source on 500x375 photos sees a 32 px centre crop of each: most of the photo's
detail, and sometimes the object of its class, is gone before training starts. A run that
does this says so in its first line, with the alternative and the training length, so that
a newcomer's first result is not read without knowing what the network saw.
"""

from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path

from tftransfer.config import TransferConfig
from tftransfer.config.length import Length
from tftransfer.data.image_sizes import SizeSample, folder_sample, set_sample
from tftransfer.sources import registry


def target_sizes(cfg: TransferConfig, cache) -> SizeSample:
    """The sizes of a sample of the target's training images: an image folder's files (as
    the default-source rule reads them), else the images of the split ``cache`` (a
    ``RunCache``) loads."""
    folder = Path(cfg.target).expanduser()
    sample = folder_sample(folder) if folder.is_dir() else None
    return sample or set_sample(cache.target(cfg).train)


def photo_input_size(cfg: TransferConfig, source_size: int, sizes) -> int | None:
    """The input size ``registry.photo_input_size`` chooses for a run without
    ``--image-size``, when it is not the source's own ``source_size``; else None.

    ``sizes``: a callable that returns the target's ``SizeSample``, called only when the
    rule could choose another size (``SMALL_SOURCE_PHOTO_SIZE`` above the source's)."""
    if cfg.data.image_size or registry.SMALL_SOURCE_PHOTO_SIZE <= source_size:
        return None
    size = registry.photo_input_size(source_size, sizes().shorter_side)
    return None if size == source_size else size


def say_photo_input(requested: TransferConfig, source_name: str, source_size: int,
                    image_size: int, sizes, length: Length, file=None) -> None:
    """Prints ``photo_line`` (to ``file``, default stderr) when there is one; ``sizes`` (a
    callable returning the target's ``SizeSample``) is called for a small source only."""
    if source_size > registry.SMALL_IMAGE_MAX:
        return
    line = photo_line(requested, source_name, source_size, image_size, sizes(), length)
    if line:
        print(line, file=file or sys.stderr)


@contextlib.contextmanager
def first_line_first(target: str):
    """Holds what loading an image-folder target writes on stderr (the hygiene warning) until
    the block ends, an error's end too, so that the run's first line, printed to the stream
    this yields, comes first. A TFDS target is not held: its download progress must show as
    it happens."""
    stream = sys.stderr
    if not Path(target).is_dir():
        yield stream
        return
    held = io.StringIO()
    try:
        with contextlib.redirect_stderr(held):
            yield stream
    finally:
        stream.write(held.getvalue())


def photo_line(cfg: TransferConfig, source_name: str, source_size: int, image_size: int,
               sizes: SizeSample, length: Length) -> str | None:
    """The run's first stderr line when a small source meets larger photos, else None:
    ``source NAME (32 px); 500x375 photos (median, sides 240-1024 px) are resized and
    centre-cropped to 32 px; --image-size 64 ...; training: auto = 63 epochs (...)``.

    Args:
      cfg: the run's config as asked for (``data.image_size`` None: not ``--image-size``).
      source_name, source_size: the source and its input size in pixels.
      image_size: the run's input size.
      sizes: the target's image sizes.
      length: the run's training length.
    """
    if not registry.is_small_on_photos(source_size, sizes.shorter_side):
        return None
    width, height = sizes.median
    photos = f"{width}x{height} photos"
    if len(set(sizes.sizes)) > 1:
        low, high = sizes.side_range
        photos += f" (median, sides {low}-{high} px)"
    return (f"source {source_name} ({source_size} px); {photos} are {_resized(cfg, image_size)}"
            f"{_why(cfg, source_size, image_size)}; {_alternative(source_size, image_size, sizes)}"
            f"; training: {length.describe()}")


def _resized(cfg: TransferConfig, size: int) -> str:
    """How evaluation (and cached features) turn an image into the input, in words."""
    if cfg.data.resize == "squash":
        return f"squashed to {size}x{size} px (aspect ratio lost)"
    if cfg.data.crop_fraction < 1.0:
        return (f"resized to {round(size / cfg.data.crop_fraction)} px on the shorter side "
                f"and centre-cropped to {size} px")
    return f"resized and centre-cropped to {size} px"


def _why(cfg: TransferConfig, source_size: int, image_size: int) -> str:
    if image_size == source_size:
        return ""
    chosen = ("--image-size" if cfg.data.image_size
              else "the input size for a small source on photos")
    return f" ({chosen}; the source's own is {source_size} px)"


def _alternative(source_size: int, image_size: int, sizes: SizeSample) -> str:
    """The other input size to try, with its cost."""
    if image_size != source_size:
        ratio = (image_size / source_size) ** 2
        return (f"--image-size {source_size} is the source's own size ({ratio:.3g}x less "
                f"compute per image)")
    larger = 2 * image_size
    if larger > sizes.shorter_side:
        return f"the photos' median shorter side is {sizes.shorter_side} px"
    return (f"--image-size {larger} keeps 4x the pixels (about 4x the compute per image; the "
            f"source was trained at {source_size} px)")
