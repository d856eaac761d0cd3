"""Tests of tftransfer.serving.export and the export / serve / predict commands.

The SavedModel is compared signature by signature with the Keras model on real encoded
images; the REST (and, when the stubs are installed, gRPC) client is tested against
in-process servers that follow TF Serving's documented APIs and run the exported
signatures; ``serve`` is tested with a stand-in ``tensorflow_model_server`` script. A
real end-to-end test runs only where ``tensorflow_model_server`` is installed.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import io
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tests.bad_servers import GOOD_ROW, REPLIES, RawServer, answer, predictions, trickle
from tests.helpers import TempRootTestCase, run_cli
from tftransfer import data
from tftransfer.serving import export
from tftransfer.serving import image_formats, image_limits
from tftransfer.serving import server as model_server
from tftransfer.models import resnet
from tftransfer.sources import saving
from tftransfer.serving import client as serving_client
from tftransfer.errors import UserError

CLASS_NAMES = ("cat", "dog", "bird")
IMAGE_SIZE = 32
NAME = "tiny"
REAL_SERVER = shutil.which(model_server.SERVER_BINARY)  # looked up before any test edits PATH


# ----------------------------------------------------------------------------- helpers

def encode(pixels: np.ndarray, fmt: str, mode: str = "RGB") -> bytes:
    """``pixels`` (uint8 [h, w, 3]) encoded as ``fmt`` by PIL, after converting to ``mode``."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buffer, format=fmt)
    return buffer.getvalue()


def sample_images(seed: int = 0) -> dict[str, bytes]:
    """Encoded images of several sizes, formats and colour modes."""
    rng = np.random.default_rng(seed)

    def pixels(h, w):
        return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)

    return {"png_rgb_20x24": encode(pixels(20, 24), "PNG"),
            "png_gray_28x28": encode(pixels(28, 28), "PNG", "L"),
            "png_rgba_40x31": encode(pixels(40, 31), "PNG", "RGBA"),
            "jpeg_45x50": encode(pixels(45, 50), "JPEG"),
            "gif_palette_17x17": encode(pixels(17, 17), "GIF", "P"),
            "bmp_32x32": encode(pixels(32, 32), "BMP")}


