"""Where the frozen trunk's features live: in memory while they fit a budget, else on disk.

A set of computed features is a *chunk*: a float32 array in memory, or a ``.npy`` file
opened memory-mapped, so that a dataset whose features exceed the memory budget (about
0.8 MB per image at ResNet-50's layer4 input, 224 px) streams back from disk instead of
filling memory. A ``FeatureView`` is an ordered selection of images across chunks; what
trains or evaluates on it sees the same float32 values in the same order either way, so a
run gives the same result whether its features were held in memory or on disk.
"""

from __future__ import annotations

import os
import sys
import time
import weakref
from pathlib import Path

import numpy as np
import tensorflow as tf

from tftransfer.finetune.scratch import ScratchFolder

# Seconds between two progress lines of a long extraction, and the least time an
# extraction takes before it reports at all (a few hundred 32 px images take a fraction
# of a second: a line for each would only be noise in a sweep's log).
PROGRESS_EVERY = 10.0
EVALUATION_ROWS = 8192
EVALUATION_BATCH_BYTES = 32 << 20  # about this many bytes of features per evaluation batch


def evaluation_batch_size(row_bytes: int) -> int:
    """Images per evaluation batch of cached features: the one rule of every evaluation
    path (in memory or on disk, ``fit()``'s or the compiled loop's), so that all of them sum
    the same batches and give the same test loss. About ``EVALUATION_BATCH_BYTES`` of
    features, at most ``EVALUATION_ROWS`` images: a head's 64 features per image, 8,192 at
    once (batches of 256 made the replication's 400 curve points per run cost more than its
    training); ResNet-50's layer3 at 224 px (0.8 MB per image), 41."""
    return max(1, min(EVALUATION_ROWS, EVALUATION_BATCH_BYTES // max(1, int(row_bytes))))


class FeatureView:
    """The features of an ordered list of images, each a row of one chunk.

    Attributes:
      chunks: the arrays (``np.ndarray`` in memory, ``DiskChunk`` on disk) holding rows.
      chunk_of, row_of: for each position, its chunk and row.
    """

    def __init__(self, chunks: list, chunk_of: np.ndarray, row_of: np.ndarray):
        self.chunks, self.chunk_of, self.row_of = chunks, chunk_of, row_of

    def __len__(self) -> int:
        return len(self.row_of)

    @property
    def shape(self) -> tuple:
        """The shape of one image's features."""
        return tuple(self.chunks[0].shape[1:])

    @property
    def row_bytes(self) -> int:
        """Bytes of one image's features (float32)."""
        return int(np.prod(self.shape)) * 4

    @property
    def nbytes(self) -> int:
        """Bytes of the features this view selects (float32)."""
        return len(self) * int(np.prod(self.shape)) * 4

    @property
    def in_memory(self) -> bool:
        """Whether every row this view selects is held in memory."""
        return not any(isinstance(self.chunks[c], DiskChunk) for c in np.unique(self.chunk_of))

    def read(self, positions) -> np.ndarray:
        """The features at ``positions`` of this view, in that order, as one array."""
        positions = np.asarray(positions, np.int64)
        out = np.empty((len(positions), *self.shape), np.float32)
        chunk_of, row_of = self.chunk_of[positions], self.row_of[positions]
        for chunk in np.unique(chunk_of):
            where = chunk_of == chunk
            out[where] = self.chunks[chunk][row_of[where]]
        return out

    def subset(self, positions) -> FeatureView:
        """The view of ``positions`` of this one (no features are copied)."""
        positions = np.asarray(positions, np.int64)
        return FeatureView(self.chunks, self.chunk_of[positions], self.row_of[positions])

    def reader(self):
        """A graph function ``positions [B] -> features [B, ...]`` reading this view."""
        shape = self.shape

        def read(positions):
            features = tf.numpy_function(self.read, [positions], tf.float32, stateful=False)
            return tf.ensure_shape(features, [None, *shape])
        return read

    def batches(self, labels, batch_size: int | None = None) -> tf.data.Dataset:
        """``(features, labels)`` batches in this view's order, read as they are needed:
        the batches ``from_tensor_slices((features, labels)).batch(batch_size)`` gives
        (None: ``evaluation_batch_size``'s, what every evaluation path uses)."""
        read = self.reader()
        # Large rows (ResNet-50's layer3 at 224 px: 0.8 MB) in small batches, two ahead:
        # 256 of them, prefetched without a bound, held a GB.
        batch_size = batch_size or evaluation_batch_size(self.row_bytes)
        positions = tf.data.Dataset.range(len(self)).batch(batch_size)
        labels = tf.data.Dataset.from_tensor_slices(np.asarray(labels)).batch(batch_size)
        return (tf.data.Dataset.zip(positions, labels).map(lambda p, y: (read(p), y))
                .prefetch(2))


def view_of(chunks: list, where: dict, indices) -> FeatureView:
    """The view of ``indices`` in a store whose ``where`` maps an image to (chunk, row)."""
    located = np.asarray([where[int(i)] for i in indices], np.int64).reshape(-1, 2)
    return FeatureView(chunks, located[:, 0], located[:, 1])


class DiskChunk:
    """Rows of float32 features in a raw file, read with ``os.pread`` as they are indexed.

    Not a memory map: pages of a mapped file that has been read count as the process's
    resident memory, so a 4.9 GB test set streamed through a map (Flowers-102's 6,149 images
    at ResNet-50's layer3, results/photo) showed up as 4.9 GB more peak memory; file reads
    leave them to the page cache, which the kernel can drop.
    """

    def __init__(self, path: Path, shape: tuple):
        self.path, self.shape = Path(path), tuple(int(n) for n in shape)
        self.row_bytes = int(np.prod(self.shape[1:])) * 4
        self._file = None
        self._filled = 0

    def append(self, rows: np.ndarray) -> None:
        """Writes the next rows (in order) to the file."""
        if self._file is None:
            self._file = open(self.path, "wb")
        self._file.write(np.ascontiguousarray(rows, np.float32).tobytes())
        self._filled += len(rows)

    def close(self) -> None:
        """Finishes writing; the chunk is read-only from here on."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._filled != self.shape[0]:
            raise RuntimeError(f"{self.path}: {self._filled} of {self.shape[0]} rows written")

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows) -> np.ndarray:
        rows = np.atleast_1d(np.asarray(rows, np.int64))
        out = np.empty((len(rows), *self.shape[1:]), np.float32)
        descriptor = os.open(self.path, os.O_RDONLY)
        try:
            for position, row in enumerate(rows):
                data = os.pread(descriptor, self.row_bytes, int(row) * self.row_bytes)
                out[position] = np.frombuffer(data, np.float32).reshape(self.shape[1:])
        finally:
            os.close(descriptor)
        return out


class DiskFolder:
    """A folder for feature files, created on first use (``scratch.ScratchFolder``: one a
    later run removes should this process be killed) and removed by ``close``, or with its
    owner, or at the interpreter's exit, whichever comes first."""

    def __init__(self, owner, root=None):
        self._owner = weakref.ref(owner)
        self._scratch = ScratchFolder("features-", root)
        self.files = 0

    @property
    def path(self) -> Path | None:
        """The folder (None until the first file)."""
        return self._scratch.path

    def new_file(self) -> Path:
        """The path of a new feature file in the folder."""
        if self.path is None:
            self._scratch.create()
            weakref.finalize(self._owner(), self._scratch.close)
            if self._scratch.removed:
                print(f"features: removed {len(self._scratch.removed)} feature folder(s) of "
                      f"ended runs under {self.path.parent}", file=sys.stderr)
        self.files += 1
        return self.path / f"features-{self.files:05d}.f32"

    def close(self) -> None:
        """Removes the folder and its files now."""
        self._scratch.close()

    def size(self) -> int:
        """Bytes of the feature files written so far."""
        if self.path is None:
            return 0
        return sum(file.stat().st_size for file in self.path.glob("*.f32"))


def extract(trunk, batches, count: int, fits, disk: DiskFolder, progress: bool):
    """Runs ``trunk`` over ``batches`` (``count`` images) into one chunk: an array when
    ``fits(nbytes)`` says the whole chunk fits the memory budget, else a ``DiskChunk`` file
    written batch by batch (the features never sit in memory whole).

    Returns:
      The chunk (``np.ndarray`` or a read-only ``DiskChunk``).
    """
    meter = _Progress(count, progress)
    chunk, path, filled = None, None, 0
    for images, _ in batches:
        features = trunk(images).numpy().astype(np.float32)
        if chunk is None:
            shape = (count, *features.shape[1:])
            if fits(count * features[0].nbytes):
                chunk = np.empty(shape, np.float32)
            else:
                path = disk.new_file()
                chunk = DiskChunk(path, shape)
        if path is None:
            chunk[filled:filled + len(features)] = features
        else:
            chunk.append(features)
        filled += len(features)
        meter.update(filled)
    if path is not None:
        chunk.close()
    meter.done(path, disk)
    return chunk


class _Progress:
    """Images/s and ETA of a feature extraction on stderr, every ``PROGRESS_EVERY`` s."""

    def __init__(self, count: int, enabled: bool):
        self.count, self.enabled = count, enabled
        self.began = self.last = time.monotonic()

    def update(self, done: int) -> None:
        now = time.monotonic()
        if not self.enabled or now - self.last < PROGRESS_EVERY or done >= self.count:
            return
        self.last = now
        rate = done / (now - self.began)
        print(f"features: {done:,}/{self.count:,} images ({100 * done / self.count:.0f}%), "
              f"{rate:.1f} images/s, ETA {_duration((self.count - done) / rate)}",
              file=sys.stderr, flush=True)

    def done(self, path, disk: DiskFolder) -> None:
        seconds = time.monotonic() - self.began
        if not self.enabled or (seconds < PROGRESS_EVERY and path is None):
            return
        where = (f"; on disk in {disk.path} ({format_size(disk.size())} in all)" if path
                 else "")
        print(f"features: {self.count:,} images in {_duration(seconds)} "
              f"({self.count / max(seconds, 1e-9):.1f} images/s){where}", file=sys.stderr,
              flush=True)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {seconds:02d}s"
    return f"{minutes // 60}h {minutes % 60:02d}m"


def format_size(size: int) -> str:
    """``size`` bytes as ``512 MB`` / ``2.1 GB`` (powers of 1000, as ``config.parse_size``)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"

