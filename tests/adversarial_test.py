"""Tests of the adversarial train_step: precision, distribution, saving, robustness gained
(PGD, FGSM with a random start, free training)."""

import os

import keras
import numpy as np
import tensorflow as tf

from tests.helpers import assert_save_and_reload
from tftransfer.adversarial import attacks
from tftransfer.training.pretrain import replay_batches
from tftransfer.adversarial.train_step import AdversarialTrainer
from tftransfer.config import AttackConfig
from tftransfer.errors import UserError

ATTACK = AttackConfig(norm="l2", eps=1.0, steps=3)


def _classifier(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(),
                             keras.layers.Dense(32, activation="relu"),
                             keras.layers.Dense(2, dtype="float32")])


def _two_blobs(n=512, seed=0):
    """Two classes told apart by a robust feature (mean brightness, 95% predictive) and by a
    fragile one (a faint checkerboard of L2 norm 0.16, perfectly predictive): natural
    training leans on the checkerboard, which an L2 attack of 0.3 erases."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n).astype("int32")
    sign = (2 * y - 1)[:, None, None, None]
    pattern = np.tile([[1, -1], [-1, 1]], (2, 2)).reshape(1, 4, 4, 1)
    offset = rng.normal(0, 0.06, (n, 1, 1, 1))
    x = 0.5 + 0.1 * sign + offset + 0.04 * sign * pattern + rng.normal(0, 0.01, (n, 4, 4, 1))
    return np.clip(x, 0, 1).astype("float32"), y


def _fit(trainer, x, y, epochs=40):
    trainer.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    trainer.fit(x, y, batch_size=64, epochs=epochs, verbose=0)
    return trainer


def _one_sgd_step(trainer, x, y, sample_weight=None):
    """The change of ``trainer.classifier``'s weights after one SGD step on all of ``x``."""
    trainer.compile(optimizer=keras.optimizers.SGD(0.1),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = [w.numpy() for w in trainer.classifier.trainable_weights]
    trainer.fit(x, y, sample_weight=sample_weight, batch_size=len(x), epochs=1, verbose=0,
                shuffle=False)
    return [w.numpy() - b for w, b in zip(trainer.classifier.trainable_weights, before)]


def _robust_accuracy(model, x, y, eps):
    x_adv = attacks.pgd(model, x, y, "l2", eps, steps=10)
    return float(np.mean(np.argmax(model(x_adv), 1) == y))


class AdversarialTrainerTest(tf.test.TestCase):

    def test_adversarial_training_is_measurably_more_robust(self):
        x, y = _two_blobs()
        x_test, y_test = _two_blobs(seed=1)
        natural = _fit(AdversarialTrainer(_classifier()), x, y)
        robust = _fit(AdversarialTrainer(_classifier(), attack=AttackConfig("l2", 0.3, 5)), x, y)
        nat_acc = _robust_accuracy(natural.classifier, x_test, y_test, 0.3)
        rob_acc = _robust_accuracy(robust.classifier, x_test, y_test, 0.3)
        # Measured: natural ~0.30, robust ~0.68 under attack.
        self.assertGreater(rob_acc, nat_acc + 0.2, (nat_acc, rob_acc))

    def test_test_step_reports_clean_and_adversarial_accuracy(self):
        x, y = _two_blobs(128)
        trainer = _fit(AdversarialTrainer(_classifier(), attack=ATTACK, eval_attack=ATTACK),
                       x, y, epochs=2)
        results = trainer.evaluate(x, y, verbose=0, return_dict=True)
        self.assertIn("adversarial_accuracy", results)
        self.assertLessEqual(results["adversarial_accuracy"], results["accuracy"])

    def test_train_step_under_mixed_bfloat16(self):
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
        try:
            x, y = _two_blobs(128)
            trainer = _fit(AdversarialTrainer(_classifier(), attack=ATTACK), x, y, epochs=1)
            self.assertTrue(np.isfinite(trainer.evaluate(x, y, verbose=0, return_dict=True)["loss"]))
        finally:
            keras.mixed_precision.set_global_policy("float32")

    def test_train_step_under_mixed_float16_uses_loss_scaling(self):
        # Keras wraps the optimizer in a LossScaleOptimizer by itself, which divides every
        # gradient by its scale (2**15 at first): a train_step that forgot scale_loss would
        # move the weights 32768 times too little. One SGD step must match float32's.
        x, y = _two_blobs(64)
        steps = {}
        for policy in ("float32", "mixed_float16"):
            keras.mixed_precision.set_global_policy(policy)
            try:
                trainer = AdversarialTrainer(_classifier(), attack=ATTACK)
                steps[policy] = _one_sgd_step(trainer, x, y)
            finally:
                keras.mixed_precision.set_global_policy("float32")
        self.assertIsInstance(trainer.optimizer, keras.optimizers.LossScaleOptimizer)
        for mixed, full in zip(steps["mixed_float16"], steps["float32"]):
            self.assertGreater(np.abs(full).max(), 1e-4)
            self.assertAllClose(mixed, full, atol=0.05 * np.abs(full).max())

    def test_sample_weights_scale_each_examples_loss(self):
        # With the mean-over-batch loss, weighting half of a batch by 0 gives half the SGD
        # step of the other half alone; metrics are weighted means.
        x, y = _two_blobs(64)
        weights = np.repeat([1.0, 0.0], 32).astype("float32")
        trainer = AdversarialTrainer(_classifier(), attack=ATTACK)
        weighted = _one_sgd_step(trainer, x, y, weights)
        first_half = _one_sgd_step(AdversarialTrainer(_classifier(), attack=ATTACK), x[:32],
                                   y[:32])
        for step, alone in zip(weighted, first_half):
            self.assertAllClose(step, 0.5 * alone, atol=1e-6)
        evaluated = trainer.evaluate(x, y, sample_weight=weights, verbose=0, return_dict=True)
        alone = trainer.evaluate(x[:32], y[:32], verbose=0, return_dict=True)
        self.assertAllClose(evaluated["accuracy"], alone["accuracy"])
        self.assertAllClose(evaluated["loss"], alone["loss"], rtol=1e-5)

    def test_train_step_under_two_replica_mirrored_strategy(self):
        cpus = tf.config.list_logical_devices("CPU")
        if len(cpus) < 2:
            self.skipTest("needs two logical CPU devices (configured in conftest.py)")
        strategy = tf.distribute.MirroredStrategy([d.name for d in cpus[:2]])
        x, y = _two_blobs(256)
        with strategy.scope():
            trainer = AdversarialTrainer(_classifier(), attack=ATTACK, weight_decay=5e-4)
            trainer.compile(optimizer=keras.optimizers.SGD(0.1),
                            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        self.assertEqual(strategy.num_replicas_in_sync, 2)
        dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(64)
        history = trainer.fit(dataset, epochs=2, verbose=0)
        self.assertLess(history.history["loss"][-1], history.history["loss"][0])

    def test_save_and_reload_keeps_config_and_outputs(self):
        x, y = _two_blobs(64)
        trainer = _fit(AdversarialTrainer(_classifier(), attack=ATTACK, eval_attack=ATTACK,
                                          adversarial_fraction=0.5, weight_decay=1e-4),
                       x, y, epochs=1)
        reloaded = assert_save_and_reload(self, trainer, x,
                                          os.path.join(self.get_temp_dir(), "trainer"))
        self.assertEqual(reloaded.attack, ATTACK)
        self.assertEqual(reloaded.adversarial_fraction, 0.5)

    def test_weight_decay_is_pytorch_coupled_l2(self):
        # One SGD step without momentum on a zero-gradient loss shrinks w by lr * wd * w.
        keras.utils.set_random_seed(0)
        inner = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, use_bias=False)])
        trainer = AdversarialTrainer(inner, weight_decay=0.1)
        trainer.compile(optimizer=keras.optimizers.SGD(0.5), loss=lambda yt, yp: 0.0 * yp)
        before = inner.layers[0].kernel.numpy().copy()
        trainer.fit(np.zeros((4, 2), "float32"), np.zeros(4, "int32"), batch_size=4, verbose=0)
        self.assertAllClose(inner.layers[0].kernel.numpy(), before * (1 - 0.5 * 0.1), atol=1e-6)


