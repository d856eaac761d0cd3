"""Where models live on disk and how any of them is loaded back.

A *model directory* (written by ``pretrain``, ``transfer`` and ``convert``) holds
``model.keras`` (the Keras model, RGB [0, 1] input) and ``config.json`` (how it
was made, the class names, the git commit). ``load_model`` also accepts a bare
``.keras`` file, a SavedModel directory and the name of a registered source.
"""

from __future__ import annotations

from pathlib import Path

import keras

from tftransfer import runs
from tftransfer.errors import UserError
from tftransfer.resnet import Normalize  # noqa: F401  (registers the custom layer)

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
    if candidate.is_dir() and (candidate / "saved_model.pb").exists():
        return candidate
    from tftransfer import sources  # registered names: the source registry

    registered = sources.resolve(str(path))
    if registered is not None:
        return resolve_model_path(registered)
    raise UserError(
        f"No model at {str(path)!r}: expected a model directory with {MODEL_FILE}, a .keras "
        f"file, a SavedModel directory, or a registered source name "
        f"({', '.join(sources.names()) or 'none registered'}).")


def load_model(path) -> keras.Model:
    """Loads a model reference (see the module docstring) as a ``keras.Model``."""
    model_path = resolve_model_path(path)
    if model_path.is_dir():
        return _load_saved_model(model_path)
    try:
        return keras.models.load_model(model_path, compile=False)
    except Exception as error:  # Keras raises many types for a corrupt file
        raise UserError(f"Could not load the model in {str(model_path)!r}: {error}") from error


def read_config(path) -> dict:
    """The ``config.json`` next to a model reference ({} when there is none)."""
    model_path = resolve_model_path(path)
    config_path = (model_path if model_path.is_dir() else model_path.parent) / CONFIG_FILE
    return runs.read_json(config_path) if config_path.exists() else {}


def _load_saved_model(directory: Path) -> keras.Model:
    """Wraps a SavedModel's serving function as a Keras model (inference only)."""
    layer = keras.layers.TFSMLayer(str(directory), call_endpoint="serving_default")
    # TFSMLayer needs a known input shape; read it from the signature.
    import tensorflow as tf

    loaded = tf.saved_model.load(str(directory))
    spec = list(loaded.signatures["serving_default"].structured_input_signature[1].values())[0]
    inputs = keras.Input(spec.shape[1:], dtype=spec.dtype)
    outputs = layer(inputs)
    if isinstance(outputs, dict):
        outputs = list(outputs.values())[0]
    return keras.Model(inputs, outputs)
