"""AutoAttack's standard ensemble (Croce & Hein, ICML 2020): APGD-CE, APGD-T, FAB-T and
Square in turn, each on the points that every earlier attack left correctly classified,
keeping per point the first (worst-case) adversarial example found."""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import tensorflow as tf

from tftransfer.adversarial.autoattack import _common, apgd, fab, sanity, square
from tftransfer.errors import UserError

STANDARD = ("apgd-ce", "apgd-t", "fab-t", "square")


@dataclasses.dataclass(frozen=True)
class AutoAttackResult:
    """The outcome of ``run_standard`` on N points.

    Attributes:
      clean_accuracy: the fraction of points the model classifies correctly.
      robust_accuracy: the fraction still classified correctly after every attack.
      accuracy_after: attack name -> robust accuracy after that attack (cumulative, in the
        order run; non-increasing).
      correct: [N] bool, classified correctly without attack.
      robust: [N] bool, classified correctly within the eps ball after every attack.
      broken_by: [N] str, the attack whose example fooled the model first, ``"clean"``
        where the clean point is misclassified, ``""`` where the point is robust.
      x_adv: [N, ...] float32, the worst case per point: the first example that fooled the
        model (within eps of x and in [0, 1]), ``x`` itself where none did.
      norm, eps, attacks: the threat model and the attacks, as run.
      flags: AutoAttack's sanity warnings (``sanity``), one sentence each; empty when none
        fired or the checks were not run.
    """

    clean_accuracy: float
    robust_accuracy: float
    accuracy_after: dict
    correct: np.ndarray
    robust: np.ndarray
    broken_by: np.ndarray
    x_adv: np.ndarray
    norm: str
    eps: float
    attacks: tuple
    flags: tuple = ()

    def summary(self) -> dict:
        """The scalar part, as a results row: clean and robust accuracy, and the robust
        accuracy after each attack (``autoattack_after_<name>``)."""
        row = {"clean_accuracy": self.clean_accuracy, "robust_accuracy": self.robust_accuracy,
               "norm": self.norm, "eps": self.eps, "attacks": ",".join(self.attacks),
               "autoattack_flags": list(self.flags)}
        row.update({f"autoattack_after_{name}": value
                    for name, value in self.accuracy_after.items()})
        return row


def _attack(name: str, steps: int, square_queries: int, n_targets: int):
    """``name``'s driver as ``f(model, x, y, norm, eps, seed, batch_size) -> x_adv``; the
    module attribute is looked up at call time (tests may wrap it)."""
    if name == "apgd-ce":
        return lambda m, x, y, norm, eps, seed, bs: apgd.apgd_ce(
            m, x, y, norm, eps, steps=steps, restarts=1, seed=seed, batch_size=bs)
    if name == "apgd-t":
        return lambda m, x, y, norm, eps, seed, bs: apgd.apgd_t(
            m, x, y, norm, eps, steps=steps, n_targets=n_targets, seed=seed, batch_size=bs)
    if name == "fab-t":
        return lambda m, x, y, norm, eps, seed, bs: fab.fab_t(
            m, x, y, norm, eps, steps=steps, n_targets=n_targets, seed=seed, batch_size=bs)
    if name == "square":
        return lambda m, x, y, norm, eps, seed, bs: square.square_attack(
            m, x, y, norm, eps, queries=square_queries, seed=seed, batch_size=bs)
    raise UserError(f"Unknown AutoAttack attack {name!r}; choose from {', '.join(STANDARD)}.")


