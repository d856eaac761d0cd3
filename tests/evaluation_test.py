"""Tests of tftransfer.evaluation: accuracies of a tiny model and the progress line."""

import contextlib
import io
import re

import keras
import numpy as np
import tensorflow as tf

from tftransfer import evaluation


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
