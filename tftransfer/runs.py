"""Run records: resolved config, git commit, JSON files written atomically."""

from __future__ import annotations

import contextlib
import csv
import fcntl
import functools
import io
import json
import os
import re
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Callable


# Files a background training job rewrites while it runs (its resumable checkpoint, logs and
# history): they are data, not code, and would otherwise mark every row of a sweep run beside
# the training "+dirty".
TRAINING_IN_PROGRESS = ("saved_models/*/checkpoint/**", "saved_models/*/logs/**",
                        "saved_models/*/history.csv")


@functools.cache
def git_commit() -> str:
    """The commit of the checkout this package runs from (see ``checkout_commit``).

    Read once per process: a long sweep records the code it started with, not a commit
    made while it ran (nor "+dirty" from the results file it is itself writing)."""
    return checkout_commit(Path(__file__).resolve().parent.parent)


def checkout_commit(root) -> str:
    """The commit checked out at ``root`` ("unknown" outside git), with a ``+dirty`` suffix
    when tracked files other than a training run's checkpoint, logs and history
    (``TRAINING_IN_PROGRESS``) have uncommitted changes."""
    excludes = [f":(exclude,glob){pattern}" for pattern in TRAINING_IN_PROGRESS]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                                ".", *excludes], cwd=root, capture_output=True, text=True,
                               timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


# What decides a result: the package, the registered grids and the entry point. Results, READMEs
# and a training run's own files may change beside a sweep without changing its rows.
CODE_PATHS = ("tftransfer", "pipelines", "main.py", "setup.cfg")
# Set to 1 to record results from uncommitted code anyway (rows are then marked "+dirty").
ALLOW_DIRTY_ENV = "TFTRANSFER_ALLOW_DIRTY"


def uncommitted_code(root=None) -> list[str]:
    """The tracked files under ``CODE_PATHS`` that differ from the commit checked out at
    ``root`` (default: the checkout this package runs from); [] outside git."""
    root = Path(root) if root is not None else Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                              *CODE_PATHS], cwd=root, capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.SubprocessError):
        return []
    return [line[3:] for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 \
        else []


def require_committed_code(allow_dirty: bool = False, root=None) -> None:
    """Refuses to record results from code that differs from its commit, so that every row
    traces to one commit; ``allow_dirty`` (or ``TFTRANSFER_ALLOW_DIRTY=1``) lets a local
    experiment run, its rows marked ``+dirty``.

    Raises:
      UserError: naming the changed files and the two ways on.
    """
    from tftransfer.errors import UserError

    if allow_dirty or os.environ.get(ALLOW_DIRTY_ENV) == "1":
        return
    changed = uncommitted_code(root)
    if changed:
        shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5
                                          else "")
        raise UserError(f"The code has uncommitted changes ({shown}), so these results would "
                        f"trace to no commit; commit them (or run from a `git worktree` of a "
                        f"commit), or pass --allow-dirty to record rows marked +dirty.")


def checkout_relative(path) -> str:
    """``path`` as results record it: relative to the checkout that holds it (the same
    string from any working directory, an absolute ``--results`` or another ``git worktree``
    writing into this checkout), else to the working directory, else as given."""
    resolved = Path(path).resolve()
    root = next((p for p in resolved.parents if (p / ".git").exists()), None)
    for base in (root, Path.cwd().resolve()):
        if base is not None and resolved.is_relative_to(base):
            return str(resolved.relative_to(base))
    return str(path)