def constant_png(width: int, height: int) -> bytes:
    """A grey PNG of any size, written row by row: a 12000x12000 one is about 440 KB and
    never exists as pixels here (a decompression bomb, for the server)."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    compressor = zlib.compressobj(9)
    row = b"\x00" + b"\x80" * (3 * width)  # filter type 0, then RGB pixels
    pixels = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels)
            + chunk(b"IEND", b""))


def peak_memory_mb() -> float:
    """This process's peak resident memory so far, in MB (Linux reports KB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def pil_pixels(encoded: bytes) -> np.ndarray:
    """PIL's decoding: uint8 [h, w, 1] for grayscale, [h, w, 3] otherwise (alpha dropped)."""
    image = Image.open(io.BytesIO(encoded))
    if image.mode == "L":
        return np.asarray(image)[..., None]
    return np.asarray(image.convert("RGB"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_run_dir(directory, data_settings: dict | None = None) -> Path:
    """A tiny fine-tuned-model directory as ``transfer`` writes it (``data_settings``: the
    ``data`` section of its resolved config, absent by default)."""
    tf.keras.utils.set_random_seed(0)
    model = resnet.build("resnet20", len(CLASS_NAMES), IMAGE_SIZE, width=0.25)
    resolved = {"target": "toy", "epochs": 3}
    if data_settings is not None:
        resolved["data"] = data_settings
    saving.save_model_dir(model, directory, {
        "kind": "transfer", "arch": "resnet20", "dataset": "toy",
        "class_names": list(CLASS_NAMES), "image_size": IMAGE_SIZE,
        "source": "cifar10-resnet20-l2-eps0.5", "source_attack": "l2", "source_eps": 0.5,
        "resolved_config": resolved, "test_accuracy": 0.625})
    return Path(directory)


# ----------------------------------------------------------------------------- fake servers

class FakeTFServing:
    """An HTTP server on 127.0.0.1 (random port, own thread) that answers like TF Serving's
    REST API (tensorflow_serving/g3doc/api_rest.md): ``GET /v1/models/NAME[/versions/N]``
    and ``POST ...:predict`` in the row format, errors as ``{"error": message}``, running
    the signatures of loaded SavedModels."""

    ROUTE = re.compile(r"^/v1/models/([^/:]+)(?:/versions/(\d+))?(?::(\w+))?$")

    def __init__(self, models: dict):
        self.models = models  # name -> {version: loaded SavedModel}
        self.requests = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                self._reply(*fake.get(self.path))

            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                fake.requests.append(json.loads(body))
                self._reply(*fake.post(self.path, json.loads(body)))

            def _reply(self, code, payload, content_type="application/json"):
                raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args):
                pass

        return Handler

    def _find(self, path):
        match = self.ROUTE.match(path)
        if not match:
            return None, None, (404, {"error": f"Malformed request: {path}"})
        name, version, verb = match.groups()
        versions = self.models.get(name, {})
        key = int(version) if version else (max(versions) if versions else None)
        if key not in versions:
            which = f"Specific({name}, {version})" if version else f"Latest({name})"
            return None, verb, (404, {"error": f"Servable not found for request: {which}"})
        return (name, key, versions), verb, None

    def get(self, path):
        found, _, error = self._find(path)
        if error:
            return error
        _, _, versions = found
        return 200, {"model_version_status": [
            {"version": str(v), "state": "AVAILABLE",
             "status": {"error_code": "OK", "error_message": ""}} for v in sorted(versions)]}

    def post(self, path, body):
        if path.endswith(":html"):
            return 200, b"<html>not tf serving</html>", "text/html"
        found, verb, error = self._find(path)
        if error:
            return error
        _, version, versions = found
        signature = versions[version].signatures[body.get("signature_name", "serving_default")]
        input_name = next(iter(signature.structured_input_signature[1]))
        values = [base64.b64decode(v["b64"]) if isinstance(v, dict) else v
                  for v in body["instances"]]
        try:
            outputs = signature(**{input_name: tf.constant(values)})
        except tf.errors.InvalidArgumentError as exc:
            return 400, {"error": exc.message}
        rows = [{key: _jsonable(value[i]) for key, value in outputs.items()}
                for i in range(len(values))]
        return 200, {"predictions": rows}


def _jsonable(tensor):
    value = tensor.numpy().tolist()
    if tensor.dtype == tf.string:
        return [v.decode() for v in value]
    return value


FAKE_SERVER_SCRIPT = """\
#!{python}
# Stand-in for tensorflow_model_server: parses its flags and answers the REST status API.
import argparse, http.server, json, os, sys
parser = argparse.ArgumentParser()
for flag in ("--port", "--rest_api_port", "--model_name", "--model_base_path"):
    parser.add_argument(flag)
args = parser.parse_args()
{exit_early}
versions = sorted(int(d) for d in os.listdir(args.model_base_path) if d.isdigit())
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ok = self.path == "/v1/models/" + args.model_name
        body = json.dumps({{"model_version_status": [{{"version": str(v), "state": "AVAILABLE"}}
                                                    for v in versions]}} if ok
                          else {{"error": "Servable not found"}}).encode()
        self.send_response(200 if ok else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
print("fake server on", args.rest_api_port, flush=True)
http.server.HTTPServer(("127.0.0.1", int(args.rest_api_port)), Handler).serve_forever()
"""


# ----------------------------------------------------------------------------- export

class ExportTest(TempRootTestCase):
    """One export of a tiny model, shared by the tests that only read it."""

    ROOT_PREFIX = "export_test_"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.run_dir = make_run_dir(cls.root / "run")
        cls.base = cls.root / "base"
        with contextlib.redirect_stderr(io.StringIO()):
            cls.result = export.export_model(cls.run_dir, NAME, base=cls.base, top_k=2)
        cls.export_dir = Path(cls.result["export_dir"])
        cls.loaded = tf.saved_model.load(str(cls.export_dir))
        cls.model = saving.load_model(cls.run_dir)

    def keras_outputs(self, images):
        """What the signature should return, from the Keras model on ``images`` (float32
        [N, S, S, 3] already preprocessed)."""
        logits = self.model(images, training=False).numpy()
        probabilities = tf.nn.softmax(logits).numpy()
        classes = np.argsort(-probabilities, axis=1)[:, :2]
        return logits, probabilities, classes

    def assert_matches_keras(self, outputs, images):
        logits, probabilities, classes = self.keras_outputs(images)
        self.assertAllClose(outputs["logits"], logits, atol=1e-5)
        self.assertAllClose(outputs["probabilities"], probabilities, atol=1e-6)
        self.assertAllEqual(outputs["classes"], classes)
        names = np.asarray(CLASS_NAMES, dtype=object)[classes]
        self.assertAllEqual(outputs["class_names"].numpy().astype(str), names.astype(str))

    def test_layout_and_signatures(self):
        self.assertEqual(self.export_dir, self.base / NAME / "1")
        self.assertTrue((self.export_dir / "saved_model.pb").exists())
        signatures = self.loaded.signatures
        self.assertCountEqual(signatures.keys(), ["serving_default", "predict_images"])
        inputs = signatures["serving_default"].structured_input_signature[1]
        self.assertEqual(list(inputs), ["image_bytes"])
        self.assertEqual(inputs["image_bytes"].dtype, tf.string)
        self.assertEqual(list(signatures["predict_images"].structured_input_signature[1]),
                         ["images"])
        for signature in signatures.values():
            self.assertCountEqual(signature.structured_outputs, export.OUTPUT_KEYS)

    def test_metadata_records_source_recipe_and_accuracy(self):
        metadata = export.read_metadata(self.export_dir)
        self.assertEqual(metadata["test_accuracy"], 0.625)
        self.assertEqual(metadata["recipe"], {"target": "toy", "epochs": 3})
        self.assertEqual(metadata["source"]["source"], "cifar10-resnet20-l2-eps0.5")
        self.assertEqual(metadata["class_names"], list(CLASS_NAMES))
        self.assertEqual(metadata["image_size"], IMAGE_SIZE)
        self.assertEqual(self.result["top_k"], 2)
        # No data section recorded: data.load's default preprocessing.
        self.assertEqual(metadata["preprocessing"], {"resize": "center_crop", "crop_fraction": 1.0,
                                                  "downsample": None})

    def test_serving_default_matches_keras_on_encoded_images(self):
        images = sample_images()
        outputs = self.loaded.signatures["serving_default"](
            image_bytes=tf.constant(list(images.values())))
        # The reference: TensorFlow's decoder + the training preprocessing + Keras.
        decoded = [tf.io.decode_image(e, channels=3, expand_animations=False)
                   for e in images.values()]
        expected = tf.stack([data.to_model_input(d, IMAGE_SIZE) for d in decoded])
        self.assert_matches_keras(outputs, expected)

    def test_lossless_formats_match_the_training_pipeline_on_pil_pixels(self):
        # For lossless formats, an independent decoder (PIL) fed through the training
        # pipeline's to_model_input (grayscale repeated to RGB there) must agree.
        images = {k: v for k, v in sample_images(1).items() if not k.startswith("jpeg")}
        outputs = self.loaded.signatures["serving_default"](
            image_bytes=tf.constant(list(images.values())))
        expected = tf.stack([data.to_model_input(pil_pixels(e), IMAGE_SIZE)
                             for e in images.values()])
        self.assert_matches_keras(outputs, expected)

    def test_predict_images_matches_keras(self):
        rng = np.random.default_rng(2)
        same_size = rng.random((3, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.float32)
        outputs = self.loaded.signatures["predict_images"](images=tf.constant(same_size))
        self.assert_matches_keras(outputs, same_size)  # no resizing at the model's size
        other_size = rng.random((2, 45, 50, 3), dtype=np.float32)
        outputs = self.loaded.signatures["predict_images"](images=tf.constant(other_size))
        # Each image as evaluation prepares it (data.to_model_input takes one image).
        expected = np.stack([data.to_model_input(image, IMAGE_SIZE) for image in other_size])
        self.assert_matches_keras(outputs, expected)

    def test_corrupt_bytes_raise_invalid_argument_naming_decode(self):
        # Bytes of no known format are refused by the signature's own check, which names
        # the image's index; a known header with broken data reaches TensorFlow's decoder,
        # whose message names the failing node and the reason ("Invalid PNG data, size 60").
        png = sample_images()["png_rgb_20x24"]
        serve = self.loaded.signatures["serving_default"]
        with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                    r"image 1 of the batch is not an image the model can "
                                    r"decode \(Unknown image file format"):
            serve(image_bytes=tf.constant([png, b"this is not an image"]))
        with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                    r"(?s)decode_image.*Invalid PNG data"):
            serve(image_bytes=tf.constant([png[:60]]))

    def test_empty_batch_returns_empty_outputs(self):
        signatures = self.loaded.signatures
        for outputs in (signatures["serving_default"](image_bytes=tf.constant([], tf.string)),
                        signatures["predict_images"](images=tf.zeros([0, 45, 50, 3])),
                        signatures["predict_images"](images=tf.zeros([0, 0, 0, 3]))):
            self.assertEqual(outputs["probabilities"].shape, (0, len(CLASS_NAMES)))
            self.assertEqual(outputs["logits"].shape, (0, len(CLASS_NAMES)))
            self.assertEqual(outputs["classes"].shape, (0, 2))
            self.assertEqual(outputs["class_names"].shape, (0, 2))

    def test_huge_png_is_refused_from_its_header_before_decoding(self):
        # 12000 x 12000 = 144 megapixels in a 440 KB file: decoding it took 2.9 GB and 10-18 s.
        bomb = constant_png(12000, 12000)
        self.assertLess(len(bomb), 1_000_000)
        serve = self.loaded.signatures["serving_default"]
        serve(image_bytes=tf.constant([sample_images()["png_rgb_20x24"]]))  # warm up
        before, start = peak_memory_mb(), time.monotonic()
        with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                    r"image 1 of the batch declares 144000000 pixels, more than "
                                    rf"the {export.MAX_IMAGE_PIXELS} this model accepts"):
            serve(image_bytes=tf.constant([sample_images()["bmp_32x32"], bomb]))
        self.assertLess(time.monotonic() - start, 5.0)
        # Decoding would need 432 MB for the uint8 pixels alone.
        self.assertLess(peak_memory_mb() - before, 300)

    def test_float_images_over_the_limit_are_refused(self):
        serve = self.loaded.signatures["predict_images"]
        limit = export.MAX_IMAGE_PIXELS
        side = int(limit ** 0.5) + 1
        with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                    rf"{side}x{side} pixels, more than the {limit}"):
            serve(images=tf.zeros([0, side, side, 3]))  # the shape alone is checked

    def test_a_thin_strip_is_refused_before_the_resize_in_both_signatures(self):
        """Within the pixel limit, a 2,500,000 x 16 image was resized on its short side to
        32 x 5,000,000 x 3 floats (over 4 GB): the long side may be at most
        MAX_ASPECT_RATIO times the short one."""
        limit = export.MAX_ASPECT_RATIO
        serve = self.loaded.signatures["serving_default"]
        at_limit = constant_png(16 * limit, 16)
        self.assertEqual(serve(image_bytes=tf.constant([at_limit]))["classes"].shape, (1, 2))
        strip = constant_png(16 * limit + 1, 16)
        with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                    rf"image 1 of the batch is {16 * limit + 1}x16 pixels, "
                                    rf"whose long side is more than {limit} times its short "
                                    rf"side.*crop it nearer to square"):
            serve(image_bytes=tf.constant([at_limit, strip]))
        images = self.loaded.signatures["predict_images"]
        for shape in ((0, 16, 2_500_000, 3), (1, 16 * limit + 1, 16, 3)):
            with self.subTest(shape=shape), self.assertRaisesRegex(
                    tf.errors.InvalidArgumentError,
                    rf"the images are {shape[2]}x{shape[1]} pixels, whose long side is more "
                    rf"than {limit} times"):
                images(images=tf.zeros(shape))  # the shape alone is checked

    def test_metadata_records_the_limits_and_the_graph_sha256(self):
        metadata = export.read_metadata(self.export_dir)
        self.assertEqual(metadata["max_image_pixels"], export.MAX_IMAGE_PIXELS)
        self.assertEqual(self.result["max_image_pixels"], export.MAX_IMAGE_PIXELS)
        self.assertEqual(metadata["max_aspect_ratio"], export.MAX_ASPECT_RATIO)
        self.assertEqual(self.result["max_aspect_ratio"], export.MAX_ASPECT_RATIO)
        self.assertIn(f"at most {export.MAX_ASPECT_RATIO} times the short side",
                      metadata["signatures"]["predict_images"]["inputs"]["images"])
        digest = hashlib.sha256((self.export_dir / "saved_model.pb").read_bytes()).hexdigest()
        self.assertEqual(metadata["saved_model_sha256"], digest)

    @pytest.mark.slow  # ~29 s on 2 cores
    def test_saved_model_cli_runs_both_signatures(self):
        png = sample_images()["png_rgb_20x24"]
        npy = self.root / "png.npy"
        np.save(npy, np.array([png], dtype=object))
        served = _saved_model_cli(self.export_dir, "serving_default",
                                  ["--inputs", f"image_bytes={npy}"])
        expected = data.to_model_input(tf.io.decode_image(png, channels=3), IMAGE_SIZE)[None]
        self.assertEqual(served["classes"][0], self.keras_outputs(expected)[2][0, 0])

        # --input_exprs takes Python literals only (no np calls in TF 2.21).
        pixels = np.round(np.random.default_rng(4).random((1, 24, 20, 3)), 3)
        served = _saved_model_cli(self.export_dir, "predict_images",
                                  ["--input_exprs", f"images={pixels.tolist()!r}"])
        expected = data.to_model_input(pixels[0].astype(np.float32), IMAGE_SIZE)[None]
        self.assertEqual(served["classes"][0], self.keras_outputs(expected)[2][0, 0])

    @pytest.mark.slow  # ~30 s on 2 cores
    def test_versions_count_up_and_are_never_overwritten(self):
        base = self.root / "versions"
        with contextlib.redirect_stderr(io.StringIO()):
            first = export.export_model(self.run_dir, "m", base=base)
            second = export.export_model(self.run_dir, "m", base=base)
            self.assertEqual((first["version"], second["version"]), (1, 2))
            with self.assertRaisesRegex(UserError,
                                        r"Version 2 already exists.*next free one \(3\)"):
                export.export_model(self.run_dir, "m", base=base, version=2)
            seventh = export.export_model(self.run_dir, "m", base=base, version=7)
        self.assertEqual(seventh["version"], 7)
        self.assertEqual(export.existing_versions(base / "m"), [1, 2, 7])
        self.assertEqual(export.version_dir(base / "m", None), base / "m" / "8")
        self.assertEqual([p.name for p in (base / "m").iterdir() if p.name.startswith(".")], [])

    def test_export_cli_and_bad_arguments(self):
        base = self.root / "cli"
        code, out, _ = run_cli(*["export", "--model", str(self.run_dir), "--name", "m",
                                "--base", str(base), "--top-k", "10"])
        self.assertEqual(code, 0)
        result = json.loads(out.strip().splitlines()[-1])
        self.assertEqual((result["version"], result["top_k"]), (1, 3))  # k <= classes
        code, _, err = run_cli(*["export", "--model", str(self.run_dir), "--name", "m",
                                "--base", str(base), "--version", "1"])
        self.assertEqual(code, 2)
        self.assertIn("already exists", err)
        self.assertNotIn("Traceback", err)
        with self.assertRaisesRegex(UserError, "not usable in a path"):
            export.export_model(self.run_dir, "bad/name", base=base)
        with self.assertRaisesRegex(UserError, "--top-k"):
            export.export_model(self.run_dir, "m", base=base, top_k=0)
        with self.assertRaisesRegex(UserError, "positive"):
            export.version_dir(base / "m", 0)