def run_standard(model, x, y, norm: str, eps: float, seed: int = 0, batch_size: int = 256,
                 attacks=STANDARD, steps: int = 100, square_queries: int = 5000,
                 n_targets: int = 9, log: Callable[[str], None] | None = None,
                 check: bool = True) -> AutoAttackResult:
    """AutoAttack's ``standard`` version for L2 or L-infinity.

    Runs APGD-CE (``steps`` iterations, 1 restart), APGD-T (DLR-targeted, ``n_targets``
    target classes by clean logit rank, ``steps`` iterations each), FAB-T (``n_targets``
    targets, ``steps`` iterations, 1 restart each) and Square (``square_queries`` queries,
    p_init 0.8) in turn. An attack runs only on the points that are still correctly
    classified, so a point misclassified without attack is never attacked, and a point
    keeps the first adversarial example found (the worst case over the ensemble). Every
    example is projected onto the eps ball and [0, 1] and judged by the model's argmax on
    float32 logits, with ``model(x, training=False)`` throughout.

    Args:
      model: Keras classifier on RGB float images in [0, 1] (any dtype policy).
      x: images [N, H, W, C] in [0, 1] (numpy or a tensor); y: integer labels [N].
      norm: ``"l2"`` or ``"linf"``.
      eps: the radius of the ball in [0, 1] pixel units (e.g. 8/255 for L-inf, 0.5 for L2).
      seed: seed of every random draw (APGD's starts, Square's search); the same seed,
        data and batch size give the same result.
      batch_size: points per batch of every attack.
      attacks: the attacks to run, in order (default: the standard four).
      steps: iterations of APGD-CE, of APGD-T per target and of FAB-T per target (100).
      square_queries: Square's query budget (5000).
      n_targets: target classes of APGD-T and FAB-T (9; at most the number of classes - 1).
      log: called with one line after the clean pass and after each attack (None: silent).
      check: run AutoAttack's sanity checks (``sanity``: randomised or probability outputs
        and zero gradients on the first batch, too few classes, Square beating the
        white-box attacks) and return their warnings in ``flags``.

    Returns:
      An ``AutoAttackResult``: clean, per-attack and final robust accuracy, per-point flags
      and the worst-case examples.

    Raises:
      UserError: for another norm, eps <= 0, a batch size < 1, an unknown attack or
        mismatched x and y.
    """
    _common.check(norm, eps, batch_size)
    x, y = _common.as_arrays(x, y)
    attacks = tuple(attacks)
    runners = {name: _attack(name, steps, square_queries, n_targets) for name in attacks}
    predict = _common.predictor(model)
    correct = _common.predict_labels(predict, x, batch_size) == y
    robust = correct.copy()
    broken_by = np.where(correct, "", "clean").astype(object)
    x_adv = x.copy()
    total = max(len(y), 1)
    if log:
        log(f"autoattack {norm} eps={eps:g}: clean accuracy {correct.sum() / total:.2%}")
    flags = (sanity.model_flags(model, x[:batch_size], y[:batch_size], attacks, n_targets)
             if check and len(y) else [])  # no point to look at: nothing to flag
    accuracy_after = {}
    for name in attacks:
        points = np.flatnonzero(robust)
        if points.size:
            found = np.asarray(runners[name](model, x[points], y[points], norm, eps, seed,
                                             batch_size), np.float32)
            found = _common.to_ball(tf.constant(x[points]), tf.constant(found), norm, eps).numpy()
            fooled = _common.predict_labels(predict, found, batch_size) != y[points]
            x_adv[points[fooled]] = found[fooled]
            robust[points[fooled]] = False
            broken_by[points[fooled]] = name
        accuracy_after[name] = float(robust.sum() / total)
        if log:
            log(f"autoattack {norm} eps={eps:g}: robust accuracy after {name} "
                f"{accuracy_after[name]:.2%}")
    if check:
        flags.append(sanity.square_beats_white_box(accuracy_after))
    return AutoAttackResult(
        clean_accuracy=float(correct.sum() / total), robust_accuracy=float(robust.sum() / total),
        accuracy_after=accuracy_after, correct=correct, robust=robust,
        broken_by=broken_by.astype(str), x_adv=x_adv, norm=norm, eps=float(eps),
        attacks=attacks, flags=tuple(flag for flag in flags if flag))
