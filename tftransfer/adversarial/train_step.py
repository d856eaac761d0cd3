"""A ``keras.Model`` whose ``train_step`` does the inner maximization.

``AdversarialTrainer`` wraps a classifier. Each training step first finds adversarial
examples for the batch by the method the attack config names (``attacks.attack_with``:
PGD or FGSM with a random start; true labels, inference mode, float32 logits, projection
and clipping), then takes the usual optimizer step on them (optionally on a mix of clean
and adversarial examples). Free training (Shafahi et al., NeurIPS 2019; a method whose
registry entry ``replays_batches``) is one gradient computation per step instead: the
backward pass of the weight update also gives the input gradient, which moves a
perturbation carried over to the next step. Its input is each minibatch repeated m times
in a row (``training.replay_batches``); the trainer itself only carries the perturbation,
so one step here is one replay, and the input gradient is that of the training-mode
forward pass (that is what makes it free).
Everything ``fit()`` offers keeps working: callbacks, the progress bar,
``BackupAndRestore``, sample weights and ``class_weight`` (they scale each example's loss
and metrics), mixed precision (with loss scaling for float16) and
``tf.distribute`` strategies (free training: one device). With norm ``none`` it is
natural training through the same code, which keeps natural and robust runs comparable.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tftransfer.config import attack_methods
from tftransfer.adversarial import attacks
from tftransfer.config import AttackConfig, to_dict
from tftransfer.errors import UserError


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
        if self.eval_attack is not None and self.eval_attack.norm != "none":
            method = attack_methods.get(self.eval_attack.method)
            if not method.for_evaluation:
                raise UserError(f"{method.name} is a training method; evaluate with pgd.")
        self._carried = None  # free training's perturbation (_carried_perturbation)
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
        if self.attack.norm == "none":
            return x
        x_adv = attacks.attack_with(self.classifier, x, y, self.attack)
        if self.adversarial_fraction >= 1.0:
            return x_adv
        batch = tf.shape(x)[0]
        n_clean = batch - tf.cast(tf.round(self.adversarial_fraction * tf.cast(batch, tf.float32)),
                                  tf.int32)
        return tf.concat([tf.cast(x[:n_clean], x_adv.dtype), x_adv[n_clean:]], axis=0)

    def train_step(self, data):
        # (x, y) or (x, y, sample_weight): fit()'s class_weight arrives as the latter. The
        # weights scale each example's loss; the inner maximization attacks every example.
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if self.attack.replays_batches:
            logits = self._free_replay(x, y, sample_weight)
        else:
            x_train = self._training_inputs(x, y)
            logits, _ = self._weight_update(x_train, y, sample_weight)
        self._update_trackers(y, logits, sample_weight)
        return {m.name: m.result() for m in self.metrics if m is not self.adversarial_tracker}

    def _weight_update(self, x_train, y, sample_weight=None, input_gradient=False):
        """One optimizer step on ``x_train`` (its rows weighted by ``sample_weight``);
        returns the logits and, if asked, the gradient of the same (scaled) loss with
        respect to ``x_train``."""
        with tf.GradientTape() as tape:
            if input_gradient:
                tape.watch(x_train)
            logits = self(x_train, training=True)
            # compute_loss adds regularization losses and scales for the distribution strategy.
            loss = self.compute_loss(x=x_train, y=y, y_pred=logits, sample_weight=sample_weight,
                                     training=True)
            loss = loss + self._l2_penalty()
            scaled = self.optimizer.scale_loss(loss)  # loss scaling under mixed_float16
        sources = self.trainable_variables + ([x_train] if input_gradient else [])
        gradients = tape.gradient(scaled, sources)
        weights = gradients[:len(self.trainable_variables)]
        self.optimizer.apply_gradients(zip(weights, self.trainable_variables))
        return logits, (gradients[-1] if input_gradient else None)

    def _free_replay(self, x, y, sample_weight=None):
        """One replay of free training: the weight step at the carried perturbation, whose
        backward pass also gives the input gradient that moves the perturbation."""
        x = tf.cast(x, tf.float32)
        rows = tf.shape(x)[0]
        carried = self._carried_perturbation(x.shape[1:])[:rows]
        missing = tf.maximum(rows - tf.shape(carried)[0], 0)
        delta = tf.concat([carried, tf.zeros(tf.concat([[missing], tf.shape(x)[1:]], 0))], 0)
        x_adv = tf.clip_by_value(x + delta, 0.0, 1.0)
        logits, grad = self._weight_update(x_adv, y, sample_weight, input_gradient=True)
        x_next = attacks.free_step(x, x_adv, tf.cast(grad, tf.float32), self.attack.norm,
                                   self.attack.eps, self.attack.resolved_step_size)
        self._carried.assign(tf.concat([x_next - x, self._carried[rows:]], 0))
        return logits

    def _carried_perturbation(self, image_shape):
        """Free training's perturbation buffer, created at the first step's trace (lifted
        out of the graph by ``init_scope``). Any number of rows: a smaller last minibatch
        uses the first rows and leaves the others' for the next pass (one batch-sized
        buffer, as in Shafahi et al.). Not a weight: not saved, and it starts at zero."""
        if self._carried is None:
            with tf.init_scope():
                self._carried = tf.Variable(
                    tf.zeros([0] + list(image_shape)), trainable=False,
                    shape=tf.TensorShape([None] + list(image_shape)), name="free_perturbation")
        return self._carried

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        logits = self(x, training=False)
        self._update_trackers(y, logits, sample_weight)
        if self.eval_attack is not None:
            x_adv = attacks.attack_with(self.classifier, x, y, self.eval_attack)
            self.adversarial_tracker.update_state(y, self(x_adv, training=False),
                                                  sample_weight=sample_weight)
        return {m.name: m.result() for m in self.metrics}

    def _l2_penalty(self):
        if not self.weight_decay or not self.trainable_variables:
            return 0.0
        squares = tf.add_n([tf.reduce_sum(tf.square(tf.cast(v, tf.float32)))
                            for v in self.trainable_variables])
        # Gradients are summed over replicas, so each replica carries its share.
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        return 0.5 * self.weight_decay * squares / replicas

    def _update_trackers(self, y, logits, sample_weight=None):
        logits = tf.cast(logits, tf.float32)
        per_example = keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
        self.loss_tracker.update_state(per_example, sample_weight=sample_weight)
        self.accuracy_tracker.update_state(y, logits, sample_weight=sample_weight)

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
