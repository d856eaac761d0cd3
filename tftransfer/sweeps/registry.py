"""The registered sweep grids: one TOML file each in ``pipelines/grids/`` (no TensorFlow code).

``python main.py sweep --config NAME`` looks names up here; ``sweep --grid FILE`` runs a file
anywhere (the format: ``tftransfer.sweeps.grid_files``). To register a grid, add a file to
``pipelines/grids/``: every ``*.toml`` there is loaded, and its ``name`` field is the name.
"""

from __future__ import annotations

import pipelines
from tftransfer.config import SweepConfig
from tftransfer.errors import UserError
from tftransfer.sweeps.grid_files import load_grid

GRIDS_DIR = pipelines.GRIDS_DIR
REGISTRY: dict[str, SweepConfig] = {}
_loaded = False


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
        raise UserError(f"Unknown sweep config {name!r}; registered: {', '.join(sorted(REGISTRY))} "
                        f"(or run a grid file with --grid FILE).")
    return REGISTRY[name]


def names() -> list[str]:
    """All registered sweep names."""
    _load_all()
    return sorted(REGISTRY)


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    for path in sorted(GRIDS_DIR.glob("*.toml")):
        register(load_grid(path))
    _loaded = True
