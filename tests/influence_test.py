"""Tests of tftransfer.interpret.influence.run on small softmax-regression problems (float64)."""

import re
import tempfile
import types
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from tests.helpers import run_cli
from tftransfer import cli
from tftransfer.commands import influence as influence_command
from tftransfer.config import InfluenceConfig
from tftransfer.interpret.influence import run as influence
from tftransfer.interpret.influence import math as influence_math
from tftransfer.interpret.influence import plots as influence_plots
from tftransfer.interpret.influence import ranking as influence_ranking
from tftransfer.interpret.influence import trained_runs as influence_runs
from tftransfer.errors import UserError
from tftransfer.models import architectures


def make_problem(n=60, d=5, classes=3, seed=0):
    """Overlapping Gaussian classes: not separable, so the L2 optimum is well inside."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    centers = rng.normal(0.0, 1.0, (classes, d))
    features = centers[labels] + rng.normal(0.0, 1.2, (n, d))
    return features, labels


def fit(features, labels, classes, l2, iterations=100):
    """Newton's method on mean cross-entropy + l2/2 ||theta||^2, to machine precision."""
    d = features.shape[1]
    head = influence_math.Head(np.zeros((d, classes)), np.zeros(classes), l2)
    for _ in range(iterations):
        gradient = influence_math.objective_gradient(head, features, labels)
        if np.linalg.norm(gradient) < 1e-13:
            break
        step = np.linalg.solve(influence_math.exact_hessian(head, features, 0.0), gradient)
        theta = head.theta - step.reshape(head.theta.shape)
        head = influence_math.Head(theta[:-1], theta[-1], l2)
    return head


