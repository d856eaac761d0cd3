"""The REST/gRPC client of a TF Serving model exported by ``export``.

The REST half (``predict_rest``, ``model_status``) uses only the standard library
(``serving.http_exchange``: a deadline for the whole request, a cap on the answer's size)
and the gRPC half imports TensorFlow lazily, so ``predict`` starts fast. An answer is
checked before it is used: predictions of the wrong type or number, or nested too deeply
to parse, are one sentence each, as are the transport's failures.
"""

from __future__ import annotations

import base64
import json
import re
import urllib.parse
from pathlib import Path

from tftransfer.errors import UserError
from tftransfer.serving.export import BYTES_INPUT
from tftransfer.serving.http_exchange import Unreachable, check_timeout, exchange
from tftransfer.sources.export_format import SERVING_SIGNATURE
from tftransfer.serving.image_formats import image_format
from tftransfer.serving.predictions import check_prediction

# The largest answer read: a status answer is a few hundred bytes; a prediction row holds a
# probability and a logit per class (about 25 bytes each as JSON), so 2 MB per image covers
# 40,000 classes. A larger answer is not TF Serving's for this request.
MAX_STATUS_BYTES = 1 << 20
MAX_ANSWER_BYTES_PER_IMAGE = 2_000_000


def read_images(paths) -> list[bytes]:
    """Reads image files for ``predict``; UserError for a missing or non-image file."""
    images = []
    for path in paths:
        try:
            encoded = Path(path).read_bytes()
        except OSError as error:
            raise UserError(f"Cannot read image {str(path)!r}: {error.strerror}.") from error
        if image_format(encoded) is None:
            raise UserError(f"{str(path)!r} is not an image the model can decode (expected "
                            f"JPEG, PNG, GIF, BMP, WebP or JPEG XL bytes).")
        images.append(encoded)
    return images

def rest_url(server: str, name: str, version: int | None = None, verb: str = "") -> str:
    """``SERVER/v1/models/NAME[/versions/N][:verb]``; ``server`` may omit ``http://``."""
    server = server.rstrip("/")
    if "://" not in server:
        server = f"http://{server}"
    path = f"/v1/models/{urllib.parse.quote(name)}"
    if version is not None:
        path += f"/versions/{int(version)}"
    return server + path + (f":{verb}" if verb else "")


def model_status(server: str, name: str, version: int | None = None,
                 timeout: float = 10.0) -> dict:
    """TF Serving's model status (``GET /v1/models/NAME[/versions/N]``)."""
    return _http_json(rest_url(server, name, version), None, name, version, timeout,
                      MAX_STATUS_BYTES)


def predict_rest(server: str, name: str, images: list[bytes], version: int | None = None,
                 signature: str = SERVING_SIGNATURE, timeout: float = 60.0) -> list[dict]:
    """Classifies encoded images through TF Serving's REST predict API.

    The request uses the row ("instances") format; with one named input each instance
    is the input's value, and binary strings are sent as ``{"b64": ...}``.

    Args:
      timeout: seconds for the whole request, the answer read to its end included.

    Returns:
      One dict of outputs per image (``probabilities``, ``classes``, ``class_names``, ...).

    Raises:
      UserError: server down, model not loaded, an image it cannot decode, an answer
        that is not TF Serving's, too slow or too large, or predictions that are not one
        per image of the exported outputs.
    """
    body = {"signature_name": signature,
            "instances": [{"b64": base64.b64encode(image).decode("ascii")} for image in images]}
    url = rest_url(server, name, version, "predict")
    answer = _http_json(url, body, name, version, timeout,
                        MAX_STATUS_BYTES + MAX_ANSWER_BYTES_PER_IMAGE * len(images))
    predictions = answer.get("predictions")
    if not isinstance(predictions, list) or len(predictions) != len(images):
        raise UserError(f"{url} answered without one prediction per image "
                        f"({len(images)} sent): {json.dumps(answer)[:200]}")
    return [check_prediction(p, signature, url, i) for i, p in enumerate(predictions)]


