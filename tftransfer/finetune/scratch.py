"""Scratch folders that a killed process does not leave behind for good.

The trunk features a run keeps on disk reach gigabytes at photo scale (0.8 MB per image at
ResNet-50's layer3, 224 px). A folder under ``$TMPDIR`` named at random was removed only
when its process ended normally: kill -9, a SIGTERM without a handler or a power cut left
it there, and nothing ever removed it.

So every scratch folder lives under one known root per user,
``$TMPDIR/tftransfer-scratch-<uid>/``, and holds ``owner.lock``, on which its process keeps
an exclusive ``flock`` while the folder lives. The kernel drops that lock when the process
ends, however it ends, so the next process that creates a scratch folder removes every
folder whose lock it can take (their owners are gone; a recycled pid cannot fool a lock).
The owner removes its folder itself on ``close`` (a ``with`` block, an exception passing
through it, or the interpreter's exit).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
import time
from pathlib import Path

from tftransfer.errors import UserError

LOCK_FILE = "owner.lock"
# A folder without its lock file is being created right now (the folder first, then its
# lock, renamed into place already locked) or its creator died in between: only the
# latter is this old.
UNLOCKED_GRACE_SECONDS = 60.0


def scratch_root() -> Path:
    """The folder holding this user's scratch folders: ``$TMPDIR/tftransfer-scratch-<uid>``
    (one per user, so that no one else can create, lock or remove folders in it)."""
    return Path(tempfile.gettempdir()) / f"tftransfer-scratch-{os.getuid()}"


class ScratchFolder:
    """A folder of this process's temporary files, created on ``create``, removed on
    ``close``, and removed by a later process should this one die first.

    Args:
      prefix: the start of the folder's name (e.g. ``features-``).
      root: the folder holding the scratch folders (default ``scratch_root()``).
    """

    def __init__(self, prefix: str, root=None):
        self.prefix, self.root = prefix, Path(root) if root else None
        self.path: Path | None = None
        self.removed: list[Path] = []  # the ended processes' folders ``create`` removed
        self._lock: int | None = None

    def create(self) -> Path:
        """Removes the folders of ended processes, then creates and locks this one.

        Returns:
          The new folder.

        Raises:
          UserError: when the root is not a folder of this user's (another user, or a
            symlink, could otherwise choose where the files go).
        """
        root = self.root or scratch_root()
        _own_root(root)
        self.removed = remove_stale(root)
        path = Path(tempfile.mkdtemp(prefix=self.prefix + f"{os.getpid()}-", dir=root))
        self._lock, self.path = _lock(path), path
        return path

    def close(self) -> None:
        """Removes the folder and its files (nothing when it was never created)."""
        if self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)
            self.path = None
        if self._lock is not None:
            os.close(self._lock)  # after the removal: until then the folder is in use
            self._lock = None


def remove_stale(root) -> list[Path]:
    """Removes the scratch folders under ``root`` whose process has ended.

    Returns:
      The folders removed.
    """
    removed = []
    for folder in sorted(Path(root).iterdir()):
        if folder.is_symlink() or not folder.is_dir():
            continue
        lock = _lock_of_ended_owner(folder)
        if lock is None:
            continue
        try:
            shutil.rmtree(folder, ignore_errors=True)
        finally:
            if lock >= 0:
                os.close(lock)
        removed.append(folder)
    return removed


def _lock_of_ended_owner(folder: Path) -> int | None:
    """A descriptor of ``folder``'s lock file, locked by this process, when its owner has
    ended (-1: an old folder that never got its lock); None while the owner lives."""
    try:
        descriptor = os.open(folder / LOCK_FILE, os.O_RDONLY)
    except FileNotFoundError:
        try:
            age = time.time() - folder.stat().st_mtime
        except FileNotFoundError:  # removed meanwhile by its owner or another process
            return None
        return -1 if age > UNLOCKED_GRACE_SECONDS else None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        return None
    return descriptor


def _lock(folder: Path) -> int:
    """Creates ``folder``'s lock file, locked: written under another name and renamed,
    so that no other process finds the lock file before it is locked."""
    pending = folder / f".{LOCK_FILE}.new"
    descriptor = os.open(pending, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600)
    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(descriptor, f"{os.getpid()}\n".encode())  # for a person looking; not trusted
    os.rename(pending, folder / LOCK_FILE)
    return descriptor


def _own_root(root: Path) -> None:
    """Creates ``root`` (mode 700) unless it exists; refuses one that is not this user's
    own folder."""
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    status = os.lstat(root)
    if not os.path.isdir(root) or os.path.islink(root) or status.st_uid != os.getuid():
        raise UserError(f"{root} is not a folder of yours (a symlink, a file or another "
                        f"user's), so tftransfer will not keep temporary files there; remove "
                        f"it, or point TMPDIR to another folder.")
