"""SavedModels for TensorFlow Serving: export, start a model server, and a REST/gRPC client.

``export_model`` writes ``BASE/NAME/VERSION/`` (integer versions, the layout TF Serving
watches) with two signatures that share the training-time preprocessing
(``data.to_model_input``):

* ``serving_default``: ``image_bytes`` (tf.string [N], JPEG/PNG/GIF/BMP/WebP bytes)
  -> decoded to RGB in the graph, resized and scaled exactly as in training;
* ``predict_images``: ``images`` (float32 [N, H, W, 3] RGB in [0, 1]) -> resized;

both returning ``probabilities`` [N, C], ``classes`` (top-k indices) [N, k],
``class_names`` (top-k names) [N, k] and ``logits`` [N, C]. The class names are a
constant of the graph, so they travel with the model. ``assets.extra/tftransfer.json``
records where the model came from (source, recipe, test accuracy).

The client half (``predict_rest``, ``predict_grpc``, ``model_status``) uses only the
standard library for REST and imports TensorFlow lazily, so ``predict`` starts fast.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tftransfer.errors import UserError

SERVING_SIGNATURE = "serving_default"
IMAGES_SIGNATURE = "predict_images"
BYTES_INPUT = "image_bytes"     # the "_bytes" suffix is TF Serving's convention for binary input
IMAGES_INPUT = "images"
OUTPUT_KEYS = ("probabilities", "classes", "class_names", "logits")
METADATA_FILE = Path("assets.extra") / "tftransfer.json"
DEFAULT_TOP_K = 5
SERVER_BINARY = "tensorflow_model_server"
# Leading bytes of the formats tf.io.decode_image reads (WebP: RIFF....WEBP).
_MAGIC = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF87a", "GIF"),
          (b"GIF89a", "GIF"), (b"BM", "BMP"), (b"\xff\x0a", "JPEG XL"),
          (b"\x00\x00\x00\x0cJXL ", "JPEG XL"))


# ============================================================================= export

def export_model(model_ref, name: str, base="saved_models", version: int | None = None,
                 top_k: int = DEFAULT_TOP_K) -> dict:
    """Exports a model as ``base/name/version/`` for TensorFlow Serving.

    Args:
      model_ref: a run or model directory, a ``.keras`` file or a registered source name.
      name: the served model's name (TF Serving's ``MODEL_NAME``).
      base: the folder holding one sub-folder per served model.
      version: integer version; None takes the next free one (1 for a new model).
      top_k: how many top classes ``classes`` / ``class_names`` return.

    Returns:
      A result row: the export path, version, signatures, class count and metadata.

    Raises:
      UserError: for a bad name, version or top-k, or when the version already exists.
    """
    from tftransfer import saving

    _check_name(name)
    if top_k < 1:
        raise UserError(f"--top-k must be at least 1, got {top_k}.")
    model = saving.load_model(model_ref)
    config = saving.read_config(model_ref)
    class_names = _class_names(config, int(model.outputs[0].shape[-1]))
    image_size = int(config.get("image_size") or model.inputs[0].shape[1])
    top_k = min(top_k, len(class_names))
    target = version_dir(Path(base) / name, version)
    metadata = export_metadata(model_ref, config, class_names, image_size, top_k)
    _write_version(build_archive(model, class_names, image_size, top_k), target, metadata)
    print(f"exported {model_ref} -> {target} (signatures {SERVING_SIGNATURE}, "
          f"{IMAGES_SIGNATURE}; {len(class_names)} classes, {image_size}px, top-{top_k})",
          file=sys.stderr)
    return {"export_dir": str(target), "name": name, "version": int(target.name),
            "signatures": [SERVING_SIGNATURE, IMAGES_SIGNATURE],
            "num_classes": len(class_names), "image_size": image_size, "top_k": top_k,
            "test_accuracy": metadata["test_accuracy"],
            "metadata": str(target / METADATA_FILE)}


def _check_name(name: str) -> None:
    # The name becomes a folder and a URL path segment (/v1/models/NAME).
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
    if not name or name.startswith(".") or not set(name) <= allowed:
        raise UserError(f"Model name {name!r} is not usable in a path and a URL; use letters, "
                        f"digits, '.', '_' and '-' (not starting with '.').")


def _class_names(config: dict, num_classes: int) -> list[str]:
    names = config.get("class_names")
    if not names:
        return [str(i) for i in range(num_classes)]  # e.g. converted checkpoints
    if len(names) != num_classes:
        raise UserError(f"The model has {num_classes} outputs but its config.json lists "
                        f"{len(names)} class names; the model directory is inconsistent.")
    return [str(n) for n in names]


def existing_versions(model_dir) -> list[int]:
    """The integer version folders under ``model_dir`` (what TF Serving would load)."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def version_dir(model_dir, version: int | None) -> Path:
    """``model_dir/<version>``: the next free version when None; never an existing one.

    Raises:
      UserError: if ``version`` is not positive or already exists.
    """
    model_dir = Path(model_dir)
    versions = existing_versions(model_dir)
    next_free = (versions[-1] + 1) if versions else 1
    if version is None:
        return model_dir / str(next_free)
    if version < 1:
        raise UserError(f"--version must be a positive integer, got {version}.")
    target = model_dir / str(version)
    if target.exists():
        raise UserError(f"Version {version} already exists at {target}; exporting never "
                        f"overwrites a version. Omit --version to write the next free one "
                        f"({next_free}), or delete that folder first.")
    return target