def _fit_free(trainer, x, y, passes, replays, learning_rate=0.1):
    """Free training as ``pretrain`` feeds it: every minibatch ``replays`` times in a row."""
    trainer.compile(optimizer=keras.optimizers.SGD(learning_rate, momentum=0.9),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    batches = tf.data.Dataset.from_tensor_slices((x, y)).batch(64)
    trainer.fit(replay_batches(batches, replays), epochs=passes, verbose=0)
    return trainer


class FastAndFreeTrainingTest(tf.test.TestCase):

    def test_free_training_is_measurably_more_robust_than_natural(self):
        x, y = _two_blobs()
        x_test, y_test = _two_blobs(seed=1)
        natural = _fit(AdversarialTrainer(_classifier()), x, y, epochs=40)
        free = AttackConfig(norm="l2", eps=0.3, method="free")
        # The same 40 epoch-equivalents of gradient computations: 10 passes x 4 replays.
        robust = _fit_free(AdversarialTrainer(_classifier(), attack=free), x, y, 10, 4)
        nat_acc = _robust_accuracy(natural.classifier, x_test, y_test, 0.3)
        rob_acc = _robust_accuracy(robust.classifier, x_test, y_test, 0.3)
        self.assertGreater(rob_acc, nat_acc + 0.2, (nat_acc, rob_acc))

    def test_fgsm_rs_training_is_measurably_more_robust_than_natural(self):
        x, y = _two_blobs()
        x_test, y_test = _two_blobs(seed=1)
        natural = _fit(AdversarialTrainer(_classifier()), x, y, epochs=20)
        fast = AttackConfig(norm="l2", eps=0.3, method="fgsm_rs")
        robust = _fit(AdversarialTrainer(_classifier(), attack=fast), x, y, epochs=20)
        nat_acc = _robust_accuracy(natural.classifier, x_test, y_test, 0.3)
        rob_acc = _robust_accuracy(robust.classifier, x_test, y_test, 0.3)
        self.assertGreater(rob_acc, nat_acc + 0.2, (nat_acc, rob_acc))

    def test_free_perturbation_is_carried_inside_the_ball_and_raises_the_loss(self):
        # With the weights held still (learning rate 0), replaying one batch is iterated
        # ascent on its carried perturbation.
        x, y = _two_blobs(64)
        attack = AttackConfig(norm="linf", eps=0.05, method="free")
        trainer = _fit_free(AdversarialTrainer(_classifier(), attack=attack), x, y, 1, 6,
                            learning_rate=0.0)
        delta = trainer._carried.numpy()
        self.assertEqual(delta.shape, x.shape)
        self.assertLessEqual(np.abs(delta).max(), 0.05 + 1e-6)
        self.assertGreater(np.abs(delta).max(), 0.04)
        self.assertAllInRange(x + delta, 0.0, 1.0)
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        clean = float(loss(y, trainer.classifier(x)))
        self.assertGreater(float(loss(y, trainer.classifier(x + delta))), clean + 0.01)

    def test_free_is_refused_as_an_evaluation_attack(self):
        with self.assertRaisesRegex(UserError, "training method"):
            AdversarialTrainer(_classifier(), eval_attack=AttackConfig(norm="l2",
                                                                      method="free"))
