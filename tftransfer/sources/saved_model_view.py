"""A SavedModel's float-image signature loaded as a Keras model (inference and gradients
only), and the ``config.json`` facts its export metadata records."""

from __future__ import annotations

from pathlib import Path

import keras

from tftransfer.sources import export_format
from tftransfer.errors import UserError
from tftransfer.sources.export_format import SAVED_MODEL_FILE
from tftransfer.sources.trust import parse_saved_model


def load_saved_model(directory: Path) -> keras.Model:
    """Wraps a SavedModel's float-image signature as a Keras model (inference only).

    The toolkit's exports are read through ``predict_images`` (their ``serving_default``
    takes encoded bytes) at the image size their metadata records, returning ``logits``.
    """
    metadata = export_format.read_metadata(directory)
    name, shape = _float_image_signature(directory, metadata)
    size = metadata.get("image_size") or shape[1]
    if not size or (shape[1] and shape[2] and shape[1] != shape[2]):
        raise UserError(f"The SavedModel {str(directory)!r} takes images of shape {shape}; "
                        f"tftransfer needs square images of a fixed size.")
    try:
        layer = keras.layers.TFSMLayer(str(directory), call_endpoint=name)
    except Exception as error:  # TensorFlow raises many types for a broken SavedModel
        raise UserError(f"Could not load the SavedModel {str(directory)!r}: "
                        f"{str(error).strip().splitlines()[0]}") from error
    inputs = keras.Input((int(size), int(size), 3), dtype="float32")
    outputs = layer(inputs)
    if isinstance(outputs, dict):
        outputs = _logits(outputs, directory)
    return SavedModelView(inputs, outputs, directory)


class SavedModelView(keras.Model):
    """A SavedModel's float-image signature as a Keras model: predictions and gradients.

    Its one layer is the opaque graph, so there is no architecture to rebuild, resize or
    fine-tune; ``get_config`` (which every such use starts with) says so in one sentence.
    """

    def __init__(self, inputs, outputs, directory, **kwargs):
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.directory = Path(directory)

    def get_config(self):
        # Raises: a SavedModel has no layers to rebuild.
        raise fine_tune_refusal(self.directory, self.directory)


def _float_image_signature(directory: Path, metadata: dict) -> tuple[str, tuple]:
    """The name and input shape of the signature taking one float32 [N, H, W, 3] tensor,
    read from ``saved_model.pb`` (``predict_images`` for the toolkit's exports)."""
    from tensorflow.core.framework import types_pb2

    signatures = parse_saved_model(directory / SAVED_MODEL_FILE).meta_graphs[0].signature_def
    preferred = [export_format.IMAGES_SIGNATURE] if metadata else ["serving_default"]
    for name in preferred + sorted(set(signatures) - set(preferred)):
        inputs = list(signatures[name].inputs.values()) if name in signatures else []
        if len(inputs) != 1 or inputs[0].dtype != types_pb2.DT_FLOAT:
            continue
        dims = inputs[0].tensor_shape
        shape = tuple(None if d.size < 0 else d.size for d in dims.dim)
        if not dims.unknown_rank and len(shape) == 4 and shape[-1] == 3:
            return name, shape
    raise UserError(f"The SavedModel {str(directory)!r} has no signature taking one float32 "
                    f"[N, H, W, 3] image tensor (signatures: {', '.join(signatures) or 'none'}); "
                    f"tftransfer models take RGB images in [0, 1].")

def _logits(outputs: dict, directory: Path):
    if "logits" in outputs:
        return outputs["logits"]
    if len(outputs) == 1:
        return next(iter(outputs.values()))
    raise UserError(f"The SavedModel {str(directory)!r} returns {', '.join(sorted(outputs))}; "
                    f"tftransfer needs one output of logits (or an output named 'logits').")


def exported_config(directory: Path) -> dict:
    """The ``config.json`` facts an export's metadata records (class names, image size,
    source, recipe, accuracy); {} for a SavedModel from elsewhere."""
    metadata = export_format.read_metadata(directory)
    if not metadata:
        return {}
    config = {key: metadata[key] for key in ("kind", "arch", "dataset", "class_names",
                                             "image_size", "test_accuracy") if key in metadata}
    config.update(metadata.get("source") or {})
    if metadata.get("recipe") is not None:
        config["resolved_config"] = metadata["recipe"]
    if metadata.get("model_git_commit"):
        config["git_commit"] = metadata["model_git_commit"]
    return config


def fine_tune_refusal(path, directory: Path) -> UserError:
    """The error for fine-tuning the SavedModel ``directory`` (given as ``path``): it loads
    as one opaque layer computing logits, with no head to replace.

    Returns:
      A UserError naming the Keras model the export was made from, when it records one.
    """
    origin = export_format.read_metadata(directory).get("model")
    hint = (f"use the Keras model it was exported from ({origin})" if origin else
            "use a model directory or model.keras file instead")
    return UserError(f"{str(path)!r} is a SavedModel, which serves predictions but cannot be "
                     f"fine-tuned (its layers are not exposed); {hint}.")