@functools.lru_cache(maxsize=None)
def _size_checker(max_pixels: int, max_gif_blocks: int):
    """A tf.function running ``check_encoded_size`` (image index 3) on one encoded image."""
    with mock.patch.object(image_limits, "MAX_GIF_BLOCKS", max_gif_blocks):
        @tf.function(input_signature=[tf.TensorSpec([], tf.string)])
        def check(encoded):
            with tf.control_dependencies([image_limits.check_encoded_size(encoded, 3, max_pixels)]):
                return tf.constant(0)

        check.get_concrete_function()  # traced now, while the patch holds
    return check


def size_refusal(encoded: bytes, max_pixels: int, max_gif_blocks: int | None = None):
    """The signature's refusal message for ``encoded``, or None when it passes."""
    max_gif_blocks = max_gif_blocks or image_limits.MAX_GIF_BLOCKS
    try:
        _size_checker(max_pixels, max_gif_blocks)(tf.constant(encoded))
    except tf.errors.InvalidArgumentError as error:
        return error.message
    return None


def gif_frames(sizes, screen=None) -> bytes:
    """An animated GIF whose frames have the given (width, height), at offset 0, with the
    logical screen overwritten to ``screen`` when given."""
    rng = np.random.default_rng(7)
    frames = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert("P")
              for w, h in sizes]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:],
                   optimize=False, disposal=1)
    encoded = buffer.getvalue()
    if screen is not None:
        encoded = encoded[:6] + struct.pack("<HH", *screen) + encoded[10:]
    return encoded


