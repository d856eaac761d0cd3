"""Tests of the PGD early stop against catastrophic overfitting (Wong et al.)."""

from unittest import mock

import keras
import numpy as np
import tensorflow as tf

from tftransfer.adversarial import early_stop
from tftransfer.config import AttackConfig
from tftransfer.errors import UserError

ATTACK = AttackConfig(norm="linf", eps=0.1, method="fgsm_rs")


def _model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Flatten(),
                              keras.layers.Dense(3)])
    model.compile(optimizer="sgd", loss="mse")
    return model


def _check_set(n=20):
    rng = np.random.default_rng(0)
    return rng.random((n, 4, 4, 3)).astype("float32"), rng.integers(0, 3, n).astype("int32")


class PGDEarlyStopTest(tf.test.TestCase):

    def run_epochs(self, accuracies):
        """Epochs whose weights are all-k at epoch k, with the check reporting
        ``accuracies``; returns the callback, the model and the logs."""
        model = _model()
        stopper = early_stop.PGDEarlyStop(*_check_set(), ATTACK, drop=0.2)
        stopper.set_model(model)
        logs = []
        with mock.patch.object(stopper, "robust_accuracy", side_effect=accuracies):
            for epoch in range(len(accuracies)):
                model.set_weights([np.full_like(w, epoch + 1) for w in model.get_weights()])
                logs.append({})
                stopper.on_epoch_end(epoch, logs[-1])
                if model.stop_training:
                    break
        return stopper, model, logs

    def test_a_collapse_stops_and_puts_the_best_weights_back(self):
        stopper, model, logs = self.run_epochs([0.30, 0.42, 0.40, 0.05, 0.5])
        self.assertTrue(model.stop_training)
        self.assertEqual(len(logs), 4)
        self.assertEqual(stopper.summary(), {"check_pgd_accuracy": 0.42, "best_epoch": 2,
                                             "early_stopped_at_epoch": 4})
        self.assertAllEqual(model.get_weights()[0], np.full_like(model.get_weights()[0], 2))
        self.assertEqual(logs[3][early_stop.LOG_KEY], 0.05)

    def test_small_fluctuations_do_not_stop(self):
        stopper, model, _ = self.run_epochs([0.30, 0.42, 0.25, 0.41])
        self.assertFalse(model.stop_training)
        self.assertIsNone(stopper.summary()["early_stopped_at_epoch"])
        self.assertAllEqual(model.get_weights()[0], np.full_like(model.get_weights()[0], 4))

    def test_the_check_is_pgd_in_the_training_norm_and_eps(self):
        model = _model()
        images, labels = _check_set()
        stopper = early_stop.PGDEarlyStop(images, labels, ATTACK, drop=0.2)
        stopper.set_model(model)
        self.assertEqual((stopper.check.method, stopper.check.norm, stopper.check.eps),
                         ("pgd", "linf", 0.1))
        clean = float(np.mean(np.argmax(model(images), 1) == labels))
        self.assertLessEqual(stopper.robust_accuracy(), clean)


class HoldOutTest(tf.test.TestCase):

    def test_disjoint_seeded_and_complete(self):
        train, check = early_stop.hold_out(np.arange(100, 150), 10, seed=3)
        self.assertLen(check, 10)
        self.assertEmpty(np.intersect1d(train, check))
        self.assertAllEqual(np.sort(np.concatenate([train, check])), np.arange(100, 150))
        self.assertAllEqual(early_stop.hold_out(np.arange(100, 150), 10, seed=3)[1], check)

    def test_too_many_is_one_sentence(self):
        with self.assertRaisesRegex(UserError, "at least two"):
            early_stop.hold_out(np.arange(10), 9, seed=0)
