"""What a prediction from the server must be before it is used: the outputs of a model
exported by ``export`` (``serving.export.OUTPUT_KEYS``), of the right types and lengths.

A misbehaving server (or another service on the port) can answer anything; a wrong type or
length used as it is ended in a TypeError or IndexError traceback far from the answer.
"""

from __future__ import annotations

import json
import math

from tftransfer.errors import UserError


def check_prediction(prediction, signature: str, where: str, index: int) -> dict:
    """``prediction``, the answer for image ``index`` from the server at ``where``, when it
    holds the exported outputs: probabilities in [0, 1], class indices among them and a
    name per class index (what ``client.top_k`` reads).

    Raises:
      UserError: naming the image and the first output that is wrong.
    """
    if not isinstance(prediction, dict) or not {"probabilities", "classes",
                                                "class_names"} <= set(prediction):
        raise UserError(f"The {signature!r} signature does not return probabilities, classes "
                        f"and class_names; serve a model exported by `python main.py export`.")
    probabilities, classes = prediction["probabilities"], prediction["classes"]
    problem = (_not_numbers(probabilities, 0.0, 1.0, "probabilities")
               or _not_numbers(classes, 0, len(probabilities) - 1, "classes", whole=True)
               or _not_names(prediction["class_names"], len(classes)))
    if problem:
        raise UserError(f"{where} answered a prediction for image {index} whose {problem}; "
                        f"it is not what a model exported by `python main.py export` "
                        f"returns.")
    return prediction


def _not_numbers(values, low, high, name: str, whole: bool = False) -> str | None:
    """What is wrong with ``values`` as a non-empty list of numbers in [low, high] (whole
    numbers with ``whole``), or None."""
    kinds = int if whole else (int, float)
    if not isinstance(values, list) or not values or not all(
            isinstance(v, kinds) and not isinstance(v, bool) and math.isfinite(v)
            and low <= v <= high for v in values):
        what = "whole numbers" if whole else "numbers"
        return f"{name!r} is not a list of {what} from {low} to {high}: {_shown(values)}"
    return None


def _not_names(names, count: int) -> str | None:
    """What is wrong with ``names`` as ``count`` class names, or None."""
    if not isinstance(names, list) or len(names) != count or not all(
            isinstance(n, str) for n in names):
        return f"'class_names' is not a list of {count} names: {_shown(names)}"
    return None


def _shown(value) -> str:
    text = json.dumps(value) if not isinstance(value, bytes) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