class ExportPreprocessingTest(TempRootTestCase):
    """An export prepares images with the run's recorded resize and crop, not the default."""

    ROOT_PREFIX = "export_preprocessing_test_"

    def test_signatures_use_the_runs_recorded_resize(self):
        run_dir = make_run_dir(self.root / "run", {"resize": "squash", "crop_fraction": 1.0,
                                                  "downsample": None})
        with contextlib.redirect_stderr(io.StringIO()):
            result = export.export_model(run_dir, NAME, base=self.root / "base")
        export_dir = Path(result["export_dir"])
        self.assertEqual(export.read_metadata(export_dir)["preprocessing"],
                         {"resize": "squash", "crop_fraction": 1.0,
                                                  "downsample": None})
        loaded = tf.saved_model.load(str(export_dir))
        model = saving.load_model(run_dir)
        wide = np.random.default_rng(3).random((2, 30, 60, 3), dtype=np.float32)
        squashed = np.stack([data.to_model_input(image, IMAGE_SIZE, data.Preprocessing("squash"))
                             for image in wide])
        cropped = np.stack([data.to_model_input(image, IMAGE_SIZE) for image in wide])
        self.assertGreater(np.max(np.abs(squashed - cropped)), 0.1)  # the two really differ
        outputs = loaded.signatures["predict_images"](images=tf.constant(wide))
        self.assertAllClose(outputs["logits"], model(squashed, training=False), atol=1e-5)
        png = encode((wide[0] * 255).round().astype(np.uint8), "PNG")
        served = loaded.signatures["serving_default"](image_bytes=tf.constant([png]))
        decoded = tf.io.decode_image(png, channels=3, expand_animations=False)
        expected = data.to_model_input(decoded, IMAGE_SIZE, data.Preprocessing("squash"))[None]
        self.assertAllClose(served["logits"], model(expected, training=False), atol=1e-5)


