"""The checks every config runs on construction: one sentence (a ``UserError``) per problem."""

from __future__ import annotations

import dataclasses
import math
import numbers

from tftransfer.errors import UserError

# Seeds go to numpy's legacy seeding (np.random.seed via keras.utils.set_random_seed, and
# RandomState for --subset random), which takes only 0 <= seed < 2**32.
SEED_LIMIT = 2 ** 32


def check(condition: bool, message: str) -> None:
    """Stops with ``message`` (a ``UserError``) unless ``condition`` holds."""
    if not condition:
        raise UserError(message)


def check_finite(config) -> None:
    """Every float field of ``config`` (and float in a tuple field) must be finite: ``inf``
    and ``nan`` parse as floats (``--lr inf``), pass comparisons such as ``> 0``, and would
    train, save and report an all-NaN model."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        for item in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(item, numbers.Real) and not isinstance(item, numbers.Integral):
                check(math.isfinite(item), f"{f.name} must be a finite number, got {item}.")


def check_seed(seed, name: str = "seed") -> None:
    """A seed must be a whole number in [0, 2**32) (``SEED_LIMIT``)."""
    valid = isinstance(seed, numbers.Integral) and not isinstance(seed, bool)
    check(valid and 0 <= seed < SEED_LIMIT,
          f"{name} must be a whole number from 0 to {SEED_LIMIT - 1}, got {seed!r}.")


def check_whole_number(value, name: str) -> None:
    """``value`` must be a whole number: an int, not a bool, a float or a string (``100.5``
    passes ``>= 2`` and fails deep inside a run; ``"100"`` fails a comparison naming no field)."""
    valid = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    check(valid, f"{name} must be a whole number, got {value!r}.")


def check_values(owner: str, name: str, values) -> None:
    """``values`` must be a non-empty tuple or list (a bare value is a common slip)."""
    check(isinstance(values, (tuple, list)),
          f"{owner}: {name} must be a tuple or list, got {values!r}.")
    check(len(values) > 0, f"{owner}: {name} is empty.")