def _http_json(url: str, body, name: str, version, timeout: float,
               max_bytes: int = MAX_STATUS_BYTES) -> dict:
    """GET (``body`` None) or POST JSON to TF Serving, within ``timeout`` seconds in all and
    an answer of at most ``max_bytes``; its failures become UserErrors."""
    data = None if body is None else json.dumps(body).encode()
    try:
        answer = exchange(url, data, timeout, max_bytes)
    except Unreachable as error:
        raise UserError(f"{error} Start it with `python main.py serve --base "
                        f"saved_models/{name}`.") from None
    if not 200 <= answer.status < 300:
        raise _http_error(answer.status, answer.body, url, name, version)
    return _parse_json(answer.body, url)


def _parse_json(raw: bytes, url: str) -> dict:
    try:
        answer = json.loads(raw)
    except RecursionError:
        raise UserError(f"{url} answered with JSON nested too deeply to read, which TF "
                        f"Serving's answers never are.") from None
    except ValueError:
        raise UserError(f"{url} did not answer with JSON, so it is probably not TF Serving's "
                        f"REST API: {raw[:120]!r}") from None
    if not isinstance(answer, dict):
        raise UserError(f"{url} answered {raw[:120]!r}, not a JSON object.")
    return answer


def _http_error(status: int, raw: bytes, url: str, name: str, version) -> UserError:
    """A UserError from TF Serving's error answer (``{"error": message}``)."""
    try:
        message = str(json.loads(raw).get("error", raw.decode(errors="replace")))
    except (ValueError, AttributeError, RecursionError):
        message = raw.decode(errors="replace")[:300]
    which = f"{name!r}" + (f" version {version}" if version is not None else "")
    if status == 404:
        return UserError(f"Model {which} is not loaded on the server ({url}: HTTP 404: "
                         f"{message[:300]}); check --model/--version against the served "
                         f"models.")
    return _request_error(message, f"{url}: HTTP {status}")


# Substrings of TensorFlow's image-decoding errors (the op is DecodeImage / decode_image)
# and of serving_default's own size and format checks ("image I of the batch ...").
_DECODE_ERRORS = ("decode", "image file format", "invalid png", "invalid jpeg", "jpeg::",
                  "of the batch")
_BATCH_INDEX = re.compile(r"\bimage (\d+) of the batch\b")


class ImageRefused(UserError):
    """The server refused an image of the request (undecodable, too large, unknown format).

    Attributes:
      reason: the server's explanation, one line.
      index: the image's position in the batch when the server named it, else None.
    """

    def __init__(self, message: str, reason: str, index: int | None = None):
        super().__init__(message)
        self.reason = reason
        self.index = index


def _request_error(message: str, where: str) -> UserError:
    reason = _first_line(message)
    if any(part in message.lower() for part in _DECODE_ERRORS):
        match = _BATCH_INDEX.search(reason)
        return ImageRefused(f"The server could not decode an image ({where}): {reason}", reason,
                            int(match.group(1)) if match else None)
    return UserError(f"TF Serving rejected the request ({where}): {reason}")


def _first_line(message: str) -> str:
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    # TF errors start with "Graph execution error:"; the useful line comes later.
    useful = [line for line in lines if not line.startswith(("Graph execution error",
                                                             "Detected at node", "<stack"))]
    line = (useful or lines or [""])[0]
    if line.startswith("assertion failed: [") and line.endswith("]"):  # tf.debugging.Assert's
        line = line[len("assertion failed: ["):-1]
    return line[:300]


def predict_files(paths, server: str, name: str, version: int | None = None,
                  timeout: float = 60.0, grpc: bool = False) -> list[dict]:
    """Reads image files and classifies them in one request, naming the file refused.

    TF Serving fails a whole request for one bad image. ``serving_default``'s own checks
    name the image's index in the batch; for a decoder error, which does not, each image
    is sent alone until the one that fails is found (only after a failure).

    Returns:
      One dict of outputs per file, as ``predict_rest``.

    Raises:
      UserError: naming the file and its index for a refused image; as the clients do
        otherwise.
    """
    paths = [str(path) for path in paths]
    timeout = check_timeout(timeout)  # before reading any image
    images = read_images(paths)
    client = predict_grpc if grpc else predict_rest
    try:
        return client(server, name, images, version=version, timeout=timeout)
    except ImageRefused as error:
        index, reason = error.index, error.reason
        if index is None or not 0 <= index < len(paths):
            index, reason = _first_refused(client, server, name, images, version, timeout,
                                           error)
        raise UserError(f"The server refused {paths[index]!r} (image {index} of the "
                        f"{len(paths)} sent, counting from 0): {reason}") from None