class ImageSizeCheckTest(tf.test.TestCase):
    """serving_default's header reads: the pixel count of every format it decodes, and the
    refusals (with the image's index) before anything is decoded."""

    def test_declared_pixels_match_the_decoded_size(self):
        rng = np.random.default_rng(3)
        pixels = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
        top_down_bmp = bytearray(encode(pixels, "BMP"))
        top_down_bmp[22:26] = struct.pack("<i", -37)  # a negative height: rows top-down
        images = {"png": encode(pixels, "PNG"), "jpeg": encode(pixels, "JPEG"),
                  "bmp": encode(pixels, "BMP"), "bmp top-down": bytes(top_down_bmp),
                  "gif": encode(pixels, "GIF", "P"), "webp lossy": encode(pixels, "WEBP"),
                  "webp lossless": _webp(pixels, lossless=True),
                  "webp extended": _webp(pixels, exif=b"Exif\x00\x00")}
        for name, encoded in images.items():
            declared, walked = image_limits.declared_pixels(tf.constant(encoded))
            decoded = tf.io.decode_image(encoded, channels=3, expand_animations=False)
            self.assertEqual(int(declared), 37 * 53, name)
            self.assertEqual(decoded.shape[:2], (37, 53), name)
            self.assertTrue(bool(walked))

    def test_limit_is_inclusive(self):
        png = encode(np.zeros((20, 30, 3), np.uint8), "PNG")
        self.assertIsNone(size_refusal(png, 600))
        self.assertRegex(size_refusal(png, 599),
                         r"image 3 of the batch declares 600 pixels, more than the 599")

    def test_every_format_is_checked_before_decoding(self):
        big = np.zeros((40, 50, 3), np.uint8)  # 2000 pixels against a limit of 1000
        for encoded in (encode(big, "PNG"), encode(big, "JPEG"), encode(big, "BMP"),
                        encode(big, "GIF", "P"), encode(big, "WEBP"),
                        _webp(big, lossless=True)):
            self.assertRegex(size_refusal(encoded, 1000), r"declares 2000 pixels")

    def test_gif_frames_count_beyond_the_logical_screen(self):
        # TensorFlow sizes a GIF's canvas by its frames, not by the 1x1 screen it declares.
        encoded = gif_frames([(40, 50)], screen=(1, 1))
        self.assertEqual(tf.io.decode_image(encoded, expand_animations=False).shape[:2],
                         (50, 40))
        self.assertRegex(size_refusal(encoded, 1999), r"declares 2000 pixels")
        # giflib keeps every frame: their areas add up.
        self.assertRegex(size_refusal(gif_frames([(30, 30)] * 3), 2000), r"declares 2700")

    def test_a_gif_too_long_to_walk_is_refused(self):
        encoded = gif_frames([(60, 60)])
        self.assertIsNone(size_refusal(encoded, 10_000, max_gif_blocks=1000))
        self.assertRegex(size_refusal(encoded, 10_000, max_gif_blocks=3),
                         r"image 3 of the batch is a GIF with more than 3 data blocks")

    def test_unknown_formats_and_jpeg_xl_are_refused_with_the_index(self):
        self.assertRegex(size_refusal(b"hello, not an image", 10**6),
                         r"image 3 of the batch is not an image the model can decode "
                         r"\(Unknown image file format")
        for jxl in (b"\xff\x0a" + bytes(30), b"\x00\x00\x00\x0cJXL \r\n\x87\n" + bytes(30)):
            self.assertRegex(size_refusal(jxl, 10**6), r"image 3 of the batch is JPEG XL, "
                                                       r"which is refused")

    def test_truncated_headers_reach_the_decoder(self):
        # Too short to hold a size: nothing is refused here; the decoder names the problem.
        png = sample_images()["png_rgb_20x24"]
        self.assertIsNone(size_refusal(png[:10], 1))

    def test_the_client_knows_the_formats_the_graph_decodes_without_tensorflow(self):
        pixels = np.zeros((20, 30, 3), np.uint8)
        images = {"PNG": encode(pixels, "PNG"), "JPEG": encode(pixels, "JPEG"),
                  "BMP": encode(pixels, "BMP"), "GIF": encode(pixels, "GIF", "P"),
                  "WebP": encode(pixels, "WEBP")}
        for name, encoded in images.items():
            self.assertEqual(image_formats.image_format(encoded), name)
            self.assertIsNone(size_refusal(encoded, 600), name)
        jxl = b"\xff\x0a" + bytes(30)
        self.assertEqual(image_formats.image_format(jxl), "JPEG XL")
        self.assertRegex(size_refusal(jxl, 10**6), "JPEG XL")
        self.assertIsNone(image_formats.image_format(b"hello, not an image"))
        # The client (and the formats and limits it reads) start without TensorFlow.
        code = ("import sys; import tftransfer.serving.client; "
                "print('tensorflow' in sys.modules)")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              check=True, cwd=Path(__file__).resolve().parents[1])
        self.assertEqual(done.stdout.strip(), "False")


