"""Auto-PGD (APGD) of Croce & Hein, "Reliable evaluation of adversarial robustness with an
ensemble of diverse parameter-free attacks" (ICML 2020), for L2 and L-infinity.

APGD is PGD with momentum whose step size needs no tuning: it starts at 2 * eps and is
halved at checkpoints w_j (p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03,
0.06), as iteration counts: 22, 19, 16, ... down to 6 of 100) whenever, since the last
checkpoint, the loss went up in at most ``rho`` = 0.75 of the steps (condition 1), or the
step size was not halved last time and the best loss has not improved since (condition 2).
After halving, the iterate restarts from the point of highest loss. Each step is

    z = P(x_k + eta * s(grad)),  x_{k+1} = P(x_k + 0.75 (z - x_k) + 0.25 (x_k - x_{k-1}))

(the first without momentum), where s is the sign (L-inf) or the normalised gradient (L2)
and P projects onto the eps ball and [0, 1]. Losses: cross-entropy (APGD-CE), the
difference of logits ratio DLR and its targeted form (APGD-T), all on float32 logits.

``apgd_run`` is one traceable run on a batch; ``apgd_ce`` and ``apgd_t`` are AutoAttack's
drivers over a whole set. cleverhans 4.0.0 has no APGD (its TF2 attacks are FGM, PGD/BIM,
MIM, C&W and SPSA), so this is written from the paper.
"""

from __future__ import annotations

import collections

import tensorflow as tf

from tftransfer.adversarial import attacks
from tftransfer.adversarial.autoattack import _common
from tftransfer.errors import UserError

ApgdRun = collections.namedtuple("ApgdRun", "x_adv fooled x_best loss_best")
ApgdRun.__doc__ = """One APGD run: ``x_adv`` the last misclassified iterate where the run
fooled the model (``fooled``), the start point elsewhere; ``x_best`` the iterate of highest
loss and ``loss_best`` that loss [N]."""

MOMENTUM = 0.75


def checkpoints(steps: int) -> tuple[list[bool], list[int]]:
    """Per iteration (0-based): whether the step-size check runs after it, and the number
    of iterations since the previous check (the paper's w_j - w_{j-1}; 0 where none)."""
    first, least, shrink = max(int(0.22 * steps), 1), max(int(0.06 * steps), 1), max(
        int(0.03 * steps), 1)
    flags, windows = [False] * steps, [0] * steps
    last, window = -1, first
    while last + window < steps:
        last += window
        flags[last], windows[last] = True, window
        window = max(window - shrink, least)
    return flags, windows


def _sorted_logits(z, rank):
    """The ``rank``-th largest logit (1-based, capped at the number of classes) [N]."""
    return tf.sort(z, axis=1, direction="DESCENDING")[:, min(rank, int(z.shape[-1])) - 1]


def ce_loss(z, y, target):
    """Cross-entropy of the true labels (``target`` unused) [N]."""
    del target
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=z)


def dlr_loss(z, y, target):
    """Untargeted DLR: -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12) [N]."""
    del target
    true = tf.gather(z, y, batch_dims=1)
    others = tf.reduce_max(tf.where(tf.one_hot(y, tf.shape(z)[1]) > 0, -1e30, z), 1)
    return -(true - others) / (_sorted_logits(z, 1) - _sorted_logits(z, 3) + 1e-12)


def dlr_targeted_loss(z, y, target):
    """Targeted DLR: -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12) [N]."""
    true, aimed = tf.gather(z, y, batch_dims=1), tf.gather(z, target, batch_dims=1)
    spread = _sorted_logits(z, 1) - 0.5 * (_sorted_logits(z, 3) + _sorted_logits(z, 4))
    return -(true - aimed) / (spread + 1e-12)


LOSSES = {"ce": ce_loss, "dlr": dlr_loss, "dlr-targeted": dlr_targeted_loss}


