"""Tests of the attacks: PGD (the eps ball, [0, 1], loss increase, agreement with
cleverhans), FGSM with a random start and free training's step (ball, [0, 1], loss)."""

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from tftransfer.adversarial import attacks
from tftransfer.config import AttackConfig
from tftransfer.errors import UserError


def _tiny_model(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((8, 8, 3)),
        keras.layers.Conv2D(6, 3, activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(4),
    ])


def _batch(seed=0, n=16):
    rng = np.random.default_rng(seed)
    return (rng.random((n, 8, 8, 3)).astype("float32"), rng.integers(0, 4, n).astype("int32"))


def _loss(model, x, y):
    return tf.keras.losses.sparse_categorical_crossentropy(y, model(x), from_logits=True)


class PgdTest(tf.test.TestCase, parameterized.TestCase):

    @parameterized.parameters(("l2", 0.5), ("linf", 8 / 255))
    def test_stays_in_ball_and_unit_range(self, norm, eps):
        model = _tiny_model()
        x, y = _batch()
        x_adv = attacks.pgd(model, x, y, norm, eps, steps=5, rand_start=True).numpy()
        delta = (x_adv - x).reshape(len(x), -1)
        largest = np.abs(delta).max() if norm == "linf" else np.linalg.norm(delta, axis=1).max()
        self.assertLessEqual(largest, eps + 1e-5)
        self.assertAllInRange(x_adv, 0.0, 1.0)

    @parameterized.parameters(("l2", 0.5), ("linf", 4 / 255))
    def test_raises_loss_more_than_random_noise_of_same_norm(self, norm, eps):
        model = _tiny_model()
        x, y = _batch(n=64)
        x_adv = attacks.pgd(model, x, y, norm, eps, steps=7)
        noise = attacks.random_start(tf.constant(x), norm, eps)
        clean, adv, rand = (float(tf.reduce_mean(_loss(model, v, y))) for v in (x, x_adv, noise))
        self.assertGreater(adv - clean, 5 * abs(rand - clean))
        self.assertGreater(adv, clean)

    @parameterized.parameters(("l2", 0.5, 5), ("linf", 8 / 255, 4))
    def test_matches_cleverhans(self, norm, eps, steps):
        model = _tiny_model()
        x, y = _batch()
        attack = AttackConfig(norm=norm, eps=eps, steps=steps, step_size=eps / 2)
        ours = attacks.attack_with(model, x, y, attack)
        reference = attacks.cleverhans_pgd(model, x, y, attack)
        self.assertAllClose(ours, reference, atol=1e-5, rtol=0)

    def test_runs_inside_tf_function_and_uses_inference_mode(self):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(),
                                  keras.layers.Dropout(0.9), keras.layers.Dense(4)])
        x, y = _batch()
        run = tf.function(lambda a, b: attacks.pgd(model, a, b, "l2", 0.5, 3))
        # With dropout active the two runs would differ; in inference mode they agree.
        self.assertAllClose(run(x, y), run(x, y))

    def test_zero_gradient_does_not_produce_nans(self):
        model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Lambda(lambda t: t * 0.0),
                                  keras.layers.Flatten(), keras.layers.Dense(4)])
        x, y = _batch()
        self.assertAllClose(attacks.pgd(model, x, y, "l2", 0.5, 3), x)


def _largest_norm(delta, norm):
    flat = np.asarray(delta).reshape(len(delta), -1)
    return np.abs(flat).max() if norm == "linf" else np.linalg.norm(flat, axis=1).max()


class SingleStepTest(tf.test.TestCase, parameterized.TestCase):
    """FGSM with a random start (Wong et al.) and free training's update (Shafahi et al.)."""

    @parameterized.parameters(("l2", 0.5), ("linf", 8 / 255))
    def test_uniform_start_fills_the_ball(self, norm, eps):
        delta = attacks.uniform_in_ball(tf.zeros((256, 8, 8, 3)), norm, eps).numpy()
        self.assertLessEqual(_largest_norm(delta, norm), eps + 1e-5)
        # Uniform in the ball, not on its surface or at its centre: L2 radii cluster just
        # under eps (3-d uniform: radius eps * U ** (1/192)); L-inf coordinates spread.
        if norm == "l2":
            radii = np.linalg.norm(delta.reshape(256, -1), axis=1)
            self.assertBetween(float(radii.min()), 0.9 * eps, eps)
            self.assertLess(float(radii.max() - radii.min()), 0.1 * eps)
            self.assertGreater(float(radii.max() - radii.min()), 0.0)
        else:
            self.assertBetween(float(np.mean(np.abs(delta))), 0.4 * eps, 0.6 * eps)

    @parameterized.parameters(("l2", 0.5), ("linf", 8 / 255))
    def test_fgsm_rs_stays_in_ball_and_unit_range(self, norm, eps):
        model = _tiny_model()
        x, y = _batch()
        x = np.clip(x * 1.4 - 0.2, 0, 1)  # pixels at 0 and 1, where clipping matters
        x_adv = attacks.fgsm_rs(model, x, y, norm, eps).numpy()
        self.assertLessEqual(_largest_norm(x_adv - x, norm), eps + 1e-5)
        self.assertAllInRange(x_adv, 0.0, 1.0)

    @parameterized.parameters(("l2", 0.5), ("linf", 4 / 255))
    def test_fgsm_rs_raises_loss_more_than_random_noise(self, norm, eps):
        model = _tiny_model()
        x, y = _batch(n=64)
        x_adv = attacks.attack_with(model, x, y, AttackConfig(norm=norm, eps=eps,
                                                              method="fgsm_rs"))
        noise = tf.clip_by_value(x + attacks.uniform_in_ball(tf.constant(x), norm, eps), 0, 1)
        clean, adv, rand = (float(tf.reduce_mean(_loss(model, v, y))) for v in (x, x_adv, noise))
        self.assertGreater(adv - clean, 5 * abs(rand - clean))

    @parameterized.parameters(("l2", 0.5), ("linf", 8 / 255))
    def test_repeated_free_steps_stay_in_ball_and_raise_loss(self, norm, eps):
        # Free training's perturbation after several replays (weights held still here).
        model = _tiny_model()
        x, y = _batch(n=64)
        x = np.clip(x * 1.4 - 0.2, 0, 1)
        x_adv = tf.constant(x)
        for _ in range(4):
            x_adv = attacks.free_step(x, x_adv, attacks.loss_gradient(model, x_adv, y), norm,
                                      eps, eps / 2)
        self.assertLessEqual(_largest_norm(x_adv.numpy() - x, norm), eps + 1e-5)
        self.assertAllInRange(x_adv, 0.0, 1.0)
        clean, adv = (float(tf.reduce_mean(_loss(model, v, y))) for v in (x, x_adv))
        self.assertGreater(adv, clean + 0.01)

    def test_a_non_finite_gradient_leaves_the_perturbation_in_place(self):
        x = tf.fill((2, 4, 4, 3), 0.5)
        x_adv = x + 0.01
        grad = tf.fill((2, 4, 4, 3), float("nan"))
        self.assertAllClose(attacks.free_step(x, x_adv, grad, "linf", 0.1, 0.1), x_adv)

    def test_cleverhans_refuses_other_methods_in_one_sentence(self):
        with self.assertRaisesRegex(UserError, "cleverhans implements PGD only"):
            attacks.check_cleverhans(AttackConfig(norm="l2", method="fgsm_rs"))