def export_metadata(model_ref, config: dict, class_names, image_size: int, top_k: int) -> dict:
    """What ``assets.extra/tftransfer.json`` records: source, recipe, accuracy, signatures."""
    import keras
    import tensorflow as tf

    from tftransfer import runs, saving

    source = {k: v for k, v in config.items() if k.startswith("source")}
    return {
        "model": str(saving.resolve_model_path(model_ref)),
        "kind": config.get("kind"), "arch": config.get("arch"), "dataset": config.get("dataset"),
        "source": source, "recipe": config.get("resolved_config"),
        "test_accuracy": config.get("test_accuracy"),
        "model_git_commit": config.get("git_commit"),
        "class_names": list(class_names), "image_size": image_size, "top_k": top_k,
        "signatures": {
            SERVING_SIGNATURE: {"inputs": {BYTES_INPUT: "string [N]: JPEG/PNG/GIF/BMP bytes"},
                                "outputs": list(OUTPUT_KEYS)},
            IMAGES_SIGNATURE: {"inputs": {IMAGES_INPUT: "float32 [N, H, W, 3] RGB in [0, 1]"},
                               "outputs": list(OUTPUT_KEYS)}},
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "export_git_commit": runs.git_commit(),
        "tensorflow_version": tf.__version__, "keras_version": keras.__version__,
    }


def build_archive(model, class_names, image_size: int, top_k: int):
    """A ``keras.export.ExportArchive`` tracking ``model`` with both signatures.

    ExportArchive (rather than a hand-made ``tf.Module``) tracks every Keras variable,
    which the SavedModel loader of TF Serving and ``saved_model_cli`` needs.
    """
    import keras
    import tensorflow as tf

    from tftransfer import data

    def outputs(images):
        logits = tf.cast(model(images, training=False), tf.float32)
        probabilities = tf.nn.softmax(logits, axis=-1)
        top = tf.math.top_k(probabilities, k=top_k)
        names = tf.constant(list(class_names), dtype=tf.string)
        return {"probabilities": probabilities, "classes": top.indices,
                "class_names": tf.gather(names, top.indices), "logits": logits}

    def decode_one(encoded):
        # channels=3 turns grayscale and RGBA into RGB as training did; animations -> frame 0.
        image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
        return data.to_model_input(image, image_size)

    def serve_encoded(image_bytes):
        images = tf.map_fn(decode_one, image_bytes, fn_output_signature=tf.TensorSpec(
            (image_size, image_size, 3), tf.float32))
        return outputs(images)

    def serve_images(images):
        return outputs(data.to_model_input(images, image_size))

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(SERVING_SIGNATURE, serve_encoded,
                         [tf.TensorSpec((None,), tf.string, name=BYTES_INPUT)])
    archive.add_endpoint(IMAGES_SIGNATURE, serve_images,
                         [tf.TensorSpec((None, None, None, 3), tf.float32, name=IMAGES_INPUT)])
    return archive


