"""Tests of PGD: the eps ball, [0, 1], loss increase, agreement with cleverhans."""

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from tftransfer import attacks
from tftransfer.config import AttackConfig


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
        attack = AttackConfig(kind=norm, eps=eps, steps=steps, step_size=eps / 2)
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
