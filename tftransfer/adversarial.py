"""A ``keras.Model`` whose ``train_step`` does PGD's inner maximization.

``AdversarialTrainer`` wraps a classifier. Each training step first finds
adversarial examples for the batch (``attacks.pgd``: true labels, inference mode,
float32 logits, projection and clipping after every step), then takes the usual
optimizer step on them (optionally on a mix of clean and adversarial examples).
Everything ``fit()`` offers keeps working: callbacks, the progress bar,
``BackupAndRestore``, mixed precision (with loss scaling for float16) and
``tf.distribute`` strategies. With ``attack.kind == 'none'`` it is natural training
through the same code, which keeps natural and robust runs comparable.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tftransfer import attacks
from tftransfer.config import AttackConfig, to_dict


@keras.saving.register_keras_serializable(package="tftransfer")
class AdversarialTrainer(keras.Model):
    """Adversarial (or natural) training of ``classifier``.

    Args:
      classifier: a Keras model from [0, 1] RGB images to logits.
      attack: the training threat model (``AttackConfig`` or its dict).
      eval_attack: the attack whose accuracy ``test_step`` reports (None: clean only).
      adversarial_fraction: share of each batch replaced by adversarial examples
        (1.0 = Madry et al.'s pure adversarial training).
      weight_decay: coefficient of PyTorch-style (coupled) L2 decay on every trainable
        variable, added to the loss as ``weight_decay / 2 * sum(w ** 2)``.
    """

    def __init__(self, classifier, attack=None, eval_attack=None, adversarial_fraction=1.0,
                 weight_decay=0.0, **kwargs):
        super().__init__(**kwargs)
        self.classifier = classifier
        self.attack = _as_attack(attack)
        self.eval_attack = _as_attack(eval_attack) if eval_attack is not None else None
        self.adversarial_fraction = float(adversarial_fraction)
        self.weight_decay = float(weight_decay)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.accuracy_tracker = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        self.adversarial_tracker = keras.metrics.SparseCategoricalAccuracy(
            name="adversarial_accuracy")

    def call(self, inputs, training=False):
        return self.classifier(inputs, training=training)

    @property
    def metrics(self):
        trackers = [self.loss_tracker, self.accuracy_tracker]
        return trackers + ([self.adversarial_tracker] if self.eval_attack is not None else [])

    def _training_inputs(self, x, y):
        if self.attack.kind == "none":
            return x
        x_adv = attacks.attack_with(self.classifier, x, y, self.attack)
        if self.adversarial_fraction >= 1.0:
            return x_adv
        batch = tf.shape(x)[0]
        n_clean = batch - tf.cast(tf.round(self.adversarial_fraction * tf.cast(batch, tf.float32)),
                                  tf.int32)
        return tf.concat([tf.cast(x[:n_clean], x_adv.dtype), x_adv[n_clean:]], axis=0)

    def train_step(self, data):
        x, y = data[0], data[1]
        x_train = self._training_inputs(x, y)
        with tf.GradientTape() as tape:
            logits = self(x_train, training=True)
            # compute_loss adds regularization losses and scales for the distribution strategy.
            loss = self.compute_loss(x=x_train, y=y, y_pred=logits, training=True)
            loss = loss + self._l2_penalty()
            scaled = self.optimizer.scale_loss(loss)  # loss scaling under mixed_float16
        gradients = tape.gradient(scaled, self.trainable_variables)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_variables))
        self._update_trackers(y, logits)
        return {m.name: m.result() for m in self.metrics if m is not self.adversarial_tracker}

    def test_step(self, data):
        x, y = data[0], data[1]
        logits = self(x, training=False)
        self._update_trackers(y, logits)
        if self.eval_attack is not None:
            x_adv = attacks.attack_with(self.classifier, x, y, self.eval_attack)
            self.adversarial_tracker.update_state(y, self(x_adv, training=False))
        return {m.name: m.result() for m in self.metrics}

    def _l2_penalty(self):
        if not self.weight_decay or not self.trainable_variables:
            return 0.0
        squares = tf.add_n([tf.reduce_sum(tf.square(tf.cast(v, tf.float32)))
                            for v in self.trainable_variables])
        # Gradients are summed over replicas, so each replica carries its share.
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        return 0.5 * self.weight_decay * squares / replicas

    def _update_trackers(self, y, logits):
        logits = tf.cast(logits, tf.float32)
        per_example = keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
        self.loss_tracker.update_state(per_example)
        self.accuracy_tracker.update_state(y, logits)

    def get_config(self):
        config = super().get_config()
        config.update(
            classifier=keras.saving.serialize_keras_object(self.classifier),
            attack=to_dict(self.attack),
            eval_attack=to_dict(self.eval_attack) if self.eval_attack else None,
            adversarial_fraction=self.adversarial_fraction,
            weight_decay=self.weight_decay)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["classifier"] = keras.saving.deserialize_keras_object(config["classifier"])
        return cls(**config)


def _as_attack(attack) -> AttackConfig:
    if attack is None:
        return AttackConfig()
    if isinstance(attack, AttackConfig):
        return attack
    return AttackConfig(**attack)