def _write_version(archive, target: Path, metadata: dict) -> None:
    """Writes into a hidden temporary folder, then renames it to ``target``: TF Serving
    ignores non-integer folders, so it never loads a half-written version."""
    from tftransfer import runs

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".tmp-{target.name}-{os.getpid()}"
    try:
        archive.write_out(str(tmp), verbose=False)
        runs.write_json(tmp / METADATA_FILE, metadata)
        os.chmod(tmp / METADATA_FILE, 0o644)  # readable by a server running as another user
        try:
            os.rename(tmp, target)
        except OSError as error:  # another export took this version meanwhile
            raise UserError(f"Could not create {target} ({error.strerror}); exporting never "
                            f"overwrites a version.") from error
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def read_metadata(export_dir) -> dict:
    """The ``tftransfer.json`` of an exported version ({} when absent)."""
    path = Path(export_dir) / METADATA_FILE
    return json.loads(path.read_text()) if path.exists() else {}


# ============================================================================= serve

def check_base(base) -> tuple[Path, list[int]]:
    """The absolute model base path and its versions; UserError unless TF Serving could load it."""
    base = Path(base).resolve()
    if not base.is_dir():
        raise UserError(f"--base {str(base)!r} is not a folder; pass the folder that holds the "
                        f"integer version folders (e.g. saved_models/NAME).")
    versions = [v for v in existing_versions(base) if (base / str(v) / "saved_model.pb").exists()]
    if not versions:
        raise UserError(f"--base {str(base)!r} has no version folder (1/, 2/, ...) with a "
                        f"saved_model.pb; export one with `python main.py export`.")
    return base, versions


def server_command(base: Path, name: str, rest_port: int, grpc_port: int) -> list[str]:
    """The ``tensorflow_model_server`` command line for ``base``."""
    return [SERVER_BINARY, f"--port={grpc_port}", f"--rest_api_port={rest_port}",
            f"--model_name={name}", f"--model_base_path={base}"]


def install_instructions(base: Path, name: str, rest_port: int, grpc_port: int) -> str:
    """How to serve ``base`` without a local ``tensorflow_model_server``."""
    return (f"{SERVER_BINARY} is not installed (not on PATH). Serve the model with Docker:\n"
            f"  docker run -p {rest_port}:8501 -p {grpc_port}:8500 "
            f"--mount type=bind,source={base},target=/models/{name} "
            f"-e MODEL_NAME={name} -t tensorflow/serving\n"
            f"or install tensorflow-model-server from TF Serving's apt repository "
            f"(https://www.tensorflow.org/tfx/serving/setup) and run:\n"
            f"  {' '.join(server_command(base, name, rest_port, grpc_port))}")


@dataclass
class ModelServer:
    """A running ``tensorflow_model_server`` (see ``start_model_server``)."""

    process: subprocess.Popen
    status: dict
    log_path: Path

    def available_versions(self) -> list[int]:
        """The versions the server reported AVAILABLE."""
        return [int(v["version"]) for v in self.status.get("model_version_status", [])
                if v.get("state") == "AVAILABLE"]

    def stop(self, grace: float = 10.0) -> int:
        """Terminates the server (kills it after ``grace`` seconds); returns its exit code."""
        _stop(self.process, grace)
        return self.process.returncode


