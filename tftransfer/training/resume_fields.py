"""Checks of the fields read back from a resume file (a checkpoint's metadata, a run's
records): each must have the type and range its writer gives it.

A resume file is input like any other: a damaged or edited one must stop the run with one
sentence naming the file and the field, not with a KeyError from deep inside, and never
resume from a wrong point (a transfer checkpoint saying ``epoch: -3`` trained extra epochs
and wrote history rows -2..8).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from tftransfer.errors import UserError


class ResumeFile:
    """The checks of one resume file's fields; each failure is a ``UserError`` naming
    ``path``, the field and the problem, followed by ``remedy``.

    Args:
      path: the file (named in every message).
      remedy: what the user can do, e.g. "remove it and run without --resume".
    """

    def __init__(self, path, remedy: str):
        self.path, self.remedy = Path(path), remedy

    def refuse(self, name: str | None, problem: str) -> UserError:
        """The error for field ``name`` of this file (None: the whole file) having
        ``problem``."""
        subject = f"its field {name!r}" if name else "it"
        return UserError(f"{self.path} is corrupt: {subject} {problem}; {self.remedy}.")

    def corrupt(self, detail: str) -> UserError:
        """The error for a file that cannot be read at all (``detail``: why)."""
        return UserError(f"{self.path} is corrupt ({detail}); {self.remedy}.")

    def read_json(self, absent):
        """The file's JSON data, or ``absent`` when there is no file."""
        if not self.path.exists():
            return absent
        try:
            return json.loads(self.path.read_text())
        except (UnicodeDecodeError, ValueError, RecursionError) as error:
            raise self.corrupt(f"not JSON: {_first_line(error)}") from None

    def get(self, data: dict, name: str, prefix: str = ""):
        """``data[name]``, refused when absent (``prefix`` names the enclosing field)."""
        if name not in data:
            raise self.refuse(prefix + name, "is missing")
        return data[name]

    def object(self, name: str | None, value) -> dict:
        """``value``, which must be a JSON object."""
        if not isinstance(value, dict):
            raise self.refuse(name, f"is {_shown(value)}, not a JSON object")
        return value

    def objects(self, name: str | None, value) -> list[dict]:
        """``value``, which must be a list of JSON objects."""
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise self.refuse(name, f"is {_shown(value)}, not a list of JSON objects")
        return value

    def count(self, name: str, value, low: int = 0, high: int | None = None) -> int:
        """``value``, which must be a whole number from ``low`` to ``high`` (None: no upper
        bound); a bool or a float such as 2.0 is refused, as the writer never gives one."""
        whole = isinstance(value, int) and not isinstance(value, bool)
        if not whole or value < low or (high is not None and value > high):
            upper = f" to {high}" if high is not None else " or more"
            raise self.refuse(name, f"is {_shown(value)}, not a whole number {low}{upper}")
        return value

    def number(self, name: str, value, low: float = -math.inf, high: float = math.inf):
        """``value``, which must be a finite number from ``low`` to ``high``, or None (a
        value that was not measured)."""
        if value is None:
            return None
        real = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not real or not math.isfinite(value) or not low <= value <= high:
            raise self.refuse(name, f"is {_shown(value)}, not a finite number from {low:g} "
                                    f"to {high:g}")
        return value


def _shown(value) -> str:
    """A short description of a bad value for a message."""
    text = repr(value)
    return text if len(text) <= 40 else f"a {type(value).__name__} ({text[:30]}...)"


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:120]