class InfluenceMathTest(tf.test.TestCase):

    def setUp(self):
        super().setUp()
        self.features, self.labels = make_problem()
        self.l2 = 0.02
        self.head = fit(self.features, self.labels, 3, self.l2)

    def test_fit_reaches_the_optimum(self):
        gradient = influence_math.objective_gradient(self.head, self.features, self.labels)
        self.assertLess(np.linalg.norm(gradient), 1e-10)

    def test_gradients_match_autodiff(self):
        theta = tf.Variable(self.head.theta)
        x = tf.constant(influence_math.with_bias_column(self.features[:4]))
        with tf.GradientTape() as tape:
            logits = x[1:2] @ theta
            loss = tf.nn.sparse_softmax_cross_entropy_with_logits(self.labels[1:2], logits)
        expected = tape.gradient(loss, theta).numpy().ravel()
        ours = influence_math.per_example_gradients(self.head, self.features[:4], self.labels[:4])[1]
        self.assertAllClose(ours, expected, rtol=1e-10, atol=1e-12)

    def test_influence_predicts_leave_one_out_retraining(self):
        test_x, test_y = make_problem(n=3, seed=1)
        result = influence_math.compute_influence(self.head, self.features, self.features,
                                             self.labels, test_x, test_y, damping=0.0,
                                             method="exact", train_targets=False)
        n = len(self.features)
        # Removing z_i is upweighting it by -1/n: the objective keeps l2 relative to the
        # sum over n, i.e. l2 * n / (n - 1) relative to the mean over the n - 1 left.
        predicted = -result.on_test / n
        base = influence_math.losses(self.head, test_x, test_y)
        actual = np.zeros_like(predicted)
        for i in range(n):
            keep = np.arange(n) != i
            retrained = fit(self.features[keep], self.labels[keep], 3, self.l2 * n / (n - 1))
            actual[:, i] = influence_math.losses(retrained, test_x, test_y) - base
        for row in range(len(test_y)):
            correlation = np.corrcoef(predicted[row], actual[row])[0, 1]
            self.assertGreaterEqual(correlation, 0.9)
        # Not only correlated: the same scale (first-order accurate, slope near 1).
        slope = np.sum(predicted * actual) / np.sum(predicted * predicted)
        self.assertBetween(slope, 0.8, 1.25)

    def test_hessian_vector_products_match_exact_hessian(self):
        vectors = np.random.default_rng(2).normal(size=(7, self.head.num_params))
        hessian = influence_math.exact_hessian(self.head, self.features, damping=0.1)
        products = influence_math.hessian_vector_products(self.head, self.features, vectors, 0.1)
        self.assertAllClose(products, vectors @ hessian, rtol=1e-9, atol=1e-11)

    def test_exact_and_cg_agree(self):
        test_x, test_y = make_problem(n=8, seed=3)
        exact = influence_math.compute_influence(self.head, self.features, self.features[:20],
                                            self.labels[:20], test_x, test_y, 0.01, "exact")
        cg = influence_math.compute_influence(self.head, self.features, self.features[:20],
                                         self.labels[:20], test_x, test_y, 0.01, "cg")
        self.assertEqual(cg.info["method"], "cg")
        self.assertAllClose(exact.on_test, cg.on_test, rtol=1e-7, atol=1e-10)
        self.assertAllClose(exact.on_train, cg.on_train, rtol=1e-7, atol=1e-10)

    def test_feature_span_reduction_is_exact(self):
        # Fewer images (12) than features (30), plus a dead feature: H shrinks to 12 x 3.
        features, labels = make_problem(n=12, d=30, seed=4)
        features[:, 5] = 0.0
        head = fit(features, labels, 3, self.l2)
        test_x, test_y = make_problem(n=4, d=30, seed=5)  # its feature 5 is not dead
        basis = influence_math.feature_basis(features)
        self.assertEqual(basis.shape, (31, 12))
        self.assertIsNone(influence_math.feature_basis(self.features))  # 60 images, 6 dims
        full = influence_math.compute_influence(head, features, features, labels, test_x, test_y,
                                           0.01, "exact", reduce=False)
        for method in ("exact", "cg"):
            reduced = influence_math.compute_influence(head, features, features, labels, test_x,
                                                  test_y, 0.01, method)
            self.assertEqual(reduced.info["solved_params"], 36)
            self.assertAllClose(reduced.on_test, full.on_test, rtol=1e-7, atol=1e-10)
            self.assertAllClose(reduced.on_train, full.on_train, rtol=1e-7, atol=1e-10)

    def test_train_influence_is_symmetric_with_negative_self_influence(self):
        result = influence_math.compute_influence(self.head, self.features, self.features[:10],
                                             self.labels[:10], self.features[:2],
                                             self.labels[:2], 0.01)
        self.assertAllClose(result.on_train, result.on_train.T)
        # Upweighting an image lowers its own loss: H^-1 is positive definite.
        self.assertTrue(np.all(np.diag(result.on_train) < 0))

    def test_singular_hessian_needs_damping(self):
        head = influence_math.Head(self.head.kernel, self.head.bias, l2=0.0)
        with self.assertRaisesRegex(UserError, "damping"):
            influence_math.inverse_hvps(head, self.features, np.ones((1, head.num_params)), 0.0,
                                   "exact")

    def test_auto_method_switches_on_size(self):
        self.assertEqual(influence_math.choose_method("auto", 5000), "exact")
        self.assertEqual(influence_math.choose_method("auto", 5001), "cg")
        with self.assertRaises(UserError):
            influence_math.choose_method("svd", 10)


class MatchRatesTest(tf.test.TestCase):

    def test_constructed_case(self):
        train_labels = np.array([0, 0, 1, 1])
        test_labels = np.array([0, 1])
        scores = np.array([[-3.0, 1.0, -2.0, 0.0],     # helpful order: 0, 2, 3, 1
                           [0.0, 6.0, -2.0, -5.0]])   # helpful order: 3, 2, 0, 1
        rates = influence_ranking.match_rates(influence_ranking.ranking_scores(scores, "helpful"),
                                      train_labels, test_labels, top_k=10)
        self.assertAllEqual(rates["k"], [1, 2, 3, 4])  # top_k is capped at N
        self.assertAllClose(rates["match_rate"], [1.0, 0.5, 0.0, 0.5])
        self.assertAllClose(rates["cumulative_match_rate"], [1.0, 0.75, 0.5, 0.5])
        by_size = influence_ranking.match_rates(influence_ranking.ranking_scores(scores, "absolute"),
                                        train_labels, test_labels, top_k=1)
        self.assertAllClose(by_size["match_rate"], [0.5])  # |I| first: image 0, image 1

    def test_self_influence_is_excluded(self):
        labels = np.array([0, 1, 0])
        # Every image is most influential on itself; that rank must be skipped.
        scores = np.array([[9.0, 1.0, 2.0], [1.0, 9.0, 2.0], [2.0, 1.0, 9.0]])
        rates = influence_ranking.match_rates(scores, labels, labels, top_k=5, exclude_self=True)
        self.assertAllEqual(rates["k"], [1, 2])  # N - 1 other images
        # Rank 1 without self: images 2, 2, 0 (labels 0, 0, 0 for targets 0, 1, 0);
        # rank 2: images 1, 0, 1 (labels 1, 0, 1).
        self.assertAllClose(rates["match_rate"], [2 / 3, 0.0])

    def test_chance_rate(self):
        self.assertAllClose(influence_ranking.chance_match_rate([0, 0, 1, 1], [0, 1]), 0.5)


