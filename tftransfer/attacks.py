"""Projected gradient descent (L2 and L-infinity) in [0, 1] pixel space.

``pgd`` is the one PGD loop of the project (adversarial training uses it inside
``train_step``); ``cleverhans_pgd`` runs the field's reference implementation with
the same conventions, and is what evaluation uses by default.

Conventions (the project brief, ../shared/DESIGN.md): the attack uses the true labels, runs the model with
``training=False``, takes the loss on float32 logits, and after every step clips to
[0, 1], projects onto the eps ball and clips again (cleverhans' order, so that both
implementations produce the same examples).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tftransfer.config import AttackConfig
from tftransfer.errors import UserError

# Same guard as cleverhans: a zero gradient or perturbation must not divide by zero.
_AVOID_ZERO_DIV = 1e-12


def _per_example_l2(t):
    axes = list(range(1, len(t.shape)))
    return tf.sqrt(tf.maximum(_AVOID_ZERO_DIV, tf.reduce_sum(tf.square(t), axes, keepdims=True)))


def steepest_step(grad, norm: str, step_size: float):
    """The step of length ``step_size`` (in the attack's norm) that increases the loss most."""
    if norm == "linf":
        return step_size * tf.sign(grad)
    return step_size * grad / _per_example_l2(grad)


def project(delta, norm: str, eps: float):
    """Projects perturbations onto the eps ball of the norm (per example)."""
    if norm == "linf":
        return tf.clip_by_value(delta, -eps, eps)
    return delta * tf.minimum(1.0, eps / _per_example_l2(delta))


def random_start(x, norm: str, eps: float):
    """A random point of the eps ball around ``x`` (L2: on the sphere, as the robustness
    library does; L-infinity: uniform in the cube), clipped to [0, 1]."""
    if norm == "linf":
        delta = tf.random.uniform(tf.shape(x), -eps, eps, dtype=x.dtype)
    else:
        noise = tf.random.normal(tf.shape(x), dtype=x.dtype)
        delta = eps * noise / _per_example_l2(noise)
    return tf.clip_by_value(x + delta, 0.0, 1.0)


def loss_gradient(model, x, y):
    """Gradient of the summed cross-entropy on float32 logits with respect to ``x``.

    The sum (not the mean) keeps each example's gradient independent of the batch size.
    """
    with tf.GradientTape() as tape:
        tape.watch(x)
        logits = tf.cast(model(x, training=False), tf.float32)
        loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=tf.cast(y, tf.int32), logits=logits))
    return tape.gradient(loss, x)


def pgd(model, x, y, norm: str, eps: float, steps: int, step_size: float | None = None,
        rand_start: bool = False):
    """Untargeted PGD against the true labels ``y``.

    Args:
      model: a Keras model mapping [0, 1] RGB images to logits.
      x: float images in [0, 1], [N, H, W, C].
      y: integer labels [N].
      norm: ``"l2"`` or ``"linf"``.
      eps: radius of the ball in [0, 1] pixel units.
      steps: number of gradient steps.
      step_size: length of each step (default 2.5 * eps / steps).
      rand_start: start from a random point of the ball instead of ``x``.

    Returns:
      Adversarial images (float32, no gradient), within eps of ``x`` and in [0, 1].
    """
    if norm not in ("l2", "linf"):
        raise UserError(f"PGD norm must be 'l2' or 'linf', got {norm!r}.")
    step_size = 2.5 * eps / steps if step_size is None else step_size
    x = tf.cast(x, tf.float32)
    x_adv = random_start(x, norm, eps) if rand_start else x
    for _ in range(steps):
        grad = loss_gradient(model, x_adv, y)
        x_adv = tf.clip_by_value(x_adv + steepest_step(grad, norm, step_size), 0.0, 1.0)
        x_adv = tf.clip_by_value(x + project(x_adv - x, norm, eps), 0.0, 1.0)
    return tf.stop_gradient(x_adv)


def attack_with(model, x, y, attack: AttackConfig):
    """``pgd`` with the settings of an ``AttackConfig`` (``kind`` none returns ``x``)."""
    if attack.kind == "none":
        return x
    return pgd(model, x, y, attack.kind, attack.eps, attack.steps,
               attack.resolved_step_size, attack.random_start)


def cleverhans_pgd(model, x, y, attack: AttackConfig):
    """The same attack run by cleverhans' ``projected_gradient_descent``.

    cleverhans asserts ``step size <= eps`` (so 2.5 * eps / steps fails for steps <= 2)
    and wants Python floats; both are handled here with a clear error.
    """
    from cleverhans.tf2.attacks.projected_gradient_descent import projected_gradient_descent

    step_size = float(attack.resolved_step_size)
    if step_size > attack.eps:
        raise UserError(f"cleverhans needs attack step size <= eps ({step_size:g} > {attack.eps:g}); "
                        f"use more steps, a smaller --attack-step-size, or --attack-impl ours.")
    return projected_gradient_descent(
        lambda images: tf.cast(model(images, training=False), tf.float32),
        tf.cast(x, tf.float32), float(attack.eps), step_size, int(attack.steps),
        np.inf if attack.kind == "linf" else 2, clip_min=0.0, clip_max=1.0,
        y=tf.cast(y, tf.int64), rand_init=attack.random_start, sanity_checks=False)
