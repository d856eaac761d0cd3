"""TF Serving's REST predict format, read and written for a SavedModel's signatures.

TensorFlow Serving's REST API (``POST /v1/models/NAME[/versions/N]:predict``) takes either
the row format, ``{"signature_name": S, "instances": [...]}`` answered with
``{"predictions": [...]}``, or the columnar format, ``{"inputs": ...}`` answered with
``{"outputs": ...}``. With one named input (as both signatures of ``export``), an instance
is that input's value or an object ``{INPUT: value}``; binary strings travel as
``{"b64": "..."}``. KServe's V1 protocol is this format, so ``serving.kserve_model`` runs the
export's signatures through it.

Every refusal is a ``RequestError`` with one sentence for the client (an HTTP 400).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

DEFAULT_SIGNATURE = "serving_default"


class RequestError(ValueError):
    """A request the signatures cannot answer; its message is one sentence for the client."""


@dataclass(frozen=True)
class PredictRequest:
    """A predict request: which signature, which format, and the input's value."""

    signature_name: str
    columnar: bool
    value: object


def read_request(body) -> PredictRequest:
    """The signature, format and input value of a predict request's JSON body.

    Raises:
      RequestError: not a JSON object, neither or both of ``instances`` and ``inputs``,
        or a ``signature_name`` that is not a string.
    """
    if not isinstance(body, dict):
        raise RequestError("The request body must be a JSON object with 'instances' or "
                           "'inputs'.")
    if ("instances" in body) == ("inputs" in body):
        raise RequestError("The request must have exactly one of the keys 'instances' (row "
                           "format) and 'inputs' (columnar format).")
    signature = body.get("signature_name", DEFAULT_SIGNATURE)
    if not isinstance(signature, str):
        raise RequestError(f"'signature_name' must be a string, got {signature!r:.60}.")
    columnar = "inputs" in body
    value = body["inputs"] if columnar else body["instances"]
    if not columnar and not isinstance(value, list):
        raise RequestError("'instances' must be a list, one entry per example.")
    return PredictRequest(signature, columnar, value)


def input_value(request: PredictRequest, input_name: str):
    """The value of the signature's one input ``input_name``, with ``{"b64": ...}`` decoded.

    An instance (row format) or the ``inputs`` (columnar) may be the value itself or an
    object holding it under the input's name, as TF Serving accepts for one named input.
    """
    if request.columnar:
        return decode_b64(_unwrap(request.value, input_name))
    return [decode_b64(_unwrap(instance, input_name)) for instance in request.value]


def _unwrap(value, input_name: str):
    if isinstance(value, dict) and "b64" not in value:
        if set(value) != {input_name}:
            raise RequestError(f"This signature has one input, {input_name!r}; the request "
                               f"names {sorted(value)!r:.80}.")
        return value[input_name]
    return value


def decode_b64(value):
    """``value`` with every ``{"b64": text}`` replaced by its bytes (nested lists too)."""
    if isinstance(value, list):
        return [decode_b64(item) for item in value]
    if isinstance(value, dict):
        text = value.get("b64")
        if set(value) != {"b64"} or not isinstance(text, str):
            raise RequestError("A binary value must be an object with one key, 'b64', whose "
                               "value is base64 text.")
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise RequestError("A 'b64' value is not valid base64 text.") from None
    return value


def answer(outputs: dict, columnar: bool) -> dict:
    """The JSON answer to a predict request from the signature's ``outputs`` (name ->
    numpy array, first axis the batch): ``predictions`` (one object per example) or
    ``outputs`` (one list per output name)."""
    values = {name: _jsonable(name, array) for name, array in outputs.items()}
    if columnar:
        return {"outputs": values}
    count = len(next(iter(values.values()), []))
    return {"predictions": [{name: column[i] for name, column in values.items()}
                            for i in range(count)]}


def _jsonable(name: str, array):
    if array.dtype.kind in "SO":  # tf.string
        # TF Serving's rule: outputs named *_bytes are binary, the others are text.
        binary = name.endswith("_bytes")
        return _map_strings(array.tolist(), binary)
    return array.tolist()


def _map_strings(value, binary: bool):
    if isinstance(value, list):
        return [_map_strings(item, binary) for item in value]
    if binary:
        return {"b64": base64.b64encode(value).decode("ascii")}
    return value.decode("utf-8", errors="replace")


# A TensorFlow error's first line may end with the op that failed, e.g. " [Op:...]".
_OP_SUFFIX = re.compile(r"\s*\[\[.*$|\s*\[Op:[^\]]*\]\s*$")


def error_sentence(message: str) -> str:
    """One sentence from a TensorFlow error message: its first line that says what went
    wrong, without the node names, the op and ``tf.debugging.Assert``'s brackets."""
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    useful = [line for line in lines
              if not line.startswith(("Graph execution error", "Detected at node", "[[",
                                      "<stack"))]
    line = _OP_SUFFIX.sub("", (useful or lines or ["The model refused the request"])[0])
    if line.startswith("assertion failed: [") and line.endswith("]"):
        line = line[len("assertion failed: ["):-1]
    line = line.strip() or "The model refused the request"
    return (line if line.endswith(".") else line + ".")[:400]