def start_model_server(base, name: str, rest_port: int = 8501, grpc_port: int = 8500,
                       timeout: float = 120.0, log_path=None) -> ModelServer:
    """Starts ``tensorflow_model_server`` on ``base`` and waits until ``name`` is AVAILABLE.

    Args:
      base: the model's folder of integer versions.
      name: the model name clients use in ``/v1/models/NAME``.
      rest_port, grpc_port: ports of the REST and gRPC APIs.
      timeout: seconds to wait for the model to load.
      log_path: where the server's output goes (default: a temporary file).

    Returns:
      The running server, the model status it reported and its log file.

    Raises:
      UserError: when the binary is missing (with instructions), a port is taken, the
        server exits, or the model does not become available in time.
    """
    base, _ = check_base(base)
    _check_name(name)
    if shutil.which(SERVER_BINARY) is None:
        raise UserError(install_instructions(base, name, rest_port, grpc_port))
    for port, flag in ((rest_port, "--rest-port"), (grpc_port, "--grpc-port")):
        if _port_in_use(port):
            raise UserError(f"Port {port} is already in use on this machine; choose another "
                            f"{flag}.")
    log_path = Path(log_path) if log_path else _temp_log(name)
    with open(log_path, "w") as log:
        process = subprocess.Popen(server_command(base, name, rest_port, grpc_port),
                                   stdout=log, stderr=subprocess.STDOUT)
    try:
        status = wait_until_available(f"http://127.0.0.1:{rest_port}", name, timeout, process,
                                      log_path)
    except BaseException:
        _stop(process)
        raise
    return ModelServer(process, status, log_path)


def _temp_log(name: str) -> Path:
    import tempfile

    handle, path = tempfile.mkstemp(prefix=f"tf_serving_{name}_", suffix=".log")
    os.close(handle)
    return Path(path)


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _stop(process: subprocess.Popen, grace: float = 10.0) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_until_available(server: str, name: str, timeout: float, process=None,
                         log_path=None, interval: float = 0.5) -> dict:
    """Polls ``GET /v1/models/NAME`` until a version is AVAILABLE.

    Returns:
      The status JSON of the model.

    Raises:
      UserError: when ``process`` exits first or ``timeout`` seconds pass.
    """
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise UserError(f"{SERVER_BINARY} exited with code {process.returncode} before "
                            f"{name!r} was available: {_log_tail(log_path)}")
        try:
            status = model_status(server, name)
            if any(v.get("state") == "AVAILABLE" for v in status.get("model_version_status", [])):
                return status
            last = json.dumps(status)
        except UserError as error:
            last = str(error)
        time.sleep(interval)
    raise UserError(f"Model {name!r} was not AVAILABLE at {server} after {timeout:g}s "
                    f"(last status: {last}); server log: {_log_tail(log_path)}")


def _log_tail(log_path, lines: int = 5) -> str:
    if not log_path or not Path(log_path).exists():
        return "(no log)"
    tail = Path(log_path).read_text(errors="replace").strip().splitlines()[-lines:]
    return " | ".join(tail) or "(empty log)"


# ============================================================================= client

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


def image_format(encoded: bytes) -> str | None:
    """The image format named by the first bytes of ``encoded`` (None if unknown)."""
    if encoded[:4] == b"RIFF" and encoded[8:12] == b"WEBP":
        return "WebP"
    return next((fmt for magic, fmt in _MAGIC if encoded.startswith(magic)), None)


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
    return _http_json(rest_url(server, name, version), None, name, version, timeout)


def predict_rest(server: str, name: str, images: list[bytes], version: int | None = None,
                 signature: str = SERVING_SIGNATURE, timeout: float = 60.0) -> list[dict]:
    """Classifies encoded images through TF Serving's REST predict API.

    The request uses the row ("instances") format; with one named input each instance
    is the input's value, and binary strings are sent as ``{"b64": ...}``.

    Returns:
      One dict of outputs per image (``probabilities``, ``classes``, ``class_names``, ...).

    Raises:
      UserError: server down, model not loaded, an image it cannot decode, or an answer
        that is not TF Serving's.
    """
    body = {"signature_name": signature,
            "instances": [{"b64": base64.b64encode(image).decode("ascii")} for image in images]}
    answer = _http_json(rest_url(server, name, version, "predict"), body, name, version, timeout)
    predictions = answer.get("predictions")
    if not isinstance(predictions, list) or len(predictions) != len(images):
        raise UserError(f"{server} answered without one prediction per image: "
                        f"{json.dumps(answer)[:200]}")
    return [_check_outputs(p, signature) for p in predictions]