def slug(text, keep: str = "._+-", max_chars: int | None = None, fallback: str = "") -> str:
    """``text`` as a portable part of a file or directory name.

    Every run of characters other than ASCII letters, digits and ``keep`` becomes one ``_``,
    and ``_`` is stripped from both ends; then the last ``max_chars`` characters are kept
    (None: all), and an empty result becomes ``fallback``. The callers' variants name
    committed files and existing run directories, so each keeps its own:

    - run and search directories (``<target>__<source>__n<N>...``): ``keep=".+-"``,
      ``max_chars=60``; without ``_`` in ``keep`` a part never holds ``__``, the separator
      between parts;
    - report figures per target: ``keep="._-"``, ``fallback="target"``;
    - influence file names per run: the default ``keep``, ``fallback="model"``.

    Args:
      text: any value; ``str(text)`` is used.
      keep: the punctuation kept as it is.
      max_chars: keep only this many characters from the end.
      fallback: the result when nothing is left.

    Returns:
      The slug.
    """
    name = re.sub(f"[^A-Za-z0-9{re.escape(keep)}]+", "_", str(text)).strip("_")
    if max_chars is not None:
        name = name[max(len(name) - max_chars, 0):]
    return name or fallback


@contextlib.contextmanager
def replacing(path, suffix: str = ""):
    """Yields a temporary path beside ``path`` to write the new file to; when the body
    succeeds, the file is flushed to disk and renamed over ``path`` (and the rename itself
    flushed), so that ``path`` is always either the whole old file or the whole new one,
    even after a crash or a power cut. On failure the temporary file is removed.

    Args:
      path: the file to replace.
      suffix: the temporary name's ending, for writers that check it (``.weights.h5``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(handle)
    try:
        yield Path(tmp)
        _fsync(tmp, os.O_RDONLY)
        os.chmod(tmp, 0o644)  # mkstemp makes owner-only files; records are meant to be shared
        os.replace(tmp, path)
        _fsync(path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


@contextlib.contextmanager
def locked(path, busy: Callable[[str], str] | None = None):
    """Holds an exclusive lock on the file ``path`` (created, with its folders) for the
    ``with`` body: the one lock of the toolkit (a sweep's results directory, a transfer run
    directory, a search directory).

    It is the kernel's ``flock``: released when the body ends or its process dies, so a
    kill -9 cannot leave it stuck; it works on local disks and NFSv4. The holder writes its
    pid and host into the file, for a refusal to name it.

    Args:
      path: the lock file.
      busy: None to wait while another process holds the lock; else refuse at once: a
        function of the holder (``pid N on HOST``) that returns the refusal's sentence.

    Raises:
      UserError: ``busy``'s sentence, when another process holds the lock.
    """
    from tftransfer.errors import UserError

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (fcntl.LOCK_NB if busy else 0))
        except BlockingIOError:
            raise UserError(busy(_lock_holder(path))) from None
        try:
            handle.truncate(0)
            handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
            handle.flush()
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _lock_holder(path: Path) -> str:
    # Written just after the lock is taken: a holder caught before that is unnamed.
    try:
        return path.read_text().strip() or "another process"
    except (OSError, UnicodeDecodeError):
        return "another process"


def _fsync(path, flags: int) -> None:
    descriptor = os.open(path, flags)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_bytes_atomic(path, data: bytes) -> None:
    """Writes ``data`` to ``path`` atomically and durably (see ``replacing``)."""
    with replacing(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path, text: str) -> None:
    """Writes ``text`` to ``path`` atomically and durably, so readers never see half a file."""
    write_bytes_atomic(path, text.encode())


def write_json(path, obj) -> None:
    """Writes ``obj`` as indented JSON, atomically."""
    write_text_atomic(path, json.dumps(obj, indent=2, default=_default) + "\n")


def as_json_data(obj):
    """``obj`` as it reads back from JSON (tuples become lists, numpy scalars numbers)."""
    return json.loads(json.dumps(obj, default=_default))


def read_json(path) -> dict:
    """Reads a JSON file written by ``write_json``."""
    with open(path) as handle:
        return json.load(handle)


def _default(value):
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def write_csv_atomic(path, rows: list[dict]) -> None:
    """Writes ``rows`` as a CSV atomically; the columns are the union of the rows' keys in
    order of first appearance (a row without a column leaves it empty)."""
    columns = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())
