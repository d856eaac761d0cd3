"""What the AutoAttack attacks share: float32 logits in inference mode, per-example norms, the
eps ball, stateless seeds, target classes by rank and the driver that attacks, batch by
batch and round by round, only the points that are still correctly classified.

The conventions are those of ``attacks.py``: images in [0, 1], eps in that pixel space,
``model(x, training=False)`` with its logits cast to float32 (so a mixed-precision model is
attacked in float32), every candidate projected onto the eps ball and clipped to [0, 1].
"""

from __future__ import annotations

import zlib

import numpy as np
import tensorflow as tf

from tftransfer.adversarial import attacks
from tftransfer.errors import UserError

NORMS = ("l2", "linf")


def check(norm: str, eps: float, batch_size: int = 1) -> None:
    """Refuses, in one sentence, a norm other than l2/linf, eps <= 0 or a batch size < 1."""
    if norm not in NORMS:
        raise UserError(f"AutoAttack's norm must be 'l2' or 'linf', got {norm!r}.")
    if not eps > 0:
        raise UserError(f"AutoAttack needs eps > 0, got {eps!r}.")
    if int(batch_size) < 1:
        raise UserError(f"AutoAttack's batch size must be at least 1, got {batch_size!r}.")


def logits(model, x):
    """The model's logits on ``x`` in inference mode, as float32."""
    return tf.cast(model(x, training=False), tf.float32)


def per_example(values, x):
    """Reshapes ``values`` [N] to broadcast against ``x`` [N, ...]."""
    return tf.reshape(values, [-1] + [1] * (len(x.shape) - 1))


def lp_norm(t, norm: str):
    """Per-example L2 or L-infinity norm [N] of ``t`` [N, ...]."""
    flat = tf.reshape(t, [tf.shape(t)[0], -1])
    if norm == "linf":
        return tf.reduce_max(tf.abs(flat), 1)
    return tf.sqrt(tf.reduce_sum(tf.square(flat), 1))


def to_ball(x, x_adv, norm: str, eps: float):
    """``x_adv`` projected onto the eps ball around ``x`` and clipped to [0, 1]."""
    return tf.clip_by_value(x + attacks.project(x_adv - x, norm, eps), 0.0, 1.0)


def predicted(logit_values):
    """Predicted classes (int32) of float logits."""
    return tf.argmax(logit_values, 1, output_type=tf.int32)


def ranked_class(logit_values, rank):
    """The class with the ``rank``-th largest logit (rank 1: the predicted class) [N]."""
    return tf.math.top_k(logit_values, k=rank).indices[:, rank - 1]


def salted(seed, *salts):
    """A stateless seed ([2] int64) from ``seed`` (a [2] tensor or an int) and int salts."""
    seed = seed if tf.is_tensor(seed) else tf.constant([int(seed), 0], tf.int64)
    for salt in salts:
        seed = tf.random.experimental.stateless_fold_in(seed, tf.cast(salt, tf.int64))
    return seed


def name_salt(name: str) -> int:
    """A fixed salt per attack name, so that attacks with the same seed draw different noise."""
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


def as_arrays(x, y):
    """``x`` as float32 and ``y`` as int32 numpy arrays of the same length."""
    x = np.asarray(x, np.float32)
    y = np.asarray(y).astype(np.int32).reshape(-1)
    if x.ndim < 2 or len(x) != len(y):
        raise UserError(f"AutoAttack needs images [N, ...] and labels [N], got shapes "
                        f"{x.shape} and {y.shape}.")
    return x, y


def predictor(model):
    """A compiled ``x -> predicted classes`` of ``model`` (inference mode, float32 logits)."""
    return tf.function(lambda x: predicted(logits(model, x)), reduce_retracing=True)


def predict_labels(predict, x, batch_size: int) -> np.ndarray:
    """The predicted classes of every row of ``x`` (numpy), batch by batch."""
    parts = [predict(tf.constant(x[i:i + batch_size])).numpy()
             for i in range(0, len(x), batch_size)]
    return np.concatenate(parts) if parts else np.zeros([0], np.int32)


def signature(x):
    """The input signature of a compiled batch attack on images shaped like ``x``: images
    with any batch size, labels, a scalar int32 (restart or target rank) and a [2] int64
    seed."""
    return (tf.TensorSpec([None, *np.shape(x)[1:]], tf.float32), tf.TensorSpec([None], tf.int32),
            tf.TensorSpec([], tf.int32), tf.TensorSpec([2], tf.int64))


def num_classes(model, x) -> int:
    """The number of logits ``model`` gives for images shaped like ``x``."""
    return int(logits(model, tf.zeros([1, *np.shape(x)[1:]], tf.float32)).shape[-1])


def target_ranks(model, x, n_targets: int) -> range:
    """Ranks 2 .. n_targets + 1 of the clean logits, at most every class but the first."""
    if n_targets < 1:
        raise UserError(f"AutoAttack needs at least one target class, got {n_targets}.")
    return range(2, min(n_targets, num_classes(model, x) - 1) + 2)


def attack_rounds(model, x, y, norm: str, eps: float, batch_size: int, rounds, run, seed: int,
                  salt: int) -> np.ndarray:
    """Attacks, in each round, the points that are still correctly classified.

    As AutoAttack's attacks do, a point that the model already misclassifies is never
    attacked, and a point is attacked in a round only if no earlier round fooled it; its
    first successful example is kept. Every candidate is projected onto the eps ball and
    clipped to [0, 1] before it is judged, and judged by the model's argmax.

    Args:
      model: Keras classifier on [0, 1] images.
      x, y: the points (numpy or tensors), [N, ...] and [N].
      norm, eps: the threat model.
      batch_size: points per call of ``run``.
      rounds: the round values (restart indices or target ranks) in order.
      run: compiled ``run(x, y, round, seed) -> candidates`` (see ``signature``).
      seed, salt: the user's seed and the attack's salt; each batch of each round draws
        its own stateless seed from them.

    Returns:
      float32 numpy images: the first successful example where a round fooled the model,
      ``x`` elsewhere.
    """
    check(norm, eps, batch_size)
    x, y = as_arrays(x, y)
    predict = predictor(model)
    x_adv = x.copy()
    left = predict_labels(predict, x, batch_size) == y
    for round_index, value in enumerate(rounds):
        points = np.flatnonzero(left)
        for batch_index, start in enumerate(range(0, points.size, batch_size)):
            chosen = points[start:start + batch_size]
            x_batch = tf.constant(x[chosen])
            candidates = run(x_batch, tf.constant(y[chosen]), tf.constant(value, tf.int32),
                             salted(seed, salt, round_index, batch_index))
            candidates = to_ball(x_batch, candidates, norm, eps)
            fooled = predict(candidates).numpy() != y[chosen]
            x_adv[chosen[fooled]] = tf.boolean_mask(candidates, fooled).numpy()
            left[chosen[fooled]] = False
    return x_adv