def _check_outputs(prediction, signature: str) -> dict:
    if not isinstance(prediction, dict) or not {"probabilities", "classes",
                                                "class_names"} <= set(prediction):
        raise UserError(f"The {signature!r} signature does not return probabilities, classes "
                        f"and class_names; serve a model exported by `python main.py export`.")
    return prediction


def _http_json(url: str, body, name: str, version, timeout: float) -> dict:
    """GET (``body`` None) or POST JSON to TF Serving; its failures become UserErrors."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
    except urllib.error.HTTPError as error:
        raise _http_error(error, url, name, version) from None
    except urllib.error.URLError as error:
        raise UserError(f"Cannot reach TF Serving at {url} ({_reason(error.reason)}); is the "
                        f"server running? Start it with `python main.py serve --base "
                        f"saved_models/{name}`.") from None
    except (TimeoutError, socket.timeout):
        raise UserError(f"TF Serving at {url} did not answer within {timeout:g}s.") from None
    return _parse_json(raw, url)


def _reason(reason) -> str:
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    return str(getattr(reason, "strerror", None) or reason)


def _parse_json(raw: bytes, url: str) -> dict:
    try:
        answer = json.loads(raw)
    except ValueError:
        raise UserError(f"{url} did not answer with JSON, so it is probably not TF Serving's "
                        f"REST API: {raw[:120]!r}") from None
    if not isinstance(answer, dict):
        raise UserError(f"{url} answered {raw[:120]!r}, not a JSON object.")
    return answer


def _http_error(error: urllib.error.HTTPError, url: str, name: str, version) -> UserError:
    """A UserError from TF Serving's error answer (``{"error": message}``)."""
    raw = error.read()
    try:
        message = json.loads(raw).get("error", raw.decode(errors="replace"))
    except (ValueError, AttributeError):
        message = raw.decode(errors="replace")[:300]
    which = f"{name!r}" + (f" version {version}" if version is not None else "")
    if error.code == 404:
        return UserError(f"Model {which} is not loaded on the server ({url}: HTTP 404: "
                         f"{message}); check --model/--version against the served models.")
    return _request_error(message, f"{url}: HTTP {error.code}")


# Substrings of TensorFlow's image-decoding errors (the op is DecodeImage / decode_image).
_DECODE_ERRORS = ("decode", "image file format", "invalid png", "invalid jpeg", "jpeg::")


def _request_error(message: str, where: str) -> UserError:
    if any(part in message.lower() for part in _DECODE_ERRORS):
        return UserError(f"The server could not decode an image ({where}): {_first_line(message)}")
    return UserError(f"TF Serving rejected the request ({where}): {_first_line(message)}")


def _first_line(message: str) -> str:
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    # TF errors start with "Graph execution error:"; the useful line comes later.
    useful = [line for line in lines if not line.startswith(("Graph execution error",
                                                             "Detected at node", "<stack"))]
    return (useful or lines or [""])[0][:300]


def predict_grpc(server: str, name: str, images: list[bytes], version: int | None = None,
                 signature: str = SERVING_SIGNATURE, timeout: float = 60.0) -> list[dict]:
    """Classifies encoded images through TF Serving's gRPC ``PredictionService.Predict``.

    Needs the optional ``tensorflow-serving-api`` stubs (see ``_grpc_modules``).

    Returns:
      One dict of outputs per image, as ``predict_rest``.
    """
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
    return [_check_outputs(_row(outputs, i), signature) for i in range(len(images))]


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