class HeadOfModelTest(tf.test.TestCase):

    def test_head_features_reproduce_the_logits(self):
        keras.utils.set_random_seed(0)
        inputs = keras.Input((6, 6, 3))
        hidden = keras.layers.Dense(4, activation="relu")(keras.layers.Flatten()(inputs))
        model = keras.Model(inputs, keras.layers.Dense(3, name="fc")(hidden))
        images = np.random.default_rng(0).random((5, 6, 6, 3)).astype(np.float32)
        head = influence_runs.head_of(model)
        features = influence_runs.head_features(
            model, tf.data.Dataset.from_tensor_slices((images, np.zeros(5))).batch(2))
        self.assertEqual(features.shape, (5, 4))
        difference = influence_runs.check_head_matches_model(model, head, images, features)
        self.assertLess(difference, 1e-5)

    def test_the_head_is_the_architecture_s_or_the_last_layer(self):
        # A fine-tuned registered network: its record names the head (not the last layer's
        # position); another network's head is its last layer, whatever its name.
        model = architectures.build("resnet20", 3, 8, width=0.25)
        self.assertEqual(architectures.head_name(model), "fc")
        self.assertEqual(influence_runs.head_of(model).kernel.shape,
                         tuple(model.get_layer("fc").kernel.shape))
        inputs = keras.Input((4,))
        model = keras.Model(inputs, keras.layers.Dense(2, name="logits")(inputs))
        self.assertEqual(influence_runs.head_of(model).kernel.shape, (4, 2))

    def test_a_model_without_a_linear_head_is_refused(self):
        inputs = keras.Input((4,))
        logits = keras.layers.Dense(2, name="fc")(inputs)
        model = keras.Model(inputs, keras.layers.Softmax(name="probabilities")(logits))
        with self.assertRaisesRegex(UserError, "'probabilities' of .* is not a linear Dense"):
            influence_runs.head_of(model)


class AnalyzeRunTest(tf.test.TestCase):
    """The driver on a loaded run (features and a trained head, no model or dataset)."""

    def test_scores_rates_and_summary_of_one_run(self):
        features, labels = make_problem(n=40)
        head = fit(features, labels, 3, l2=0.05)
        run = influence_runs.RunData(
            name="m", run_dir="runs/m", class_names=("a", "b", "c"), head=head,
            hessian_features=features, train_labels=labels, n_train=30,
            test_features=features[30:], test_labels=labels[30:], train_indices=np.arange(30),
            test_indices=np.arange(30, 40), target=types.SimpleNamespace(name="toy"),
            image_size=8)
        analysis = influence.analyze_run(run, top_k=5, damping=0.01)
        expected = influence_math.compute_influence(head, features, features[:30], labels[:30],
                                                    features[30:], labels[30:], 0.01)
        self.assertAllClose(analysis.influence.on_test, expected.on_test)
        test_rates = analysis.rates[analysis.rates["targets"] == "test"]
        self.assertAllClose(test_rates["match_rate"], influence_ranking.match_rates(
            -expected.on_test, labels[:30], labels[30:], 5)["match_rate"])
        summary = analysis.summary
        self.assertEqual((summary["train_images"], summary["test_images"]), (30, 10))
        self.assertEqual(summary["match_rate_test_k1"], test_rates["match_rate"].iloc[0])
        self.assertLess(summary["objective_gradient_norm"], 1e-8)  # fitted to the optimum
        self.assertEqual(summary["notes"], [])


