"""Tests of tftransfer.adversarial.evaluation: accuracies of a tiny model and the progress line."""

import contextlib
import io
import json
import re
from unittest import mock

import keras
import numpy as np
import tensorflow as tf

from tests.helpers import TempRootTestCase, make_image_folder
from tftransfer import cli, data
from tftransfer.adversarial import evaluation
from tftransfer.sources import saving


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def _tiny_model_and_data(count=10, batch=4):
    """A 2-class classifier on 4x4 RGB images and ``count`` images in batches of ``batch``."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4, 4, 3))
    outputs = keras.layers.Dense(2)(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, outputs)
    images = np.random.default_rng(0).random((count, 4, 4, 3), dtype=np.float32)
    labels = np.arange(count, dtype=np.int32) % 2
    return model, tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch)


class EvaluationTest(tf.test.TestCase):

    def test_accuracy_counts_every_example(self):
        model, dataset = _tiny_model_and_data()
        with contextlib.redirect_stderr(io.StringIO()):
            result = evaluation.accuracy(model, dataset, total=10)
        self.assertEqual(result["examples"], 10)
        # The share of the 10 images (3 batches, the last one partial) the model gets right.
        correct = sum(int(np.sum(np.argmax(model(x), 1) == y.numpy())) for x, y in dataset)
        self.assertAllClose(result["accuracy"], correct / 10)
        self.assertNotIn("adversarial_accuracy", result)

    def test_progress_in_a_log_shows_done_of_total_and_images_per_second(self):
        model, dataset = _tiny_model_and_data()
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr):
            evaluation.accuracy(model, dataset, total=10)
        lines = stderr.getvalue().splitlines()
        # Not a terminal: no carriage returns, one line at the end for a run this short.
        self.assertNotIn("\r", stderr.getvalue())
        self.assertLen(lines, 1)
        self.assertRegex(lines[0], r"^evaluated 10/10 images, \d+ images/s, \d+s$")

    def test_progress_on_a_terminal_is_rewritten_in_place(self):
        model, dataset = _tiny_model_and_data()
        stderr = _Terminal()
        with contextlib.redirect_stderr(stderr):
            evaluation.accuracy(model, dataset, total=10)
        text = stderr.getvalue()
        counts = re.findall(r"\revaluated (\d+)/10 images", text)
        self.assertEqual(counts, ["4", "8", "10", "10"])  # each batch, then the final line
        self.assertTrue(text.endswith("\n"))
        self.assertEqual(text.count("\n"), 1)


if __name__ == "__main__":
    tf.test.main()


class EvaluateRecordedOptionsTest(TempRootTestCase):
    """``evaluate`` on a run directory loads the dataset as that run did."""

    ROOT_PREFIX = "evaluate_options_test_"

    def test_the_runs_preprocessing_and_test_fraction_are_used(self):
        folder = make_image_folder(self.root / "images", classes=("a", "b"), per_class=10,
                                   size=(12, 24))
        model, _ = _tiny_model_and_data()
        recorded = {"resize": "squash", "crop_fraction": 1.0, "test_fraction": 0.3}
        saving.save_model_dir(model, self.root / "run", {
            "kind": "transfer", "class_names": ["a", "b"], "image_size": 4,
            "resolved_config": {"target": str(folder), "data": recorded}})
        out = io.StringIO()
        with mock.patch.object(data, "load", wraps=data.load) as load, \
                contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            code = cli.main(["evaluate", "--model", str(self.root / "run"),
                             "--dataset", str(folder)])
        self.assertEqual(code, 0)
        options = load.call_args.kwargs
        self.assertEqual((options["resize"], options["test_fraction"]), ("squash", 0.3))
        self.assertEqual(load.call_args.args[0], str(folder))
        # 30% of 20 images held out, not the default 20%.
        self.assertEqual(json.loads(out.getvalue().strip().splitlines()[-1])["examples"], 6)
