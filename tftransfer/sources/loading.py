"""Loading a source network for fine-tuning: by registered name or path, with its identity
(where it came from, its threat model) and a rebuild for another input size or precision."""

from __future__ import annotations

from dataclasses import dataclass, field

import keras

from tftransfer.sources import hub
from tftransfer.sources import saving
from tftransfer.sources import registry as sources
from tftransfer.sources.registry import threat_model  # noqa: F401 (one definition; callers import it here)

DEFAULT_SOURCE = sources.DEFAULT_SOURCE


@dataclass(frozen=True)
class SourceModel:
    """A loaded source network and where it came from."""

    model: keras.Model
    identity: dict = field(default_factory=dict)


def load_source(reference: str | None) -> SourceModel:
    """Loads a source by registered name or path; None loads ``DEFAULT_SOURCE``."""
    reference = reference or DEFAULT_SOURCE
    path = hub.model_dir(reference)
    # Before loading: a SavedModel cannot be fine-tuned, trusted or not (one sentence either way).
    saving.check_fine_tunable(path)
    model = saving.load_model(path)
    config = saving.read_config(path)
    registered = hub.get(reference)
    attack, eps = (registered.attack, registered.eps) if registered else threat_model(config)
    identity = {
        "source": reference,
        "source_path": str(saving.resolve_model_path(path)),
        "source_arch": config.get("arch", model.name),
        "source_dataset": config.get("dataset"),
        "source_attack": attack,
        "source_eps": eps,
        "source_git_commit": config.get("git_commit"),
    }
    return SourceModel(model, identity)


def with_input_size(model: keras.Model, image_size: int, precision: str | None = None,
                    always_copy: bool = False) -> keras.Model:
    """The same network for ``image_size`` inputs and the ``precision`` dtype policy, weights
    copied; ``model`` itself when both already match (unless ``always_copy``).

    ResNets are fully convolutional up to the global pooling, so any size works. A loaded
    model keeps the dtype policy it was saved with, whatever the global policy is, so a
    different ``precision`` also needs this rebuild.
    """
    config = model.get_config()
    layers = config["layers"]
    same_size = model.inputs[0].shape[1] == image_size
    same_policy = precision is None or all(
        _policy_name(layer) == precision for layer in layers[1:-1])
    if same_size and same_policy and not always_copy:
        return model
    for layer in layers:
        if layer["class_name"] == "InputLayer":
            shape = list(layer["config"]["batch_shape"])
            layer["config"]["batch_shape"] = [shape[0], image_size, image_size, shape[3]]
        elif precision is not None and layer is not layers[-1]:
            layer["config"]["dtype"] = precision  # the last layer (the head) stays float32
    rebuilt = keras.Model.from_config(config)
    rebuilt.set_weights(model.get_weights())
    return rebuilt


def _policy_name(layer_config: dict) -> str | None:
    dtype = layer_config["config"].get("dtype")
    if isinstance(dtype, dict):
        return dtype.get("config", {}).get("name")
    return dtype
