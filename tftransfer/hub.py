"""Model references -> model directories: the one place a source *name* becomes a *path*.

A reference is a path (a model directory, a ``.keras`` file, a SavedModel directory) or the
name of a source: a local one registered in ``tftransfer.sources`` (a model in
``saved_models/``), or a published ImageNet model (``tftransfer.published``: downloaded and
converted into the cache on first use). ``saving`` knows files only; commands that accept
names resolve them here first.
"""

from __future__ import annotations

from pathlib import Path

import keras

from tftransfer import saving, sources
from tftransfer.errors import UserError


def model_dir(reference) -> Path:
    """The path behind ``reference``: itself when it exists, else the registered or published
    source of that name (a published one is downloaded and converted once)."""
    path = Path(reference)
    if path.exists():
        return path
    registered = sources.resolve(str(reference))
    if registered is not None:
        return Path(registered)
    raise UserError(f"No model at {str(reference)!r} and no source of that name: pass a model "
                    f"directory, a .keras file or a SavedModel directory, or one of "
                    f"{', '.join(sources.names()) or 'no registered sources'}.")


def load_model(reference, trust_saved_model: bool = False) -> keras.Model:
    """``saving.load_model`` of ``model_dir(reference)``."""
    return saving.load_model(model_dir(reference), trust_saved_model=trust_saved_model)


def read_config(reference) -> dict:
    """``saving.read_config`` of ``model_dir(reference)``."""
    return saving.read_config(model_dir(reference))