class InfluenceConfigTest(tf.test.TestCase):
    """The command's settings: the flags' defaults are the config's, bad values one sentence."""

    def test_the_command_line_gives_the_config_s_defaults_and_values(self):
        parser = cli.build_parser()
        args = parser.parse_args(["influence", "--model", "runs/a", "--out", "o"])
        self.assertEqual(influence_command.config_from_args(args),
                         InfluenceConfig(run_dirs=("runs/a",), out="o"))
        args = parser.parse_args([
            "influence", "--model", "runs/a", "--model", "runs/b", "--out", "o", "--names",
            "nat", "rob", "--train-images", "50", "--test-images", "20", "--top-k", "7",
            "--damping", "0.1", "--method", "cg", "--rank", "absolute", "--grid-rows", "2",
            "--no-matrices", "--data-dir", "d", "--no-download"])
        self.assertEqual(influence_command.config_from_args(args), InfluenceConfig(
            run_dirs=("runs/a", "runs/b"), out="o", names=("nat", "rob"), train_images=50,
            test_images=20, top_k=7, damping=0.1, method="cg", rank="absolute", grid_rows=2,
            save_matrices=False, data_dir="d", download=False))

    def test_impossible_settings_are_one_sentence_before_any_work(self):
        runs = ("runs/a", "runs/b")
        for settings, message in (
                ({"top_k": 0}, "--top-k must be at least 1, got 0."),
                ({"test_images": 0}, "--test-images must be at least 1, got 0."),
                ({"train_images": 0}, "--train-images must be at least 1, got 0."),
                ({"test_images": 2.5}, "--test-images must be a whole number, got 2.5."),
                ({"damping": -1.0}, "--damping must be >= 0, got -1.0."),
                ({"damping": float("nan")}, "damping must be a finite number, got nan."),
                ({"method": "lissa"}, "Unknown --method 'lissa'"),
                ({"rank": "harmful"}, "Unknown ranking 'harmful'"),
                ({"names": ("one",)}, "--names has 1 entries for 2 --model runs.")):
            with self.assertRaisesRegex(UserError, re.escape(message)):
                InfluenceConfig(run_dirs=runs, out="o", **settings)
        with self.assertRaisesRegex(UserError, "run_dirs is empty"):
            InfluenceConfig(run_dirs=(), out="o")

    def test_the_command_refuses_a_bad_setting_without_a_traceback(self):
        code, out, err = run_cli("influence", "--model", "runs/none", "--out",
                                 self.get_temp_dir(), "--top-k", "0")
        self.assertEqual((code, out), (2, ""))
        self.assertEqual(err, "error: --top-k must be at least 1, got 0.\n")


class FiguresTest(tf.test.TestCase):

    def test_match_rate_figure_draws_each_models_rates_and_chance(self):
        rows = []
        for model in ("natural", "robust"):
            for targets in ("test", "train"):
                rows.append(pd.DataFrame({"model": model, "targets": targets,
                                          "k": [1, 2, 3], "match_rate": [0.9, 0.8, 0.7],
                                          "cumulative_match_rate": [0.9, 0.85, 0.8],
                                          "n_targets": 5, "chance": 0.1}))
        figure = influence_plots.plot_match_rates(pd.concat(rows))
        # One panel per kind of target; in each, one line per model at 100 x its match rate
        # and a dotted chance line at 100 x chance.
        self.assertEqual([ax.get_title() for ax in figure.axes],
                         ["test images as targets", "train images as targets (self excluded)"])
        for ax in figure.axes:
            solid = [line for line in ax.get_lines() if line.get_linestyle() == "-"]
            self.assertEqual([line.get_label() for line in solid], ["natural", "robust"])
            for line in solid:
                self.assertAllClose(line.get_ydata(), [90, 80, 70])
            dotted = [line for line in ax.get_lines() if line.get_linestyle() == ":"]
            self.assertAllClose([line.get_ydata()[0] for line in dotted], [10, 10])
        with tempfile.TemporaryDirectory() as tmp:
            path = influence_plots.save(figure, Path(tmp) / "rates.png")
            self.assertTrue(path.read_bytes().startswith(b"\x89PNG"))


if __name__ == "__main__":
    tf.test.main()
