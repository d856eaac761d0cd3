"""Tests of AutoAttack (tftransfer.adversarial.autoattack) on tiny models with small budgets:
every attack stays in its eps ball and [0, 1]; APGD-CE reaches at least PGD's loss; the
targeted attacks reach a named target on toy linear models; FAB's projection is the
minimal-norm one; the ensemble keeps the worst case per point and never attacks a point
that is already misclassified."""

from unittest import mock

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized
from scipy import optimize

from tftransfer.adversarial import attacks
from tftransfer.adversarial import autoattack
from tftransfer.adversarial.autoattack import apgd, fab, square
from tftransfer.errors import UserError

EPS = {"linf": 8 / 255, "l2": 0.5}


def _conv_model(seed=0, classes=10):
    """A small non-linear classifier of 8x8 RGB images (tanh, so the loss is curved)."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((8, 8, 3)),
        keras.layers.Conv2D(8, 3, activation="tanh",
                            kernel_initializer=keras.initializers.RandomNormal(stddev=1.0)),
        keras.layers.Flatten(),
        keras.layers.Dense(32, activation="tanh",
                           kernel_initializer=keras.initializers.RandomNormal(stddev=0.3)),
        keras.layers.Dense(classes),
    ])


def _batch(seed=0, n=16, classes=10):
    rng = np.random.default_rng(seed)
    return rng.random((n, 8, 8, 3)).astype("float32"), rng.integers(0, classes, n).astype("int32")


def _predicted(model, x):
    return np.argmax(model(x, training=False).numpy(), 1)


def _largest_norm(x_adv, x, norm):
    delta = (np.asarray(x_adv) - np.asarray(x)).reshape(len(x), -1)
    return np.abs(delta).max() if norm == "linf" else np.linalg.norm(delta, axis=1).max()


def _linear_model(columns, bias, side=4):
    """Flatten + Dense on side x side RGB images: logit k = bias_k + sum of (x - 0.5) over
    the input features in ``columns[k]`` (a list of feature indices, maybe empty)."""
    features = side * side * 3
    model = keras.Sequential([keras.Input((side, side, 3)), keras.layers.Flatten(),
                              keras.layers.Dense(len(bias))])
    kernel = np.zeros((features, len(bias)), np.float32)
    for k, rows in enumerate(columns):
        kernel[rows, k] = 1.0
    model.layers[-1].set_weights([kernel, np.asarray(bias, np.float32)
                                  - 0.5 * kernel.sum(0)])
    return model


class BallTest(tf.test.TestCase, parameterized.TestCase):

    @parameterized.parameters("linf", "l2")
    def test_every_attack_stays_in_ball_and_unit_range(self, norm):
        model, eps = _conv_model(), EPS[norm]
        x, y = _batch()
        y = _predicted(model, x).astype("int32")  # every point starts correctly classified
        outputs = {
            "apgd-ce": autoattack.apgd_ce(model, x, y, norm, eps, steps=5, batch_size=8),
            "apgd-t": autoattack.apgd_t(model, x, y, norm, eps, steps=3, n_targets=2),
            "fab-t": autoattack.fab_t(model, x, y, norm, eps, steps=3, n_targets=2),
            "square": autoattack.square_attack(model, x, y, norm, eps, queries=30),
            "apgd x_best": apgd.apgd_run(model, x, y, norm, eps, steps=5).x_best,
            "square run": square.square_run(model, x, y, norm, eps, queries=30)[0],
        }
        closest, distance = fab.fab_targeted_run(model, x, y, (y + 1) % 10, norm, steps=3)
        for name, x_adv in outputs.items():
            with self.subTest(name):
                self.assertLessEqual(_largest_norm(x_adv, x, norm), eps * (1 + 1e-5))
                self.assertAllInRange(x_adv, 0.0, 1.0)
                self.assertEqual(np.asarray(x_adv).dtype, np.float32)
        # FAB's closest points may lie beyond eps (it minimises the norm), but in [0, 1].
        self.assertAllInRange(closest, 0.0, 1.0)
        self.assertTrue(np.isfinite(distance.numpy()).any())
        # The gradient attacks fool some points at this eps: the check is not vacuous.
        self.assertGreater(np.abs(outputs["apgd-ce"] - x).max(), 0.0)

    def test_rejects_bad_threat_models(self):
        model = _conv_model()
        x, y = _batch(n=2)
        with self.assertRaisesRegex(UserError, "norm"):
            autoattack.run_standard(model, x, y, "l1", 1.0)
        with self.assertRaisesRegex(UserError, "eps"):
            autoattack.run_standard(model, x, y, "linf", 0.0)
        with self.assertRaisesRegex(UserError, "Unknown"):
            autoattack.run_standard(model, x, y, "linf", 0.1, attacks=("apgd-dlr",))

    def test_an_empty_set_gives_empty_results(self):
        model = _conv_model()
        x, y = _batch(n=0)
        self.assertEqual(autoattack.apgd_t(model, x, y, "linf", 0.1).shape, (0, 8, 8, 3))
        result = autoattack.run_standard(model, x, y, "linf", 0.1)
        self.assertEqual(result.x_adv.shape, (0, 8, 8, 3))
        self.assertEqual(result.accuracy_after, dict.fromkeys(autoattack.STANDARD, 0.0))


class ApgdTest(tf.test.TestCase, parameterized.TestCase):

    def test_checkpoints_follow_the_paper_for_100_iterations(self):
        flags, windows = apgd.checkpoints(100)
        self.assertEqual([i for i, f in enumerate(flags) if f], [21, 40, 56, 69, 79, 86, 92, 98])
        self.assertEqual([w for w in windows if w], [22, 19, 16, 13, 10, 7, 6, 6])

    @parameterized.parameters("linf", "l2")
    def test_reaches_at_least_pgds_loss_at_the_same_budget(self, norm):
        model, eps, steps = _conv_model(), EPS[norm], 10
        x, y = _batch(n=32)
        run = apgd.apgd_run(model, x, y, norm, eps, steps=steps, seed=0)
        x_pgd = attacks.pgd(model, x, y, norm, eps, steps)

        def loss(images):
            return float(tf.reduce_mean(apgd.ce_loss(model(images), y, None)))
        self.assertGreaterEqual(loss(run.x_best), loss(x_pgd))
        self.assertGreater(loss(run.x_best), loss(x))
        self.assertAllClose(run.loss_best, apgd.ce_loss(model(run.x_best), y, None), atol=1e-5)

    def test_same_seed_same_examples_other_seed_other_examples(self):
        model = _conv_model()
        x, y = _batch(n=8)
        first, again, other = (apgd.apgd_run(model, x, y, "l2", 0.5, 3, seed=s).x_best
                               for s in (1, 1, 2))
        self.assertAllEqual(first, again)
        self.assertNotAllClose(first, other)


class TargetedTest(tf.test.TestCase, parameterized.TestCase):

    @parameterized.parameters(("linf", 0.1), ("l2", 0.5))
    def test_apgd_t_reaches_a_named_target(self, norm, eps):
        # Only the target's logit depends on the image; it starts as the least likely class.
        target = 7
        model = _linear_model([[] if k != target else list(range(48)) for k in range(10)],
                              [1.0, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0, -0.5, -0.2, -0.3])
        x = np.full((4, 4, 4, 3), 0.5, np.float32)
        y = np.zeros(4, np.int32)
        run = apgd.apgd_run(model, x, y, norm, eps, steps=10, loss="dlr-targeted",
                            target=np.full(4, target))
        self.assertAllEqual(_predicted(model, run.x_best), [target] * 4)
        self.assertTrue(np.all(run.fooled))

    @parameterized.parameters(("linf", 0.05), ("l2", 1.2 / np.sqrt(24)))
    def test_fab_t_reaches_a_named_target_at_nearly_the_least_distance(self, norm, least):
        # Class k reads block k of 12 features; the image starts 0.1 up on its class's block,
        # so every other class is reachable: the least Linf move is 0.05 per feature of two
        # blocks, the least L2 move 1.2 / ||w_t - w_y|| = 1.2 / sqrt(24).
        model = _linear_model([list(range(12 * k, 12 * k + 12)) for k in range(4)], [0.0] * 4)
        y, target = np.array([0, 1, 2, 3, 0, 1, 2, 3]), np.array([1, 2, 3, 0, 2, 3, 0, 1])
        x = np.full((8, 48), 0.5, np.float32)
        for i, label in enumerate(y):
            x[i, 12 * label:12 * label + 12] += 0.1
        x = x.reshape(8, 4, 4, 3)
        closest, distance = fab.fab_targeted_run(model, x, y, target, norm, steps=10)
        self.assertAllEqual(_predicted(model, closest), target)
        self.assertAllInRange(distance, least * (1 - 1e-3), least * 1.1)
        self.assertAllClose(distance, [_largest_norm(closest[i:i + 1], x[i:i + 1], norm)
                                       for i in range(8)], rtol=1e-4)


class FabProjectionTest(tf.test.TestCase, parameterized.TestCase):

    @parameterized.parameters("linf", "l2")
    def test_projection_is_the_least_norm_point_of_hyperplane_and_box(self, norm):
        rng = np.random.default_rng(0)
        points = rng.random((6, 7)).astype(np.float32)
        w = rng.normal(size=(6, 7)).astype(np.float32)
        # Offsets reachable inside the box: the hyperplane through a random box point.
        b = np.sum(w * rng.random((6, 7)), 1).astype(np.float32)
        d = fab.project_onto_hyperplane_box(points, w, b, norm).numpy()
        self.assertAllClose(np.sum(w * (points + d), 1), b, atol=1e-4)
        self.assertAllInRange(points + d, -1e-6, 1 + 1e-6)
        for i in range(6):
            bounds = list(zip(-points[i], 1 - points[i]))
            if norm == "l2":
                best = optimize.minimize(
                    lambda v: np.sum(v ** 2), np.zeros(7), method="SLSQP", bounds=bounds,
                    constraints=[{"type": "eq", "fun": lambda v: w[i] @ (points[i] + v) - b[i]}],
                    options={"ftol": 1e-12})
                least = np.sqrt(best.fun)
            else:  # min r s.t. |d_j| <= r, box, <w, p + d> = b; variables (d, r)
                ones = np.ones((7, 1))
                best = optimize.linprog(
                    np.r_[np.zeros(7), 1.0],
                    A_ub=np.block([[np.eye(7), -ones], [-np.eye(7), -ones]]), b_ub=np.zeros(14),
                    A_eq=np.r_[w[i], 0.0][None], b_eq=[b[i] - w[i] @ points[i]],
                    bounds=bounds + [(0, None)])
                least = best.fun
            ours = np.abs(d[i]).max() if norm == "linf" else np.linalg.norm(d[i])
            self.assertAllClose(ours, least, atol=1e-4)

    def test_unreachable_hyperplane_moves_every_coordinate_its_whole_room(self):
        points, w = np.array([[0.2, 0.7]], np.float32), np.array([[1.0, -2.0]], np.float32)
        for norm in ("linf", "l2"):  # <w, p> = -1.2; the box reaches down to -2 only
            d = fab.project_onto_hyperplane_box(points, w, np.array([-5.0], np.float32), norm)
            self.assertAllClose(points + d, [[0.0, 1.0]])


class SquareTest(tf.test.TestCase):

    def test_windows_in_tensorflow_match_the_numpy_pattern(self):
        harmonic = tf.constant(square._harmonic_squares(12), tf.float32)
        rows, cols = np.meshgrid(np.arange(9, dtype=np.int32), np.arange(9, dtype=np.int32),
                                 indexing="ij")
        for side in (3, 4, 5, 8):
            got = square._window_pattern(tf.constant(rows[None]), tf.constant(cols[None]),
                                         tf.constant(side), harmonic).numpy()[0]
            self.assertAllClose(got[:side, :side], square.pattern(side), atol=1e-6)
            self.assertAllEqual(got[side:], np.zeros_like(got[side:]))
            self.assertAllEqual(got[:, side:], np.zeros_like(got[:, side:]))

    def test_schedule_halves_the_window_fraction(self):
        fractions = [float(square.window_fraction(q, 0.8)) for q in (0, 10, 11, 51, 8001)]
        self.assertAllClose(fractions, [0.8, 0.8, 0.4, 0.2, 0.8 / 512])


class EnsembleTest(tf.test.TestCase):

    BUDGET = {"steps": 4, "square_queries": 40, "n_targets": 2, "batch_size": 16}

    def test_worst_case_per_point_and_never_attacks_misclassified_points(self):
        model = _conv_model()
        x, _ = _batch(n=24)
        y = _predicted(model, x).astype("int32")
        y[:5] = (y[:5] + 1) % 10  # five points misclassified from the start
        seen = []

        def spy(driver):
            def wrapped(model_, x_, *args, **kwargs):
                seen.append(np.array(x_))
                return driver(model_, x_, *args, **kwargs)
            return wrapped
        with mock.patch.object(apgd, "apgd_ce", spy(apgd.apgd_ce)), \
                mock.patch.object(apgd, "apgd_t", spy(apgd.apgd_t)), \
                mock.patch.object(fab, "fab_t", spy(fab.fab_t)), \
                mock.patch.object(square, "square_attack", spy(square.square_attack)):
            result = autoattack.run_standard(model, x, y, "linf", 4 / 255, seed=0, **self.BUDGET)
        self.assertLen(seen, 4)
        attacked = np.concatenate(seen).reshape(-1, 8 * 8 * 3)
        for i in range(5):
            self.assertFalse(np.any(np.all(attacked == x[i].reshape(-1), axis=1)))
            self.assertAllEqual(result.x_adv[i], x[i])
        self.assertAllEqual(result.broken_by[:5], ["clean"] * 5)
        self.assertAllEqual(result.correct, np.arange(24) >= 5)
        # Per point: broken points keep a misclassified example in the ball, robust ones x.
        fooled = _predicted(model, result.x_adv) != y
        broken = result.correct & ~result.robust
        self.assertTrue(broken.any() and result.robust.any())
        self.assertAllEqual(fooled[5:], broken[5:])
        self.assertAllEqual(result.x_adv[result.robust], x[result.robust])
        self.assertLessEqual(_largest_norm(result.x_adv, x, "linf"), 4 / 255 * (1 + 1e-5))
        self.assertAllEqual(result.broken_by != "", ~result.robust)
        # Accuracy: clean, then non-increasing after each attack, ending at the final one.
        after = list(result.accuracy_after.values())
        self.assertEqual(list(result.accuracy_after), list(autoattack.STANDARD))
        self.assertAlmostEqual(result.clean_accuracy, 19 / 24)
        self.assertAllEqual(np.diff([result.clean_accuracy] + after) <= 0, [True] * 4)
        self.assertAlmostEqual(after[-1], result.robust_accuracy)
        self.assertAlmostEqual(result.robust_accuracy, result.robust.mean())
        # The ensemble is at least as strong as each of its attacks alone.
        for name in autoattack.STANDARD:
            alone = autoattack.run_standard(model, x, y, "linf", 4 / 255, seed=0,
                                            attacks=(name,), **self.BUDGET)
            self.assertLessEqual(result.robust_accuracy, alone.robust_accuracy, name)
            self.assertEqual(result.summary()[f"autoattack_after_{name}"],
                             result.accuracy_after[name])

    def test_mixed_precision_model_is_attacked_in_float32(self):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(),
                                  keras.layers.Dense(16, activation="tanh",
                                                     dtype="mixed_float16"),
                                  keras.layers.Dense(10, dtype="mixed_float16")])
        x, _ = _batch(n=8)
        y = _predicted(model, x).astype("int32")
        result = autoattack.run_standard(model, x, y, "l2", 0.5, attacks=("apgd-ce", "square"),
                                         steps=3, square_queries=10)
        self.assertEqual(result.x_adv.dtype, np.float32)
        self.assertLessEqual(_largest_norm(result.x_adv, x, "l2"), 0.5 * (1 + 1e-5))
        self.assertLess(result.robust_accuracy, 1.0)


class _Noisy(keras.layers.Layer):
    """Adds fresh noise on every call, also in inference mode (a randomised defence)."""

    def call(self, x):
        return x + tf.random.normal(tf.shape(x), stddev=0.1)


class SanityTest(tf.test.TestCase):
    """AutoAttack's sanity flags (``autoattack.sanity``) name a model whose robust accuracy
    cannot be trusted, and stay silent on an ordinary one."""

    def test_an_ordinary_model_raises_no_flag(self):
        x, y = _batch()
        self.assertEqual(autoattack.sanity.model_flags(_conv_model(), x, y, autoattack.STANDARD,
                                                       9), [])

    def test_randomised_outputs_are_flagged(self):
        model = keras.Sequential([_conv_model(), _Noisy()])
        x, y = _batch()
        self.assertRegex(autoattack.sanity.randomized_outputs(model, x, y), "randomised")

    def test_probability_outputs_are_flagged(self):
        model = keras.Sequential([_conv_model(), keras.layers.Softmax()])
        x, _ = _batch()
        self.assertRegex(autoattack.sanity.probability_outputs(model, x), "probabilities")
        self.assertIsNone(autoattack.sanity.probability_outputs(_conv_model(), x))

    def test_zero_gradients_are_counted(self):
        # Rounding the input to 0/1 has a zero gradient almost everywhere.
        model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Lambda(tf.round),
                                  _conv_model()])
        x, y = _batch()
        self.assertRegex(autoattack.sanity.zero_gradients(model, x, y), "^16 of 16 checked")
        self.assertIsNone(autoattack.sanity.zero_gradients(_conv_model(), x, y))

    def test_square_lowering_the_white_box_accuracy_is_flagged(self):
        flag = autoattack.sanity.square_beats_white_box(
            {"apgd-ce": 0.5, "apgd-t": 0.45, "fab-t": 0.45, "square": 0.40})
        self.assertRegex(flag, "lowered the robust accuracy by 5.00%")
        self.assertIsNone(autoattack.sanity.square_beats_white_box(
            {"apgd-ce": 0.5, "apgd-t": 0.45, "fab-t": 0.45, "square": 0.449}))

    def test_too_few_classes_for_the_targets(self):
        self.assertRegex(autoattack.sanity.too_few_classes(3, autoattack.STANDARD, 9),
                         "3 classes")
        self.assertRegex(autoattack.sanity.too_few_classes(5, autoattack.STANDARD, 9),
                         "only 4 other classes")
        self.assertIsNone(autoattack.sanity.too_few_classes(10, autoattack.STANDARD, 9))

    def test_run_standard_reports_the_flags(self):
        model = keras.Sequential([_conv_model(), keras.layers.Softmax()])
        x, y = _batch(n=4)
        result = autoattack.run_standard(model, x, y, "linf", 8 / 255, attacks=("apgd-ce",),
                                         steps=2)
        self.assertTrue(any("probabilities" in flag for flag in result.flags))
        self.assertEqual(result.summary()["autoattack_flags"], list(result.flags))
