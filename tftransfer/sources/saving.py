"""Where models live on disk and how any of them is loaded back.

A *model directory* (written by ``pretrain``, ``transfer`` and ``convert``) holds
``model.keras`` (the Keras model, RGB [0, 1] input) and ``config.json`` (how it
was made, the class names, the git commit). ``load_model`` also accepts a bare
``.keras`` file and a SavedModel directory: files only (names are ``tftransfer.sources.hub``'s).

A SavedModel directory is loaded only when ``sources.trust`` passes it (the toolkit's
own untouched exports of pure tensor computation, or any with ``--trust-saved-model``),
as the view ``sources.saved_model_view`` builds.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import keras

from tftransfer import runs
from tftransfer.errors import UserError
from tftransfer.sources.export_format import SAVED_MODEL_FILE
from tftransfer.models.resnet import Normalize  # noqa: F401  (registers the custom layer)
from tftransfer.sources.trust import TRUST_FLAG, check_saved_model_trust
from tftransfer.sources.saved_model_view import exported_config, fine_tune_refusal, load_saved_model

# TRUST_FLAG is re-exported: the commands name it in their help.
__all__ = ["CONFIG_FILE", "MODEL_FILE", "TRUST_FLAG", "check_fine_tunable", "keras_file_problem",
           "load_model", "read_config", "resolve_model_path", "save_model_dir"]

MODEL_FILE = "model.keras"
CONFIG_FILE = "config.json"


def save_model_dir(model: keras.Model, out_dir, config: dict) -> Path:
    """Saves ``model`` and its ``config`` (plus the git commit) into ``out_dir``.

    Returns:
      The path of the written ``model.keras``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = dict(config)
    config.setdefault("git_commit", runs.git_commit())
    model_path = out_dir / MODEL_FILE
    tmp_path = out_dir / f".tmp-{MODEL_FILE}"
    model.save(tmp_path)
    tmp_path.replace(model_path)  # atomic: a killed save never leaves a broken model.keras
    runs.write_json(out_dir / CONFIG_FILE, config)
    return model_path


def resolve_model_path(path) -> Path:
    """The ``.keras`` file or SavedModel directory behind a model reference."""
    candidate = Path(path)
    if candidate.is_dir() and (candidate / MODEL_FILE).exists():
        return candidate / MODEL_FILE
    if candidate.is_file() and candidate.suffix in (".keras", ".h5"):
        return candidate
    if candidate.is_dir() and (candidate / SAVED_MODEL_FILE).exists():
        return candidate
    raise UserError(
        f"No model at {str(path)!r}: expected a model directory with {MODEL_FILE}, a .keras "
        f"file or a SavedModel directory.")


def load_model(path, trust_saved_model: bool = False) -> keras.Model:
    """Loads a model reference (see the module docstring) as a ``keras.Model``.

    Args:
      path: a model directory, ``.keras`` file, SavedModel directory or registered name.
      trust_saved_model: load a SavedModel the toolkit did not write (or whose graph has
        ops outside ``SAFE_OPS``); its ops then run with the user's permissions.

    Raises:
      UserError: nothing loadable there, a corrupt file, or an untrusted SavedModel.
    """
    model_path = resolve_model_path(path)
    if model_path.is_dir():
        check_saved_model_trust(model_path, trust_saved_model)
        return load_saved_model(model_path)
    return _load_keras_file(model_path)


def check_fine_tunable(path) -> None:
    """Refuses a SavedModel where a model is to be fine-tuned (``transfer --source``).

    A SavedModel loads as one opaque layer computing logits: its features, blocks and
    classifier layer are not exposed, so there is no head to replace.

    Raises:
      UserError: naming the Keras model the export was made from, when it records one.
    """
    model_path = resolve_model_path(path)
    if not model_path.is_dir():
        return
    raise fine_tune_refusal(path, model_path)


def read_config(path) -> dict:
    """The ``config.json`` next to a model reference ({} when there is none); for one of
    the toolkit's SavedModel exports, the facts its metadata records."""
    model_path = resolve_model_path(path)
    if model_path.is_dir():
        return exported_config(model_path)
    config_path = model_path.parent / CONFIG_FILE
    return runs.read_json(config_path) if config_path.exists() else {}


# ----------------------------------------------------------------------------- .keras files

def _load_keras_file(model_path: Path) -> keras.Model:
    """``keras.models.load_model``, with a corrupt file named as such."""
    try:
        return keras.models.load_model(model_path, compile=False)
    except Exception as error:  # Keras raises many types for a corrupt file
        problem = keras_file_problem(model_path)
        if problem:
            raise UserError(f"The model file {str(model_path)!r} is corrupt ({problem}); "
                            f"re-run the command that wrote it, or restore it from a "
                            f"copy.") from error
        raise UserError(f"Could not load the model in {str(model_path)!r}: {error}") from error


def keras_file_problem(model_path) -> str | None:
    """Why ``model_path`` is not a complete ``.keras`` (zip) or ``.h5`` (HDF5) file, or
    None when its container is intact (so a load failure lies elsewhere).

    Keras reports a zip it cannot open as "File not found", which sends the user looking
    in the wrong place; this reads the container itself.
    """
    model_path = Path(model_path)
    size = model_path.stat().st_size
    if size == 0:
        return "it is empty: 0 bytes"
    if model_path.suffix == ".h5":
        with open(model_path, "rb") as handle:
            intact = handle.read(8) == b"\x89HDF\r\n\x1a\n"
        return None if intact else f"{size} bytes that are not an HDF5 file"
    if not zipfile.is_zipfile(model_path):
        return f"{size} bytes that are not a complete zip archive, as after an interrupted copy"
    try:
        with zipfile.ZipFile(model_path) as archive:
            damaged = archive.testzip()  # reads every member and checks its CRC
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        return f"its zip archive is damaged: {error}"
    return f"the member {damaged!r} of its zip archive is damaged" if damaged else None
