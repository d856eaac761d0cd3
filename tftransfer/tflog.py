"""TensorFlow's start-up logging, kept off the command line's stderr unless asked for.

A tool's stderr should carry its own progress and errors. TensorFlow prints a oneDNN banner
(twice: two of its libraries log it) and CPU-feature notes while it is imported, through
absl before logging is configured, so ``TF_CPP_MIN_LOG_LEVEL`` does not silence the banner.
``quiet_tensorflow`` therefore sets that variable (unless the user set it) and, while
``tensorflow`` is first imported, sends file descriptor 2 to a temporary file, then replays
every line except the start-up information. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile

LOG_LEVEL_VARIABLE = "TF_CPP_MIN_LOG_LEVEL"
# absl's "before InitializeLog" notice, INFO/WARNING lines (I0000 00:00:... file.cc:N] ...)
# and the CPU-feature note's continuation line; errors (E..., F...) are replayed.
_START_UP_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|[IW]\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] "
    r"|To enable the following instructions: .* rebuild TensorFlow)")


def quiet_tensorflow(verbose: bool = False) -> None:
    """Keeps TensorFlow's start-up chatter off stderr for this process.

    Args:
      verbose: leave TensorFlow's logging as TensorFlow (and ``TF_CPP_MIN_LOG_LEVEL``, if
        the user set it) has it.
    """
    if verbose:
        return
    os.environ.setdefault(LOG_LEVEL_VARIABLE, "2")  # warnings and errors of ops stay
    if "tensorflow" not in sys.modules and not any(
            isinstance(finder, _QuietImportFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _QuietImportFinder())


def filtered(text: str) -> str:
    """``text`` without TensorFlow's start-up information lines."""
    kept = [line for line in text.splitlines() if not _START_UP_NOISE.match(line)]
    return "".join(f"{line}\n" for line in kept)


@contextlib.contextmanager
def start_up_filtered():
    """Everything written to file descriptor 2 inside is replayed afterwards, filtered."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = filtered(captured.read().decode(errors="replace"))
            if text:
                sys.stderr.write(text)


class _QuietImportFinder(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` once, with a loader that imports it under ``start_up_filtered``."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "tensorflow":
            return None
        sys.meta_path.remove(self)  # once: from now on the usual finders answer
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


class _QuietLoader(importlib.abc.Loader):
    """The real loader of a module, executing it with fd 2 filtered."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        with start_up_filtered():
            self._loader.exec_module(module)

    def __getattr__(self, name):  # resource readers and the like: the real loader's
        return getattr(self._loader, name)