def _loss_and_gradient(model, x, y, target, loss_fn):
    with tf.GradientTape() as tape:
        tape.watch(x)
        z = _common.logits(model, x)
        loss = loss_fn(z, y, target)
        total = tf.reduce_sum(loss)
    grad = tape.gradient(total, x)
    return z, loss, tf.where(tf.math.is_finite(grad), grad, tf.zeros_like(grad))


def random_start(x, norm: str, eps: float, seed):
    """APGD's start: x + eps * t / ||t|| (L-inf: t uniform in [-1, 1]; L2: Gaussian),
    clipped to [0, 1]."""
    if norm == "linf":
        t = tf.random.stateless_uniform(tf.shape(x), seed, -1.0, 1.0)
    else:
        t = tf.random.stateless_normal(tf.shape(x), seed)
    scale = _common.per_example(_common.lp_norm(t, norm), x) + 1e-12
    return tf.clip_by_value(x + eps * t / scale, 0.0, 1.0)


def apgd_run(model, x, y, norm: str, eps: float, steps: int = 100, loss: str = "ce",
             target=None, seed=0, rho: float = 0.75) -> ApgdRun:
    """One APGD run from a random start (traceable; runs in or outside ``tf.function``).

    Args:
      model: Keras classifier on [0, 1] images.
      x: float32 images [N, ...] in [0, 1]; y: int32 true labels [N].
      norm: ``"l2"`` or ``"linf"``; eps: the radius in [0, 1] pixel units.
      steps: iterations (gradient evaluations after the start).
      loss: ``"ce"``, ``"dlr"`` or ``"dlr-targeted"`` (which needs ``target`` [N]).
      seed: an int or a [2] int64 stateless seed for the random start.
      rho: a checkpoint halves the step size where the loss rose in at most this
        fraction of the steps since the previous checkpoint.

    Returns:
      An ``ApgdRun``; every image in it is within eps of ``x`` and in [0, 1].
    """
    _common.check(norm, eps)
    if loss not in LOSSES or (loss == "dlr-targeted") != (target is not None):
        raise UserError(f"APGD loss must be one of {sorted(LOSSES)}, with a target exactly "
                        f"for dlr-targeted; got {loss!r} (target given: {target is not None}).")
    if steps < 1:
        raise UserError(f"APGD needs at least one step, got {steps}.")
    loss_fn = LOSSES[loss]
    x, y = tf.cast(x, tf.float32), tf.cast(y, tf.int32)
    target = y if target is None else tf.cast(target, tf.int32)
    flags, windows = checkpoints(steps)
    is_check, window = tf.constant(flags), tf.constant(windows, tf.float32)

    def ball(point):
        return _common.to_ball(x, point, norm, eps)

    def rows(mask, a, b):  # a where the per-example mask holds, else b
        return tf.where(_common.per_example(mask, a), a, b)

    x0 = random_start(x, norm, eps, _common.salted(seed))
    z, loss0, grad0 = _loss_and_gradient(model, x0, y, target, loss_fn)
    fooled0 = _common.predicted(z) != y
    step0 = tf.fill(tf.shape(y), 2.0 * eps)
    no = tf.zeros_like(fooled0)
    # State: i, iterate, previous iterate, gradient, loss at the iterate, best point, its
    # gradient and loss, last misclassified point, fooled, step size, increases since the
    # last check, best loss at the last check, halved at the last check.
    state = (tf.constant(0), x0, x0, grad0, loss0, x0, grad0, loss0, x0, fooled0, step0,
             tf.zeros_like(loss0), loss0, no)

    def body(i, x_k, x_prev, grad, loss_k, x_best, grad_best, loss_best, x_fool, fooled, step,
             increases, best_at_check, halved):
        weight = tf.where(i > 0, MOMENTUM, 1.0)
        z_k = ball(x_k + attacks.steepest_step(grad, norm, _common.per_example(step, x_k)))
        x_new = ball(x_k + weight * (z_k - x_k) + (1.0 - weight) * (x_k - x_prev))
        z, loss_new, grad_new = _loss_and_gradient(model, x_new, y, target, loss_fn)
        wrong = _common.predicted(z) != y
        x_fool, fooled = rows(wrong, x_new, x_fool), fooled | wrong
        increases += tf.cast(loss_new > loss_k, tf.float32)
        better = loss_new > loss_best
        x_best, grad_best = rows(better, x_new, x_best), rows(better, grad_new, grad_best)
        loss_best = tf.where(better, loss_new, loss_best)
        # Checkpoint: halve where the loss rose in at most rho of the window's steps, or
        # where it was not halved last time and the best loss did not improve since.
        halve = is_check[i] & ((increases <= rho * window[i])
                               | (~halved & (best_at_check >= loss_best)))
        x_next, grad_next = rows(halve, x_best, x_new), rows(halve, grad_best, grad_new)
        step = tf.where(halve, step / 2.0, step)
        halved = tf.where(is_check[i], halve, halved)
        best_at_check = tf.where(is_check[i], loss_best, best_at_check)
        increases = tf.where(is_check[i], tf.zeros_like(increases), increases)
        return (i + 1, x_next, x_k, grad_next, loss_new, x_best, grad_best, loss_best, x_fool,
                fooled, step, increases, best_at_check, halved)

    final = tf.while_loop(lambda i, *rest: i < steps, body, state, maximum_iterations=steps)
    x_best, loss_best, x_fool, fooled = final[5], final[7], final[8], final[9]
    x_adv = rows(fooled, x_fool, x)
    return ApgdRun(*(tf.stop_gradient(t) for t in (x_adv, fooled, x_best, loss_best)))