def _first_refused(client, server, name, images, version, timeout, error: ImageRefused):
    """``(index, reason)`` of the first image the server refuses on its own; re-raises
    ``error`` when each image passes alone (the batch as a whole was the problem)."""
    if len(images) == 1:
        return 0, error.reason
    for index, image in enumerate(images):
        try:
            client(server, name, [image], version=version, timeout=timeout)
        except ImageRefused as alone:
            return index, alone.reason
    raise error


def predict_grpc(server: str, name: str, images: list[bytes], version: int | None = None,
                 signature: str = SERVING_SIGNATURE, timeout: float = 60.0) -> list[dict]:
    """Classifies encoded images through TF Serving's gRPC ``PredictionService.Predict``.

    Needs the optional ``tensorflow-serving-api`` stubs (see ``_grpc_modules``).

    Returns:
      One dict of outputs per image, as ``predict_rest``.
    """
    timeout = check_timeout(timeout)
    grpc, predict_pb2, service_pb2_grpc, tf = _grpc_modules()
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = int(version)
    request.inputs[BYTES_INPUT].CopyFrom(tf.make_tensor_proto(images, dtype=tf.string,
                                                               shape=[len(images)]))
    target = server.split("://", 1)[-1].rstrip("/")
    with grpc.insecure_channel(target) as channel:
        stub = service_pb2_grpc.PredictionServiceStub(channel)
        try:
            response = stub.Predict(request, timeout=timeout)
        except grpc.RpcError as error:
            raise _grpc_error(error, grpc, target, name, version) from None
    outputs = {key: tf.make_ndarray(proto) for key, proto in response.outputs.items()}
    short = [key for key, values in outputs.items()
             if values.ndim == 0 or len(values) != len(images)]
    if short:
        raise UserError(f"{target} answered {short[0]!r} without one row per image "
                        f"({len(images)} sent); it is not what a model exported by `python "
                        f"main.py export` returns.")
    return [check_prediction(_row(outputs, i), signature, target, i)
            for i in range(len(images))]


def _grpc_modules():
    try:
        import grpc
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
    except ImportError as error:
        raise UserError(f"--grpc needs the TF Serving gRPC stubs ({error.name} is missing): "
                        f"pip install grpcio && pip install --no-deps 'tensorflow-serving-api"
                        f"==2.21.*' (without --no-deps it pulls in the full tensorflow "
                        f"package), or use the REST API (drop --grpc).") from None
    import tensorflow as tf

    return grpc, predict_pb2, prediction_service_pb2_grpc, tf


def _row(outputs: dict, index: int) -> dict:
    row = {}
    for key, values in outputs.items():
        value = values[index].tolist()
        if key == "class_names":
            value = [v.decode() if isinstance(v, bytes) else v for v in value]
        row[key] = value
    return row


def _grpc_error(error, grpc, target: str, name: str, version) -> UserError:
    code, details = error.code(), error.details() or ""
    which = f"{name!r}" + (f" version {version}" if version is not None else "")
    if code == grpc.StatusCode.UNAVAILABLE:
        return UserError(f"Cannot reach TF Serving's gRPC API at {target} ({details}); is the "
                         f"server running with --grpc-port?")
    if code == grpc.StatusCode.NOT_FOUND:
        return UserError(f"Model {which} is not loaded on the server ({target}: {details}).")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return UserError(f"TF Serving at {target} did not answer in time.")
    return _request_error(details, f"{target}: gRPC {code.name}")


def top_k(prediction: dict, k: int | None = None) -> list[dict]:
    """The first ``k`` (default: all exported) classes of one prediction, best first."""
    classes, names = prediction["classes"], prediction["class_names"]
    probabilities = prediction["probabilities"]
    count = len(classes) if k is None else min(k, len(classes))
    return [{"class": int(c), "name": str(n), "probability": float(probabilities[int(c)])}
            for c, n in zip(classes[:count], names[:count])]
