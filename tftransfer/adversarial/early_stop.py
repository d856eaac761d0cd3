"""Early stopping against catastrophic overfitting (Wong, Rice & Kolter, ICLR 2020).

Single-step adversarial training (FGSM, free) can suddenly lose all robustness to PGD in
one epoch while its training accuracy keeps rising. ``PGDEarlyStop`` measures PGD
accuracy on a few training images held out of training after every epoch; when it drops
by more than ``drop`` below the best so far, it stops ``fit()`` and puts the best epoch's
weights back, so that what is saved is the last robust model.
"""

from __future__ import annotations

import sys

import keras
import numpy as np
import tensorflow as tf

from tftransfer.adversarial import attacks
from tftransfer.config import AttackConfig
from tftransfer.errors import UserError

# The check's PGD: 10 steps of 2.5 * eps / 10 from a random start (Wong et al. use 5 steps,
# one restart); stronger than the training method, cheap on a few hundred images.
CHECK_STEPS = 10
CHECK_BATCH = 256
LOG_KEY = "check_pgd_accuracy"


def hold_out(indices, count: int, seed: int):
    """Splits ``indices`` into (training, held-out check) by a seeded permutation.

    Raises:
      UserError: when fewer than two training images would remain.
    """
    indices = np.asarray(indices)
    if count > len(indices) - 2:
        raise UserError(f"early_stop_images ({count}) must leave at least two of the "
                        f"{len(indices)} training images for training.")
    order = np.random.default_rng(seed).permutation(len(indices))
    return np.sort(indices[order[count:]]), np.sort(indices[order[:count]])


class PGDEarlyStop(keras.callbacks.Callback):
    """Stops training when PGD accuracy on held-out images collapses; keeps the best.

    Args:
      images, labels: the held-out check set (numpy, [0, 1] images).
      attack: the training threat model; the check is PGD in its norm and eps.
      drop: a fall of more than this (accuracy as a fraction) below the best so far is a
        collapse.
      classifier: the model whose weights are kept (default: the model being fit).
    """

    def __init__(self, images, labels, attack: AttackConfig, drop: float, classifier=None):
        super().__init__()
        self.images, self.labels = images, labels
        self.check = AttackConfig(norm=attack.norm, eps=attack.eps, steps=CHECK_STEPS,
                                  random_start=True)
        self.drop = float(drop)
        self.classifier = classifier
        self.best_accuracy, self.best_epoch, self.stopped_epoch = -1.0, None, None
        self._best_weights = None
        self._adversary = None

    def on_epoch_end(self, epoch, logs=None):
        accuracy = self.robust_accuracy()
        if logs is not None:
            logs[LOG_KEY] = accuracy
        if accuracy < self.best_accuracy - self.drop:
            self._stop(epoch + 1, accuracy)
        elif accuracy >= self.best_accuracy:
            self.best_accuracy, self.best_epoch = accuracy, epoch + 1
            self._best_weights = [w.copy() for w in self._target().get_weights()]

    def robust_accuracy(self) -> float:
        """PGD accuracy of the current weights on the check set."""
        model = self._target()
        if self._adversary is None:
            self._adversary = tf.function(
                lambda x, y: attacks.attack_with(model, x, y, self.check))
        correct = 0
        for start in range(0, len(self.labels), CHECK_BATCH):
            x = tf.constant(self.images[start:start + CHECK_BATCH])
            y = tf.constant(self.labels[start:start + CHECK_BATCH])
            logits = tf.cast(model(self._adversary(x, y), training=False), tf.float32)
            correct += int(np.sum(np.argmax(logits, 1) == self.labels[start:start + CHECK_BATCH]))
        return correct / len(self.labels)

    def _stop(self, epoch: int, accuracy: float) -> None:
        self.stopped_epoch = epoch
        self.model.stop_training = True
        self._target().set_weights(self._best_weights)
        print(f"\nearly stop: PGD accuracy on held-out training images fell to "
              f"{accuracy:.3f} at epoch {epoch} (best {self.best_accuracy:.3f} at epoch "
              f"{self.best_epoch}); keeping epoch {self.best_epoch}'s weights.", file=sys.stderr)

    def _target(self):
        return self.classifier if self.classifier is not None else self.model

    def summary(self) -> dict:
        """The result row's columns: the best check accuracy, its epoch, and the epoch
        the run stopped at (None when it ran to the end)."""
        return {LOG_KEY: self.best_accuracy, "best_epoch": self.best_epoch,
                "early_stopped_at_epoch": self.stopped_epoch}
