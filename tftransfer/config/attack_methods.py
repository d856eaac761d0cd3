"""The registry of attack / adversarial-training methods, by name.

An attack has a *norm* (``l2``, ``linf``: the threat model) and a *method* (how the
perturbation is found); they are separate fields of ``config.AttackConfig``. This module
holds what is known about each method without TensorFlow, so that the config can validate
a name and the CLI can list the methods before TensorFlow is imported; ``attacks.py``
registers each method's TensorFlow function under the same name (``attacks.perturb``),
and a test checks that the two agree. Adding a method: one ``Method`` here, one
``@attacks.implements`` function there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from tftransfer.errors import UserError


@dataclass(frozen=True)
class Method:
    """What the toolkit knows about one method.

    Attributes:
      name: the ``--attack-method`` value.
      summary: one line for ``--help``.
      default_step_size: ``(eps, steps) -> step size`` when none is given.
      uses_steps: whether ``AttackConfig.steps`` means anything to it.
      for_evaluation: a stateless perturbation of a batch, usable by ``evaluate``.
      replays_batches: a training procedure that replays each minibatch and carries its
        perturbation between steps (``AdversarialTrainer`` does it; free training).
    """

    name: str
    summary: str
    default_step_size: Callable[[float, int], float]
    uses_steps: bool = True
    for_evaluation: bool = True
    replays_batches: bool = False


PGD = Method(
    "pgd", "projected gradient descent (Madry et al., ICLR 2018): --attack-steps steps of "
           "--attack-step-size (default 2.5 * eps / steps), no random start unless "
           "--random-start",
    lambda eps, steps: 2.5 * eps / steps)
FGSM_RS = Method(
    "fgsm_rs", "FGSM with a random start (Wong, Rice & Kolter, 'Fast is better than free', "
               "ICLR 2020): a uniform random point of the eps ball, one step of "
               "--attack-step-size (default 1.25 * eps), projected and clipped",
    lambda eps, steps: 1.25 * eps, uses_steps=False)
FREE = Method(
    "free", "'free' adversarial training (Shafahi et al., NeurIPS 2019): each minibatch "
            "replayed --free-replays times, one gradient computation per replay updating "
            "both the weights and the perturbation (step --attack-step-size, default eps), "
            "which is carried over between replays and minibatches; training only",
    lambda eps, steps: eps, uses_steps=False, for_evaluation=False, replays_batches=True)

METHODS = {method.name: method for method in (PGD, FGSM_RS, FREE)}


def get(name: str) -> Method:
    """The registered method ``name``.

    Raises:
      UserError: for an unknown name (one sentence listing the known ones).
    """
    if name not in METHODS:
        raise UserError(f"Unknown attack method {name!r}; known methods: "
                        f"{', '.join(METHODS)}.")
    return METHODS[name]


def help_text() -> str:
    """The methods and their summaries, for ``--attack-method``'s help."""
    return "; ".join(f"{m.name}: {m.summary}" for m in METHODS.values())
