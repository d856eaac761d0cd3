"""Tests of tftransfer.interpret.saliency on tiny Keras models (no datasets)."""

import re
import tempfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from tftransfer import cli
from tftransfer.commands import saliency as saliency_command
from tftransfer.config import SaliencyConfig
from tftransfer.interpret import saliency
from tftransfer.errors import UserError
from tftransfer.report.plot_parts import save_figure


def tiny_model(size=8, classes=3, seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((size, size, 3))
    hidden = keras.layers.Conv2D(4, 3, activation="relu", padding="same")(inputs)
    pooled = keras.layers.GlobalAveragePooling2D()(hidden)
    return keras.Model(inputs, keras.layers.Dense(classes, name="fc")(pooled))


def constant_model(size=8, classes=3):
    """Logits that do not depend on the input: a zero kernel and a non-zero bias."""
    inputs = keras.Input((size, size, 3))
    flat = keras.layers.Flatten()(inputs)
    layer = keras.layers.Dense(classes, kernel_initializer="zeros",
                               bias_initializer=keras.initializers.Constant(0.5))
    return keras.Model(inputs, layer(flat))


def linear_model(size=4, classes=3, seed=0):
    """Softmax regression on the flattened pixels: its loss gradient has a closed form."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((size, size, 3))
    dense = keras.layers.Dense(classes, bias_initializer="random_normal")
    return keras.Model(inputs, dense(keras.layers.Flatten()(inputs))), dense


def images(n=5, size=8, seed=0):
    return np.random.default_rng(seed).random((n, size, size, 3)).astype(np.float32)


class GradientTest(tf.test.TestCase):

    def test_shapes_and_batching(self):
        model, x = tiny_model(), images(5)
        labels = np.array([0, 1, 2, 0, 1])
        batched = saliency.loss_gradients(model, x, labels, batch_size=2)
        self.assertEqual(batched.shape, x.shape)
        # Batching must not mix images: one call per image gives the same gradients.
        single = np.concatenate([saliency.loss_gradients(model, x[i:i + 1], labels[i:i + 1])
                                 for i in range(5)])
        self.assertAllClose(batched, single, atol=1e-6)
        self.assertGreater(np.abs(batched).max(), 0.0)

    def test_a_linear_model_gives_its_analytic_input_gradient(self):
        # logits z = W^T x + b, so d CE(z, y) / dx = W (softmax(z) - onehot(y)).
        model, dense = linear_model()
        x, labels = images(4, size=4), np.array([0, 2, 1, 2])
        kernel, bias = (w.numpy().astype(np.float64) for w in dense.weights)
        flat = x.reshape(len(x), -1).astype(np.float64)
        logits = flat @ kernel + bias
        softmax = np.exp(logits - logits.max(1, keepdims=True))
        softmax /= softmax.sum(1, keepdims=True)
        expected = (softmax - np.eye(3)[labels]) @ kernel.T
        gradients = saliency.loss_gradients(model, x, labels, batch_size=3)
        self.assertAllClose(gradients.reshape(len(x), -1), expected, atol=1e-5)
        self.assertGreater(np.abs(expected).max(), 1e-2)

    def test_constant_model_has_zero_gradient(self):
        gradients = saliency.loss_gradients(constant_model(), images(3), np.array([0, 1, 2]))
        self.assertAllEqual(gradients, np.zeros_like(gradients))

    def test_smoothgrad_without_noise_is_vanilla(self):
        model, x, labels = tiny_model(), images(3), np.array([2, 0, 1])
        vanilla = saliency.loss_gradients(model, x, labels)
        smooth = saliency.smoothgrad(model, x, labels, samples=4, noise=0.0, batch_size=5)
        self.assertAllClose(smooth, vanilla, atol=1e-6)

    def test_smoothgrad_is_seeded(self):
        model, x, labels = tiny_model(), images(2), np.array([0, 1])
        first = saliency.smoothgrad(model, x, labels, samples=3, noise=0.2, seed=7)
        again = saliency.smoothgrad(model, x, labels, samples=3, noise=0.2, seed=7)
        self.assertAllEqual(first, again)

    def test_bad_smoothgrad_settings(self):
        with self.assertRaises(UserError):
            saliency.smoothgrad(tiny_model(), images(1), np.array([0]), samples=0)


class RenderTest(tf.test.TestCase):

    def test_render_modes(self):
        gradients = np.random.default_rng(1).normal(size=(2, 8, 8, 3))
        maps = saliency.render(gradients, "abs")
        self.assertEqual(maps.shape, (2, 8, 8))
        self.assertAllInRange(maps, 0.0, 1.0)
        as_image = saliency.render(gradients, "image")
        self.assertEqual(as_image.shape, (2, 8, 8, 3))
        self.assertAllInRange(as_image, 0.0, 1.0)
        zero = saliency.render(np.zeros((1, 4, 4, 3)), "image")
        self.assertAllClose(zero, np.full((1, 4, 4, 3), 0.5))  # zero gradient -> grey
        with self.assertRaises(UserError):
            saliency.render(gradients, "heat")

    def test_labels_follow_the_model_classes(self):
        classes = ("cat", "dog", "fish")
        self.assertTrue(saliency.labels_match({"class_names": list(classes)}, 3, classes))
        self.assertFalse(saliency.labels_match({"class_names": ["0", "1", "2"]}, 3, classes))
        self.assertTrue(saliency.labels_match({}, 3, classes))
        self.assertFalse(saliency.labels_match({}, 10, classes))

    def test_column_uses_predictions_for_foreign_classes(self):
        model, x = tiny_model(classes=4), images(3)
        column = saliency.column_for(model, {}, "m", x, np.array([0, 1, 2]), ("a", "b", "c"),
                                     smooth=False, samples=1, noise=0.0, seed=0)
        self.assertTrue(column.uses_predictions)
        self.assertAllEqual(column.labels, saliency.predictions(model, x))
        self.assertIn("predicted", column.title)

    def test_figure_is_written(self):
        models = [tiny_model(seed=0), tiny_model(seed=1, classes=5)]
        x, labels = images(3), np.array([0, 1, 2])
        columns = [saliency.column_for(m, {}, f"model {k}", x, labels, ("a", "b", "c"),
                                       smooth=False, samples=1, noise=0.0, seed=0)
                   for k, m in enumerate(models)]
        figure = saliency.saliency_figure(x, ["a", "b", "c"], columns)
        axes = np.array(figure.axes).reshape(3, 3)  # rows x (image + 2 models)
        for i in range(3):
            self.assertAllClose(axes[i, 0].images[0].get_array(), x[i])
            self.assertEqual(axes[i, 0].get_ylabel(), "abc"[i])
            for j, column in enumerate(columns):
                # Each cell shows that model's rendered map of that image, not another's.
                shown = axes[i, j + 1].images[0].get_array()
                self.assertAllClose(shown, saliency.render(column.gradients, "abs")[i])
        self.assertIn("predicted", axes[0, 2].get_title())  # 5 outputs: foreign classes
        with tempfile.TemporaryDirectory() as tmp:
            path = save_figure(figure, Path(tmp) / "saliency.png")
            self.assertTrue(path.read_bytes().startswith(b"\x89PNG"))

    def test_titles_describe_training(self):
        self.assertEqual(saliency.model_title("runs/nat/", {"attack": {"attack": "none"}}),
                         "nat\n(natural)")
        self.assertEqual(saliency.model_title("r", {"source_attack": "l2", "source_eps": 3.0}),
                         "r\n(l2 eps 3)")


class SharedLoadOptionsTest(tf.test.TestCase):
    """saliency loads its one dataset with the options every model's run recorded alike."""

    @staticmethod
    def run_config(**data):
        return {"resolved_config": {"target": "dtd", "data": data}}

    def test_options_the_runs_agree_on_are_kept_and_the_others_dropped(self):
        configs = [self.run_config(resize="squash", image_key="img", test_fraction=0.3),
                   self.run_config(resize="squash", image_key="other", test_fraction=0.3)]
        options = saliency.shared_load_options(configs, "dtd")
        self.assertEqual((options["resize"], options["test_fraction"]), ("squash", 0.3))
        self.assertNotIn("image_key", options)

    def test_a_model_without_a_recorded_data_section_keeps_the_defaults(self):
        configs = [self.run_config(resize="squash"), {"kind": "converted"}]
        self.assertEqual(saliency.shared_load_options(configs, "dtd"), {})


class SaliencyCommandTest(tf.test.TestCase):
    """The command's config: the flags' defaults are its defaults, bad values one sentence,
    and a run on an image folder writes the figure and the gradients."""

    def test_the_command_line_gives_the_config_s_defaults_and_values(self):
        parser = cli.build_parser()
        args = parser.parse_args(["saliency", "--models", "a", "b", "--dataset", "mnist",
                                  "--out", "x.png"])
        self.assertEqual(saliency_command.config_from_args(args),
                         SaliencyConfig(models=("a", "b"), dataset="mnist", out="x.png"))
        args = parser.parse_args([
            "saliency", "--models", "a", "--dataset", "mnist", "--out", "x.png", "--labels",
            "A", "--images", "3", "--smoothgrad", "--samples", "4", "--noise", "0.2",
            "--render", "image", "--seed", "5", "--data-dir", "d", "--no-download"])
        self.assertEqual(saliency_command.config_from_args(args), SaliencyConfig(
            models=("a",), dataset="mnist", out="x.png", labels=("A",), images=3,
            smoothgrad=True, samples=4, noise=0.2, render="image", seed=5, data_dir="d",
            download=False))

    def test_impossible_settings_are_one_sentence_before_any_work(self):
        for settings, message in (
                ({"images": 0}, "--images must be at least 1, got 0."),
                ({"samples": 0}, "--samples must be at least 1, got 0."),
                ({"noise": -0.1}, "--noise must be >= 0, got -0.1."),
                ({"noise": float("inf")}, "noise must be a finite number, got inf."),
                ({"render": "heat"}, "Unknown rendering 'heat'"),
                ({"labels": ("one",)}, "--labels has 1 entries for 2 models."),
                ({"seed": -1}, "seed must be a whole number from 0 to 4294967295, got -1.")):
            with self.assertRaisesRegex(UserError, re.escape(message)):
                SaliencyConfig(models=("a", "b"), dataset="mnist", out="x.png", **settings)

    def test_a_figure_and_the_gradients_of_every_model(self):
        root = Path(self.get_temp_dir())
        rng = np.random.default_rng(0)
        for label in ("cat", "dog"):
            (root / "pets" / label).mkdir(parents=True)
            for k in range(6):
                pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
                keras.utils.save_img(root / "pets" / label / f"{label}{k}.png", pixels)
        model_path = root / "tiny.keras"
        tiny_model(classes=2).save(model_path)
        out = root / "maps.png"
        result = saliency.run_saliency(SaliencyConfig(
            models=(str(model_path), str(model_path)), dataset=str(root / "pets"),
            out=str(out), images=2, labels=("first", "second")))
        self.assertTrue(out.read_bytes().startswith(b"\x89PNG"))
        arrays = np.load(result["arrays"])
        self.assertEqual(arrays["gradients_0"].shape, (2, 8, 8, 3))
        self.assertAllClose(arrays["gradients_0"], arrays["gradients_1"])
        self.assertEqual([m["title"] for m in result["models"]], ["first", "second"])
        self.assertEqual((result["images"], result["render"]), (2, "abs"))


if __name__ == "__main__":
    tf.test.main()
