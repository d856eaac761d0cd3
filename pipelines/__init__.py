"""Declarative experiment configs, registered by name (no TensorFlow code here).

``python main.py sweep --config NAME`` looks names up in ``REGISTRY``. Add a sweep by
writing a ``SweepConfig`` in a module of this package and calling ``register`` on it.
"""

from __future__ import annotations

import importlib

from tftransfer.config import SweepConfig
from tftransfer.errors import UserError

REGISTRY: dict[str, SweepConfig] = {}
_MODULES = ("pipelines.replication", "pipelines.replication_paper", "pipelines.examples")


def register(config: SweepConfig) -> SweepConfig:
    """Adds a sweep config under its name (each name once)."""
    if config.name in REGISTRY:
        raise ValueError(f"sweep {config.name!r} is registered twice")
    REGISTRY[config.name] = config
    return config


def get(name: str) -> SweepConfig:
    """The registered sweep called ``name`` (a clear error lists the valid names)."""
    _load_all()
    if name not in REGISTRY:
        raise UserError(f"Unknown sweep config {name!r}; registered: {', '.join(sorted(REGISTRY))}.")
    return REGISTRY[name]


def names() -> list[str]:
    """All registered sweep names."""
    _load_all()
    return sorted(REGISTRY)


def _load_all() -> None:
    for module in _MODULES:
        importlib.import_module(module)