def _webp(pixels: np.ndarray, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="WEBP", **options)
    return buffer.getvalue()


def _saved_model_cli(export_dir, signature, input_args) -> dict:
    """Runs ``saved_model_cli run`` and parses its ``Result for output key K:`` blocks."""
    command = [shutil.which("saved_model_cli") or "saved_model_cli", "run", "--dir",
               str(export_dir), "--tag_set", "serve", "--signature_def", signature, *input_args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert done.returncode == 0, done.stderr[-2000:]
    blocks = re.findall(r"Result for output key (\w+):\n(.*?)(?=\nResult for|\Z)", done.stdout,
                        re.S)
    parsed = {key: value for key, value in blocks}
    assert set(parsed) == set(export.OUTPUT_KEYS), done.stdout
    parsed["classes"] = [int(v) for v in re.findall(r"-?\d+", parsed["classes"])]
    return parsed


# ----------------------------------------------------------------------------- client and serve

class ServingClientTest(TempRootTestCase):
    """The REST/gRPC client and ``serve`` against servers that follow TF Serving's APIs."""

    ROOT_PREFIX = "serving_test_"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        run_dir = make_run_dir(cls.root / "run")
        cls.base = cls.root / "base"
        with contextlib.redirect_stderr(io.StringIO()):
            export.export_model(run_dir, NAME, base=cls.base, top_k=2)
        cls.loaded = tf.saved_model.load(str(cls.base / NAME / "1"))
        cls.images = sample_images(3)
        cls.files = []
        for key, encoded in list(cls.images.items())[:3]:
            path = cls.root / f"{key}.{key.split('_')[0]}"
            path.write_bytes(encoded)
            cls.files.append(str(path))

    def fake(self):
        return FakeTFServing({NAME: {1: self.loaded}})

    def expected(self, encoded):
        outputs = self.loaded.signatures["serving_default"](image_bytes=tf.constant(encoded))
        return {key: value.numpy() for key, value in outputs.items()}

    def test_rest_predict_matches_the_signature(self):
        encoded = list(self.images.values())
        with self.fake() as server:
            predictions = serving_client.predict_rest(server.url, NAME, encoded)
            versioned = serving_client.predict_rest(server.url.replace("http://", ""), NAME, encoded[:1],
                                            version=1)
        request = server.requests[0]
        self.assertEqual(request["signature_name"], "serving_default")
        self.assertEqual(base64.b64decode(request["instances"][0]["b64"]), encoded[0])
        expected = self.expected(encoded)
        self.assertAllClose([p["probabilities"] for p in predictions], expected["probabilities"])
        self.assertAllEqual([p["classes"] for p in predictions], expected["classes"])
        self.assertEqual(versioned[0]["classes"], predictions[0]["classes"])
        top = serving_client.top_k(predictions[0], 1)[0]
        self.assertEqual(top["name"], CLASS_NAMES[top["class"]])

    def test_predict_cli_prints_table_and_json(self):
        with self.fake() as server:
            code, out, err = run_cli(*["predict", "--server", server.url, "--model", NAME,
                                      "--top-k", "5", *self.files])
        self.assertEqual(code, 0, err)
        result = json.loads(out.strip().splitlines()[-1])
        self.assertEqual([row["image"] for row in result["predictions"]], self.files)
        expected = self.expected([Path(f).read_bytes() for f in self.files])
        for row, classes in zip(result["predictions"], expected["classes"]):
            self.assertEqual([entry["class"] for entry in row["top_k"]], classes.tolist())
        self.assertIn("rank  class  probability  name", err)
        self.assertIn("returns its top 2 classes", err)

    def test_server_down_is_a_clear_error(self):
        url = f"http://127.0.0.1:{free_port()}"  # nothing listens there any more
        with self.assertRaisesRegex(UserError, "Cannot reach TF Serving.*connection refused"):
            serving_client.predict_rest(url, NAME, [self.images["bmp_32x32"]])
        code, _, err = run_cli(*["predict", "--server", url, "--model", NAME, self.files[0]])
        self.assertEqual(code, 2)
        self.assertNotIn("Traceback", err)

    def test_model_or_version_not_loaded_is_a_clear_error(self):
        with self.fake() as server:
            with self.assertRaisesRegex(UserError, r"'nope' is not loaded.*404.*Latest\(nope\)"):
                serving_client.predict_rest(server.url, "nope", [self.images["bmp_32x32"]])
            with self.assertRaisesRegex(UserError, r"version 9 is not loaded"):
                serving_client.predict_rest(server.url, NAME, [self.images["bmp_32x32"]], version=9)
            with self.assertRaisesRegex(UserError, "not loaded"):
                serving_client.model_status(server.url, "nope")

    def test_undecodable_image_is_a_clear_error(self):
        with self.fake() as server:
            with self.assertRaisesRegex(UserError, "could not decode an image.*Invalid PNG data"):
                serving_client.predict_rest(server.url, NAME, [self.images["png_rgb_20x24"][:60]])
        text = self.root / "notes.png"
        text.write_text("not an image")
        with self.assertRaisesRegex(UserError, "notes.png.*not an image the model can decode"):
            serving_client.read_images([str(text)])
        with self.assertRaisesRegex(UserError, "Cannot read image"):
            serving_client.read_images([str(self.root / "missing.png")])

    def test_predict_names_the_file_the_server_refuses(self):
        good = self.files[0]
        broken = self.root / "broken.png"  # a PNG header, then nothing: the decoder fails
        broken.write_bytes(self.images["png_rgb_20x24"][:60])
        bomb = self.root / "bomb.png"  # refused from its header, with its index
        bomb.write_bytes(constant_png(12000, 12000))
        with self.fake() as server:
            code, _, err = run_cli(*["predict", "--server", server.url, "--model", NAME, good,
                                    str(broken), good])
            self.assertEqual(code, 2)
            self.assertIn(f"refused {str(broken)!r} (image 1 of the 3 sent", err)
            self.assertIn("Invalid PNG data", err)
            self.assertNotIn("Traceback", err)
            with self.assertRaisesRegex(UserError, rf"refused '{re.escape(str(bomb))}' \(image 2 "
                                                   r"of the 3 sent.*declares 144000000 pixels"):
                serving_client.predict_files([good, good, bomb], server.url, NAME)
            requests = len(server.requests)
            serving_client.predict_files([good], server.url, NAME)  # and a good request still works
            self.assertEqual(len(server.requests), requests + 1)

    def test_answer_that_is_not_tf_serving(self):
        with self.fake() as server:
            with self.assertRaisesRegex(UserError, "did not answer with JSON"):
                serving_client._http_json(serving_client.rest_url(server.url, NAME, None, "html"), {}, NAME,
                                  None, 5)

    def test_wait_until_available_reads_the_status_api(self):
        with self.fake() as server:
            status = model_server.wait_until_available(server.url, NAME, timeout=5)
            self.assertEqual(status["model_version_status"][0]["state"], "AVAILABLE")
            with self.assertRaisesRegex(UserError, "was not AVAILABLE.*after 0.2s"):
                model_server.wait_until_available(server.url, "nope", timeout=0.2, interval=0.05)

    def test_grpc_client(self):
        try:
            from tensorflow_serving.apis import prediction_service_pb2_grpc  # noqa: F401
        except ImportError:
            self.skipTest("tensorflow-serving-api (gRPC stubs) is not installed")
        port, stop = _start_grpc_server({NAME: self.loaded})
        try:
            encoded = list(self.images.values())[:2]
            predictions = serving_client.predict_grpc(f"127.0.0.1:{port}", NAME, encoded, timeout=30)
            expected = self.expected(encoded)
            self.assertAllClose([p["probabilities"] for p in predictions],
                                expected["probabilities"])
            self.assertEqual(predictions[0]["class_names"],
                             [CLASS_NAMES[c] for c in expected["classes"][0]])
            with self.assertRaisesRegex(UserError, "'nope' is not loaded"):
                serving_client.predict_grpc(f"127.0.0.1:{port}", "nope", encoded, timeout=30)
            with self.assertRaisesRegex(UserError, "could not decode an image"):
                serving_client.predict_grpc(f"127.0.0.1:{port}", NAME, [b"garbage"], timeout=30)
        finally:
            stop()
        with self.assertRaisesRegex(UserError, "Cannot reach TF Serving's gRPC API"):
            serving_client.predict_grpc(f"127.0.0.1:{free_port()}", NAME, encoded, timeout=10)

    def test_grpc_without_stubs_says_how_to_install(self):
        with mock.patch.dict(sys.modules, {"tensorflow_serving.apis": None}):
            with self.assertRaisesRegex(UserError, "pip install --no-deps 'tensorflow-serving-api"):
                serving_client.predict_grpc("127.0.0.1:1", NAME, [b"x"])

    def test_serve_without_binary_says_how_to_run_it(self):
        empty_bin = self.root / "empty_bin"
        empty_bin.mkdir(exist_ok=True)
        with mock.patch.dict(os.environ, {"PATH": str(empty_bin)}):
            code, _, err = run_cli(*["serve", "--base", str(self.base / NAME), "--backend",
                                     "tfserving"])
        self.assertEqual(code, 2)
        base = (self.base / NAME).resolve()
        self.assertIn(f"docker run -p 8501:8501 -p 8500:8500 --mount type=bind,source={base},"
                      f"target=/models/{NAME} -e MODEL_NAME={NAME} -t tensorflow/serving", err)
        self.assertIn("apt repository", err)
        self.assertNotIn("Traceback", err)

    def test_serve_rejects_a_folder_without_versions(self):
        with self.assertRaisesRegex(UserError, "no version folder"):
            model_server.start_model_server(self.root, NAME)

    def test_serve_starts_the_binary_and_waits_until_available(self):
        with self.fake_binary():
            rest, grpc_port = free_port(), free_port()
            server = model_server.start_model_server(self.base / NAME, NAME, rest, grpc_port,
                                               timeout=60)
            try:
                self.assertEqual(server.available_versions(), [1])
                self.assertIn(f"--rest_api_port={rest}", server.process.args)
                with self.assertRaisesRegex(UserError, f"Port {rest} is already in use"):
                    model_server.start_model_server(self.base / NAME, NAME, rest, free_port())
            finally:
                server.stop()
            code, out, err = run_cli(*["serve", "--base", str(self.base / NAME), "--detach",
                                      "--rest-port", str(free_port()),
                                      "--grpc-port", str(free_port())])
            self.assertEqual(code, 0, err)
            result = json.loads(out.strip().splitlines()[-1])
            os.kill(result["pid"], 15)  # the stand-in server this test started
            self.assertEqual(result["available_versions"], [1])

    def test_serve_reports_a_server_that_exits(self):
        with self.fake_binary('print("bad flag --foo", file=sys.stderr); sys.exit(3)'):
            with self.assertRaisesRegex(UserError, "exited with code 3.*bad flag --foo"):
                model_server.start_model_server(self.base / NAME, NAME, free_port(), free_port())

    @contextlib.contextmanager
    def fake_binary(self, exit_early: str = ""):
        """Puts a stand-in ``tensorflow_model_server`` first on PATH."""
        folder = Path(tempfile.mkdtemp(dir=self.root))
        script = folder / model_server.SERVER_BINARY
        script.write_text(FAKE_SERVER_SCRIPT.format(python=sys.executable, exit_early=exit_early))
        script.chmod(0o755)
        with mock.patch.dict(os.environ, {"PATH": f"{folder}{os.pathsep}{os.environ['PATH']}"}):
            yield script

    def test_end_to_end_with_tensorflow_model_server(self):
        if REAL_SERVER is None:
            self.skipTest(f"{model_server.SERVER_BINARY} is not installed here (neither apt nor pip "
                          f"provide it on this machine); the REST client is tested against "
                          f"FakeTFServing instead")
        rest, grpc_port = free_port(), free_port()
        server = model_server.start_model_server(self.base / NAME, NAME, rest, grpc_port, timeout=120)
        try:
            encoded = [self.images["png_rgb_20x24"], self.images["jpeg_45x50"]]
            predictions = serving_client.predict_rest(f"http://127.0.0.1:{rest}", NAME, encoded)
            expected = self.expected(encoded)
            self.assertAllClose([p["probabilities"] for p in predictions],
                                expected["probabilities"], atol=1e-5)
        finally:
            server.stop()


# ----------------------------------------------------------------------------- bad servers

class MisbehavingServerTest(tf.test.TestCase):
    """``predict`` against servers that break HTTP or TF Serving's answers: one sentence
    each (exit 2), within ``--timeout`` in all, never more than the answer cap read."""

    CASES = (
        ("closed without an answer", REPLIES["close"],
         r"closed the connection without answering"),
        ("not HTTP", REPLIES["not_http"], r"did not answer in HTTP \(BadStatusLine"),
        ("short body", REPLIES["short_body"],
         r"closed the connection after 14 of the 1000 bytes it announced"),
        ("deeply nested JSON", REPLIES["nested"], r"JSON nested too deeply to read"),
        ("predictions not a list", answer(b'{"predictions": "cat"}'),
         r"without one prediction per image \(1 sent\)"),
        ("two predictions for one image", answer(predictions(GOOD_ROW, GOOD_ROW)),
         r"without one prediction per image \(1 sent\)"),
        ("probabilities as text", answer(predictions({**GOOD_ROW, "probabilities": "high"})),
         r"image 0 whose 'probabilities' is not a list of numbers from 0.0 to 1.0: \"high\""),
        ("class out of range", REPLIES["bad_predictions"],
         r"'classes' is not a list of whole numbers from 0 to 2: \[0, 7\]"),
        ("names short", answer(predictions({**GOOD_ROW, "class_names": ["a"]})),
         r"'class_names' is not a list of 2 names"),
        ("announced 300 MB", REPLIES["huge"],
         r"announced 300,000,000 bytes, more than an answer to this request may have"),
        ("8 MB without a length", REPLIES["flood"], r"sent more than 3,048,576 bytes"),
    )

    def setUp(self):
        super().setUp()
        self.image = Path(self.get_temp_dir()) / "a.png"
        self.image.write_bytes(sample_images()["png_rgb_20x24"])

    def test_every_bad_answer_is_one_sentence(self):
        for name, reply, message in self.CASES:
            with self.subTest(name), RawServer(reply) as server:
                with self.assertRaisesRegex(UserError, message):
                    serving_client.predict_files([self.image], server.url, NAME, timeout=10)
        with RawServer(self.CASES[1][1]) as server:  # and the command: exit 2, one line
            code, _, err = run_cli("predict", "--server", server.url, "--model", NAME,
                                   str(self.image))
        self.assertEqual(code, 2)
        self.assertRegex(err, r"^error: .*did not answer in HTTP.*\n$")
        self.assertEqual(err.count("\n"), 1, err)

    def test_the_timeout_is_a_deadline_for_the_whole_answer(self):
        # One byte every 0.1 s never lets one read wait 1 s: a per-read timeout waited 6 s.
        with RawServer(trickle) as server:
            began = time.monotonic()
            with self.assertRaisesRegex(UserError, r"did not answer within 1s \(--timeout, "
                                                   r"for the whole answer\)"):
                serving_client.predict_files([self.image], server.url, NAME, timeout=1)
            self.assertLess(time.monotonic() - began, 3)

    def test_the_timeout_must_be_finite_and_positive(self):
        for value in ("nan", "inf", "0", "-1"):
            with self.subTest(value):
                code, _, err = run_cli("predict", "--server", "http://127.0.0.1:9", "--model",
                                       NAME, "--timeout", value, str(self.image))
                self.assertEqual(code, 2)
                self.assertIn(f"--timeout must be a finite number of seconds above 0, got "
                              f"{float(value)!r}", err)


def _start_grpc_server(models: dict):
    """A gRPC PredictionService on 127.0.0.1 running loaded SavedModels (NOT_FOUND for
    unknown models, INVALID_ARGUMENT for TensorFlow's input errors, as TF Serving)."""
    from concurrent import futures

    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    class Service(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):  # noqa: N802 (gRPC's naming)
            loaded = models.get(request.model_spec.name)
            if loaded is None:
                context.abort(grpc.StatusCode.NOT_FOUND,
                              f"Servable not found for request: Latest({request.model_spec.name})")
            signature = loaded.signatures[request.model_spec.signature_name or "serving_default"]
            inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
            try:
                outputs = signature(**{k: tf.constant(v) for k, v in inputs.items()})
            except tf.errors.InvalidArgumentError as exc:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, exc.message)
            response = predict_pb2.PredictResponse()
            for key, value in outputs.items():
                response.outputs[key].CopyFrom(tf.make_tensor_proto(value.numpy()))
            return response

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Service(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return port, lambda: server.stop(None)


if __name__ == "__main__":
    tf.test.main()