def apgd_ce(model, x, y, norm: str, eps: float, steps: int = 100, restarts: int = 1,
            seed: int = 0, batch_size: int = 256):
    """APGD on the cross-entropy, AutoAttack's first attack (``restarts`` runs, each on the
    points that no earlier run fooled).

    Args:
      model: Keras classifier on [0, 1] images.
      x, y: images [N, ...] in [0, 1] and labels [N] (numpy or tensors).
      norm: ``"l2"`` or ``"linf"``; eps: the radius in [0, 1] pixel units.
      steps: iterations per run; restarts: runs; seed: the random starts' seed.
      batch_size: points per batch.

    Returns:
      float32 numpy images: an adversarial example within eps where one was found, ``x``
      elsewhere (misclassified points are not attacked).
    """
    if restarts < 1:
        raise UserError(f"APGD-CE needs at least one restart, got {restarts}.")
    run = tf.function(lambda xb, yb, _, s: apgd_run(model, xb, yb, norm, eps, steps, "ce",
                                                   seed=s).x_adv,
                      input_signature=_common.signature(x))
    return _common.attack_rounds(model, x, y, norm, eps, batch_size, range(restarts), run, seed,
                                 _common.name_salt("apgd-ce"))


def apgd_t(model, x, y, norm: str, eps: float, steps: int = 100, n_targets: int = 9,
           seed: int = 0, batch_size: int = 256):
    """Targeted APGD on the DLR loss (APGD-T): one run per target class, the classes of
    the 2nd to (n_targets + 1)-th largest clean logits in turn (at most all other classes),
    each on the points that no earlier target fooled. Success is any misclassification.

    Args and returns as ``apgd_ce``, with ``n_targets`` in place of ``restarts``.
    """
    ranks = _common.target_ranks(model, x, n_targets)

    def run(xb, yb, rank, s):
        target = _common.ranked_class(_common.logits(model, xb), rank)
        return apgd_run(model, xb, yb, norm, eps, steps, "dlr-targeted", target, seed=s).x_adv

    run = tf.function(run, input_signature=_common.signature(x))
    return _common.attack_rounds(model, x, y, norm, eps, batch_size, ranks, run, seed,
                                 _common.name_salt("apgd-t"))

