"""KServe's model server on an export (``serve --backend kserve``), and TF Serving's REST
format (``serving.rest_api``).

The server tests start the real server process (``python -m tftransfer.serving.kserve_model``
from a Python with the ``[serve]`` extra) on 127.0.0.1 and skip, saying why, when none is
installed: kserve 0.21 pins protobuf<7 and pandas<3, so it lives in its own environment
(``.venv-serve``, docs/cli.md) where the test environment has newer ones.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import tensorflow as tf

from tests.export_test import (CLASS_NAMES, IMAGE_SIZE, NAME, constant_png, free_port,
                               make_run_dir, sample_images)
from tests.helpers import TempRootTestCase, run_cli
from tftransfer import data
from tftransfer.errors import UserError
from tftransfer.serving import client as serving_client
from tftransfer.serving import export, kserve_server, rest_api
from tftransfer.sources import saving


def kserve_python() -> str | None:
    """A Python with the [serve] extra, or None."""
    try:
        return kserve_server.find_python()
    except UserError:
        return None


def post(url: str, body) -> tuple[int, dict]:
    """POSTs ``body`` as JSON; the status and the JSON answer, errors included."""
    request = urllib.request.Request(url, json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    return _answer(request)


def get(url: str) -> tuple[int, dict]:
    return _answer(urllib.request.Request(url))


def _answer(request) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def b64(encoded: bytes) -> dict:
    return {"b64": base64.b64encode(encoded).decode("ascii")}


class RestFormatTest(tf.test.TestCase):
    """Reading TF Serving's request formats and writing its answers, without a server."""

    def test_row_and_columnar_requests(self):
        row = rest_api.read_request({"instances": [b64(b"ab"), {"image_bytes": b64(b"c")}]})
        self.assertEqual((row.signature_name, row.columnar), ("serving_default", False))
        self.assertEqual(rest_api.input_value(row, "image_bytes"), [b"ab", b"c"])
        columnar = rest_api.read_request({"signature_name": "predict_images",
                                          "inputs": {"images": [[[[0.5, 0, 1]]]]}})
        self.assertTrue(columnar.columnar)
        self.assertEqual(rest_api.input_value(columnar, "images"), [[[[0.5, 0, 1]]]])

    def test_bad_requests_are_one_sentence(self):
        cases = [([], "must be a JSON object"),
                 ({"instances": [], "inputs": []}, "exactly one of the keys"),
                 ({}, "exactly one of the keys"),
                 ({"instances": "x"}, "'instances' must be a list"),
                 ({"instances": [], "signature_name": 3}, "must be a string")]
        for body, message in cases:
            with self.subTest(message), self.assertRaisesRegex(rest_api.RequestError, message):
                rest_api.read_request(body)
        request = rest_api.read_request({"instances": [{"b64": "not base64!"}]})
        with self.assertRaisesRegex(rest_api.RequestError, "not valid base64"):
            rest_api.input_value(request, "image_bytes")
        request = rest_api.read_request({"instances": [{"pixels": [1]}]})
        with self.assertRaisesRegex(rest_api.RequestError, "one input, 'image_bytes'"):
            rest_api.input_value(request, "image_bytes")

    def test_answers_in_both_formats(self):
        outputs = {"classes": np.array([[1, 0], [0, 1]]),
                   "class_names": np.array([[b"dog", b"cat"], [b"cat", b"dog"]], dtype=object),
                   "thumb_bytes": np.array([b"\x00", b"\xff"], dtype=object)}
        rows = rest_api.answer(outputs, columnar=False)["predictions"]
        self.assertEqual(rows[0], {"classes": [1, 0], "class_names": ["dog", "cat"],
                                   "thumb_bytes": {"b64": "AA=="}})
        columns = rest_api.answer(outputs, columnar=True)["outputs"]
        self.assertEqual(columns["class_names"][1], ["cat", "dog"])

    def test_tensorflow_errors_become_one_sentence(self):
        message = ("Graph execution error:\n\nassertion failed: [image 0 of the batch declares 9 "
                   "pixels, more than the 4 this model accepts]\n\t [[{{node Assert}}]] "
                   "[Op:__inference_signature_wrapper_123]")
        self.assertEqual(rest_api.error_sentence(message),
                         "image 0 of the batch declares 9 pixels, more than the 4 this model "
                         "accepts.")


