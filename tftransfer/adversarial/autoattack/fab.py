"""Targeted FAB (FAB-T) of Croce & Hein, "Minimally distorted adversarial examples with a fast
adaptive boundary attack" (ICML 2020), for L2 and L-infinity, as AutoAttack runs it.

FAB looks for the smallest perturbation that crosses the decision boundary between the
true class y and a target class t. At each iteration it linearises g = z_t - z_y at the
iterate x_k and projects both x_k and the original point x onto the hyperplane
{u : g(x_k) + <grad g(x_k), u - x_k> = 0} intersected with the box [0, 1]^d (the
minimal-norm projection: ``project_onto_hyperplane_box``), getting d_k and d_0. It then
moves to a convex combination biased toward x,

    x_{k+1} = clip((x_k + eta d_k) (1 - alpha) + (x + eta d_0) alpha, 0, 1),
    alpha = min(||d_k|| / (||d_k|| + ||d_0||), alpha_max),

with overshoot eta = 1.05 and alpha_max = 0.1. When x_{k+1} is misclassified it is kept if
it is the closest such point so far, and the iterate steps back toward x:
x_{k+1} <- x + beta (x_{k+1} - x), beta = 0.9. A point counts as fooled only if its
closest misclassified iterate lies within eps.

AutoAttack's standard version runs FAB-T with 100 iterations and one restart (hence no
random start) per target class, the classes of the 2nd to 10th largest clean logits.
cleverhans 4.0.0 has no FAB, so this is written from the paper.
"""

from __future__ import annotations

import tensorflow as tf

from tftransfer.adversarial.autoattack import _common
from tftransfer.errors import UserError


def project_onto_hyperplane_box(points, w, b, norm: str):
    """The minimal-norm step onto a hyperplane inside the unit box, for each row.

    Solves min ||d|| s.t. <w, p + d> = b and 0 <= p + d <= 1 (L2 or L-infinity). With
    the sign chosen so that c = <w, p> - b >= 0 and beta_i the room that coordinate i has
    in the direction that lowers <w, .> (p_i if w_i > 0, else 1 - p_i), the solution is
    d_i = -sign(w_i) min(tau v_i, beta_i), with v_i = |w_i| (L2: d = clip(-tau w) on the
    box) or 1 (L-inf: every free coordinate moves by tau). The reduction
    h(tau) = sum_i |w_i| min(tau v_i, beta_i) is concave, piecewise linear and increasing,
    so tau solves h(tau) = c exactly between two sorted breakpoints beta_i / v_i. Where no
    tau reaches c (the hyperplane misses the box) every coordinate moves its whole room.

    Args:
      points: [M, D] float32; w: [M, D] normals; b: [M] offsets.
      norm: ``"l2"`` or ``"linf"``.

    Returns:
      The steps d [M, D].
    """
    c = tf.reduce_sum(w * points, 1) - b
    w = tf.where(c[:, None] < 0, -w, w)
    c = tf.abs(c)
    room = tf.where(w > 0, points, 1.0 - points)
    size = tf.abs(w)
    speed = size if norm == "l2" else tf.ones_like(size)
    weight = size * speed
    breaks = tf.where(size > 0, room / tf.maximum(speed, 1e-30), tf.zeros_like(room))
    order = tf.argsort(breaks, axis=1)
    breaks_sorted = tf.gather(breaks, order, batch_dims=1)
    weight_sorted = tf.gather(weight, order, batch_dims=1)
    cum_weight = tf.cumsum(weight_sorted, 1)
    cum_weighted_breaks = tf.cumsum(weight_sorted * breaks_sorted, 1)
    total = cum_weight[:, -1]
    # h at each sorted breakpoint; k: the first breakpoint where h reaches c.
    reached = cum_weighted_breaks + breaks_sorted * (total[:, None] - cum_weight)
    k = tf.reduce_sum(tf.cast(reached < c[:, None], tf.int32), 1)
    before = tf.maximum(k - 1, 0)
    fixed = tf.where(k > 0, tf.gather(cum_weighted_breaks, before, batch_dims=1), 0.0)
    slope = total - tf.where(k > 0, tf.gather(cum_weight, before, batch_dims=1), 0.0)
    tau = tf.where(k < tf.shape(w)[1], (c - fixed) / tf.maximum(slope, 1e-30),
                   breaks_sorted[:, -1])
    return -tf.sign(w) * tf.minimum(tau[:, None] * speed, room)


def _flat_norm(t, norm: str):
    return tf.reduce_max(tf.abs(t), 1) if norm == "linf" else tf.norm(t, axis=1)


