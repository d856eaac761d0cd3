"""Attacks in [0, 1] pixel space: PGD, FGSM with a random start, and free training's step.

``pgd`` is the one PGD loop of the project; ``fgsm_rs`` is Wong, Rice & Kolter's fast
method ("Fast is better than free", ICLR 2020); ``free_step`` is the perturbation update
of Shafahi et al.'s free training ("Adversarial training for free!", NeurIPS 2019), whose
replay loop lives in ``adversarial.AdversarialTrainer``. ``attack_with`` runs the method an
``AttackConfig`` names: each method's function is registered here with ``implements``
under its name in ``attack_methods.METHODS``. ``cleverhans_pgd`` runs the field's
reference PGD with the same conventions, and is what evaluation uses by default.

Conventions (the project brief, ../shared/DESIGN.md): the attack uses the true labels, runs the model with
``training=False``, takes the loss on float32 logits, and after every step clips to
[0, 1], projects onto the eps ball and clips again (cleverhans' order, so that both
implementations produce the same examples).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tftransfer.config import attack_methods
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


def uniform_in_ball(x, norm: str, eps: float):
    """A perturbation drawn uniformly from the eps ball (per example): the cube for
    L-infinity; for L2 a uniform direction at radius eps * U ** (1 / dimensions)."""
    if norm == "linf":
        return tf.random.uniform(tf.shape(x), -eps, eps, dtype=x.dtype)
    direction = tf.random.normal(tf.shape(x), dtype=x.dtype)
    direction = direction / _per_example_l2(direction)
    dimensions = tf.cast(tf.reduce_prod(tf.shape(x)[1:]), x.dtype)
    radius = eps * tf.random.uniform(tf.concat([tf.shape(x)[:1], tf.ones_like(tf.shape(x)[1:])],
                                               0), dtype=x.dtype) ** (1.0 / dimensions)
    return radius * direction


def ascend(x, x_adv, grad, norm: str, eps: float, step_size: float):
    """One steepest-ascent step from ``x_adv``, projected onto the eps ball around ``x``
    and clipped to [0, 1] (clipping toward ``x`` cannot leave the ball). A non-finite
    gradient (a float16 overflow) counts as zero, so that it cannot poison a perturbation
    that free training carries on."""
    grad = tf.where(tf.math.is_finite(grad), grad, tf.zeros_like(grad))
    step = steepest_step(grad, norm, step_size)
    return tf.clip_by_value(x + project(x_adv + step - x, norm, eps), 0.0, 1.0)


def fgsm_rs(model, x, y, norm: str, eps: float, step_size: float | None = None):
    """FGSM from a random start (Wong, Rice & Kolter, ICLR 2020): a uniform random point
    of the eps ball, then one gradient step of ``step_size`` (default 1.25 * eps; L-inf: a
    sign step, L2: along the normalised gradient), projected and clipped to [0, 1].

    Returns:
      Adversarial images (float32, no gradient), within eps of ``x`` and in [0, 1].
    """
    step_size = 1.25 * eps if step_size is None else step_size
    x = tf.cast(x, tf.float32)
    x_start = tf.clip_by_value(x + uniform_in_ball(x, norm, eps), 0.0, 1.0)
    grad = loss_gradient(model, x_start, y)
    return tf.stop_gradient(ascend(x, x_start, grad, norm, eps, step_size))


def free_step(x, x_adv, grad, norm: str, eps: float, step_size: float):
    """Free training's perturbation update: ``ascend`` with the input gradient that the
    weight update's backward pass produced (no gradient computation of its own)."""
    return tf.stop_gradient(ascend(tf.cast(x, tf.float32), x_adv, grad, norm, eps, step_size))


_IMPLEMENTATIONS = {}


def implements(name: str):
    """Registers ``function(model, x, y, attack) -> x_adv`` as method ``name``'s
    implementation (``name`` must be in ``attack_methods.METHODS``)."""
    attack_methods.get(name)

    def register(function):
        _IMPLEMENTATIONS[name] = function
        return function
    return register


@implements("pgd")
def _pgd_of(model, x, y, attack: AttackConfig):
    return pgd(model, x, y, attack.norm, attack.eps, attack.steps, attack.resolved_step_size,
               attack.random_start)


@implements("fgsm_rs")
def _fgsm_rs_of(model, x, y, attack: AttackConfig):
    return fgsm_rs(model, x, y, attack.norm, attack.eps, attack.resolved_step_size)


def implemented_methods() -> tuple:
    """The methods with a registered batch perturbation (``attack_with`` runs them)."""
    return tuple(_IMPLEMENTATIONS)


def implementation(attack: AttackConfig):
    """The registered ``function(model, x, y, attack)`` of ``attack.method``.

    Raises:
      UserError: for a method that is a training procedure, not an attack (free).
    """
    method = attack_methods.get(attack.method)
    if method.name not in _IMPLEMENTATIONS:
        raise UserError(f"{method.name} is a training method, not an attack; evaluate with "
                        f"one of {', '.join(implemented_methods())}.")
    return _IMPLEMENTATIONS[method.name]


def attack_with(model, x, y, attack: AttackConfig):
    """Adversarial examples by the method and norm of ``attack`` (norm none returns ``x``)."""
    if attack.norm == "none":
        return x
    return implementation(attack)(model, x, y, attack)


def check_cleverhans(attack: AttackConfig) -> None:
    """Refuses, in one sentence, what cleverhans' PGD cannot run: another method, or a
    step size above eps (it asserts ``step size <= eps``, so 2.5 * eps / steps fails for
    steps <= 2)."""
    if attack.method != "pgd":
        raise UserError(f"cleverhans implements PGD only, not {attack.method}; use "
                        f"--attack-impl ours.")
    step_size = float(attack.resolved_step_size)
    if step_size > attack.eps:
        raise UserError(f"cleverhans needs attack step size <= eps ({step_size:g} > {attack.eps:g}); "
                        f"use more steps, a smaller --attack-step-size, or --attack-impl ours.")


def cleverhans_pgd(model, x, y, attack: AttackConfig):
    """The same attack run by cleverhans' ``projected_gradient_descent`` (which wants
    Python floats); ``check_cleverhans`` says what it refuses."""
    from cleverhans.tf2.attacks.projected_gradient_descent import projected_gradient_descent

    check_cleverhans(attack)
    step_size = float(attack.resolved_step_size)
    return projected_gradient_descent(
        lambda images: tf.cast(model(images, training=False), tf.float32),
        tf.cast(x, tf.float32), float(attack.eps), step_size, int(attack.steps),
        np.inf if attack.norm == "linf" else 2, clip_min=0.0, clip_max=1.0,
        y=tf.cast(y, tf.int64), rand_init=attack.random_start, sanity_checks=False)