class KServeServerTest(TempRootTestCase):
    """One real KServe server process on a tiny export, started by ``serve --detach``."""

    ROOT_PREFIX = "kserve_test_"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.python = kserve_python()
        if cls.python is None:
            return
        run_dir = make_run_dir(cls.root / "run")
        cls.base = cls.root / "base"
        with contextlib.redirect_stderr(io.StringIO()):
            export.export_model(run_dir, NAME, base=cls.base, top_k=2)
        cls.loaded = tf.saved_model.load(str(cls.base / NAME / "1"))
        cls.model = saving.load_model(run_dir)
        cls.port = free_port()
        code, out, err = run_cli("serve", "--base", str(cls.base / NAME), "--backend",
                                 "kserve", "--python", cls.python, "--rest-port",
                                 str(cls.port), "--timeout", "300", "--detach")
        if code != 0:
            raise AssertionError(f"serve --backend kserve failed: {err}")
        cls.served = json.loads(out.strip().splitlines()[-1])
        cls.url = f"http://127.0.0.1:{cls.port}"

    @classmethod
    def tearDownClass(cls):
        if getattr(cls, "served", None):
            os.kill(cls.served["pid"], 15)  # the server this class started
        super().tearDownClass()

    def setUp(self):
        super().setUp()
        if self.python is None:
            self.skipTest("KServe's model server is not installed: no Python with the [serve] "
                          "extra (kserve 0.21 pins protobuf<7 and pandas<3, so install it in "
                          "its own environment: python3 -m venv .venv-serve && "
                          ".venv-serve/bin/pip install -e \".[cpu,serve]\")")

    def expected(self, encoded):
        outputs = self.loaded.signatures["serving_default"](image_bytes=tf.constant(encoded))
        return {key: value.numpy() for key, value in outputs.items()}

    def assert_server_up(self):
        status, answer = get(f"{self.url}/v1/models/{NAME}")
        self.assertEqual((status, answer), (200, {"name": NAME, "ready": True}))

    def test_serve_reports_the_backend_and_version(self):
        self.assertEqual(self.served["backend"], "kserve")
        self.assertEqual(self.served["available_versions"], [1])
        self.assertIsNone(self.served["grpc"])

    def test_png_and_jpeg_bytes_match_the_model(self):
        encoded = [self.images["png_rgb_20x24"], self.images["jpeg_45x50"]]
        predictions = serving_client.predict_rest(self.url, NAME, encoded)
        expected = self.expected(encoded)
        self.assertAllClose([p["logits"] for p in predictions], expected["logits"], atol=1e-5)
        self.assertAllClose([p["probabilities"] for p in predictions],
                            expected["probabilities"], atol=1e-5)
        self.assertAllEqual([p["classes"] for p in predictions], expected["classes"])
        self.assertEqual(predictions[0]["class_names"],
                         [CLASS_NAMES[c] for c in expected["classes"][0]])

    def test_float_arrays_match_the_keras_model(self):
        rng = np.random.default_rng(0)
        images = rng.random((2, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.float32)
        prepared = tf.stack([data.to_model_input(tf.constant(image), IMAGE_SIZE)
                             for image in images])
        logits = self.model(prepared, training=False).numpy()
        status, answer = post(f"{self.url}/v1/models/{NAME}:predict",
                              {"signature_name": "predict_images",
                               "instances": images.tolist()})
        self.assertEqual(status, 200, answer)
        self.assertAllClose([p["logits"] for p in answer["predictions"]], logits, atol=1e-5)
        status, answer = post(f"{self.url}/v1/models/{NAME}/versions/1:predict",
                              {"signature_name": "predict_images",
                               "inputs": {"images": images.tolist()}})
        self.assertEqual(status, 200, answer)
        self.assertAllClose(answer["outputs"]["logits"], logits, atol=1e-5)

    def test_predict_command_works_unchanged(self):
        files = []
        for key in ("png_rgb_20x24", "jpeg_45x50"):
            path = self.root / f"{key}.{key.split('_')[0]}"
            path.write_bytes(self.images[key])
            files.append(str(path))
        code, out, err = run_cli("predict", "--server", self.url, "--model", NAME,
                                 "--version", "1", *files)
        self.assertEqual(code, 0, err)
        rows = json.loads(out.strip().splitlines()[-1])["predictions"]
        expected = self.expected([Path(f).read_bytes() for f in files])
        for row, classes in zip(rows, expected["classes"]):
            self.assertEqual([entry["class"] for entry in row["top_k"]], classes.tolist())

    def test_a_bomb_and_a_non_image_get_one_sentence_and_the_server_stays_up(self):
        cases = [(constant_png(12000, 12000), r"^image 0 of the batch declares 144000000 "
                                              r"pixels, more than the \d+ this model accepts"),
                 (b"just some text", r"^image 0 of the batch is not an image the model can "
                                     r"decode")]
        for encoded, message in cases:
            with self.subTest(message):
                status, answer = post(f"{self.url}/v1/models/{NAME}:predict",
                                      {"instances": [b64(encoded)]})
                self.assertEqual(status, 400)
                self.assertEqual(list(answer), ["error"])
                self.assertRegex(answer["error"], message)
                self.assertNotIn("\n", answer["error"])
                self.assertEqual(answer["error"].count(". "), 0, answer["error"])
                self.assert_server_up()
        bomb = self.root / "bomb.png"
        bomb.write_bytes(cases[0][0])
        with self.assertRaisesRegex(UserError, r"refused .*bomb.png.*declares 144000000"):
            serving_client.predict_files([bomb], self.url, NAME)
        self.assertTrue(serving_client.predict_rest(self.url, NAME,
                                                    [self.images["bmp_32x32"]]))

    def test_missing_model_or_version_gets_tf_servings_error_shape(self):
        for url in (f"{self.url}/v1/models/nope:predict",
                    f"{self.url}/v1/models/{NAME}/versions/9:predict",
                    f"{self.url}/v1/models/nope/versions/1:predict"):
            with self.subTest(url):
                status, answer = post(url, {"instances": [b64(self.images["bmp_32x32"])]})
                self.assertEqual(status, 404)
                self.assertEqual(list(answer), ["error"])
                self.assertIn("nope" if "nope" in url else "Specific(tiny, 9)", answer["error"])
        self.assertEqual(get(f"{self.url}/v1/models/{NAME}/versions/9")[0], 404)
        status, answer = get(f"{self.url}/v1/models/{NAME}/versions/1")
        self.assertEqual(answer["model_version_status"][0]["state"], "AVAILABLE")
        with self.assertRaisesRegex(UserError, r"'nope' is not loaded.*404"):
            serving_client.predict_rest(self.url, "nope", [self.images["bmp_32x32"]])
        with self.assertRaisesRegex(UserError, r"version 9 is not loaded"):
            serving_client.predict_rest(self.url, NAME, [self.images["bmp_32x32"]], version=9)

    def test_bad_requests_are_400_with_one_sentence(self):
        for body, message in (({"instances": "x"}, "instances"),
                              ({"signature_name": "nope", "instances": []}, "not found"),
                              ({"signature_name": "predict_images", "instances": [[1, [2]]]},
                               "takes float32 values")):
            with self.subTest(message):
                status, answer = post(f"{self.url}/v1/models/{NAME}:predict", body)
                self.assertEqual(status, 400, answer)
                self.assertIn(message, answer["error"])

    images = sample_images(3)


if __name__ == "__main__":
    tf.test.main()