def fab_targeted_run(model, x, y, target, norm: str, steps: int = 100, alpha_max: float = 0.1,
                     eta: float = 1.05, beta: float = 0.9):
    """One FAB-T run from ``x`` toward the boundary between ``y`` and ``target``
    (traceable).

    Args:
      model: Keras classifier on [0, 1] images.
      x: float32 images [N, ...] in [0, 1]; y: true labels [N]; target: target classes [N].
      norm: ``"l2"`` or ``"linf"``.
      steps: iterations; alpha_max, eta, beta: the paper's bias, overshoot and backward step.

    Returns:
      ``(x_closest, distance)``: the closest misclassified iterate (``x`` where none was
      found) and its distance from ``x`` in the norm [N] (+inf where none was found).
    """
    _common.check(norm, 1.0)
    if steps < 1:
        raise UserError(f"FAB needs at least one step, got {steps}.")
    x, y, target = tf.cast(x, tf.float32), tf.cast(y, tf.int32), tf.cast(target, tf.int32)
    count = tf.shape(x)[0]
    x0 = tf.reshape(x, [count, -1])

    def body(i, x1, closest, distance):
        with tf.GradientTape() as tape:
            tape.watch(x1)
            z = _common.logits(model, tf.reshape(x1, tf.shape(x)))
            gap = tf.gather(z, target, batch_dims=1) - tf.gather(z, y, batch_dims=1)
            total = tf.reduce_sum(gap)
        w = tape.gradient(total, x1)
        w = tf.where(tf.math.is_finite(w), w, tf.zeros_like(w))
        b = tf.reduce_sum(w * x1, 1) - gap
        d = project_onto_hyperplane_box(tf.concat([x1, x0], 0), tf.concat([w, w], 0),
                                        tf.concat([b, b], 0), norm)
        d1, d0 = d[:count], d[count:]
        size = tf.maximum(_flat_norm(d, norm), 1e-8)
        a1, a0 = size[:count], size[count:]
        alpha = tf.clip_by_value(a1 / (a1 + a0), 0.0, alpha_max)[:, None]
        x1 = tf.clip_by_value((x1 + eta * d1) * (1.0 - alpha) + (x0 + eta * d0) * alpha,
                              0.0, 1.0)
        wrong = _common.predicted(_common.logits(model, tf.reshape(x1, tf.shape(x)))) != y
        dist = _flat_norm(x1 - x0, norm)
        closer = wrong & (dist < distance)
        closest = tf.where(closer[:, None], x1, closest)
        distance = tf.where(closer, dist, distance)
        x1 = tf.where(wrong[:, None], x0 + beta * (x1 - x0), x1)
        return i + 1, x1, closest, distance

    start = (tf.constant(0), x0, x0, tf.fill([count], float("inf")))
    _, _, closest, distance = tf.while_loop(lambda i, *rest: i < steps, body, start,
                                            maximum_iterations=steps)
    return tf.stop_gradient(tf.reshape(closest, tf.shape(x))), tf.stop_gradient(distance)


def fab_t(model, x, y, norm: str, eps: float, steps: int = 100, n_targets: int = 9,
          seed: int = 0, batch_size: int = 256):
    """FAB-T as AutoAttack's standard version runs it: one run per target class (the 2nd
    to (n_targets + 1)-th largest clean logits, at most all other classes), each on the
    points that no earlier target fooled; a run's point counts only within eps.

    Args:
      model: Keras classifier on [0, 1] images.
      x, y: images [N, ...] in [0, 1] and labels [N] (numpy or tensors).
      norm: ``"l2"`` or ``"linf"``; eps: the radius in [0, 1] pixel units.
      steps: iterations per target; n_targets: target classes.
      seed: unused by the deterministic single-restart FAB-T (kept for a uniform interface).
      batch_size: points per batch.

    Returns:
      float32 numpy images: an adversarial example within eps where one was found, ``x``
      elsewhere (misclassified points are not attacked).
    """
    ranks = _common.target_ranks(model, x, n_targets)

    def run(xb, yb, rank, _):
        target = _common.ranked_class(_common.logits(model, xb), rank)
        closest, distance = fab_targeted_run(model, xb, yb, target, norm, steps)
        return tf.where(_common.per_example(distance <= eps, xb), closest, xb)

    run = tf.function(run, input_signature=_common.signature(x))
    return _common.attack_rounds(model, x, y, norm, eps, batch_size, ranks, run, seed,
                                 _common.name_salt("fab-t"))
