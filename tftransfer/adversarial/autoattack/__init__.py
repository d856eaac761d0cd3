"""AutoAttack (Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble
of diverse parameter-free attacks", ICML 2020) in TensorFlow: the ``standard`` version for
L2 and L-infinity.

    from tftransfer.adversarial import autoattack
    result = autoattack.run_standard(model, x, y, norm="linf", eps=8 / 255, seed=0)
    result.clean_accuracy, result.accuracy_after, result.robust_accuracy, result.robust

``run_standard`` runs, each on the points still correctly classified:

- APGD-CE: Auto-PGD on the cross-entropy, 100 iterations, 1 restart (``apgd.py``);
- APGD-T: Auto-PGD on the targeted DLR loss, 9 target classes, 100 iterations each;
- FAB-T: the targeted fast adaptive boundary attack (Croce & Hein, "Minimally distorted
  adversarial examples with a fast adaptive boundary attack", ICML 2020), 9 targets,
  100 iterations, 1 restart each (``fab.py``);
- Square: the Square Attack (Andriushchenko et al., ECCV 2020), 5,000 queries,
  p_init 0.8 (``square.py``).

The conventions are the toolkit's (``attacks.py``): RGB float32 images in [0, 1], eps in
that pixel space, ``model(x, training=False)`` and losses on float32 logits (also for a
mixed-precision model), every candidate projected onto the eps ball and clipped to [0, 1].
Random draws are stateless and seeded. cleverhans 4.0.0 implements none of these four
attacks (its TF2 attacks are FGM, PGD/BIM, MIM, Carlini-Wagner L2 and SPSA), so all four
are written here from the papers; github.com/fra31/auto-attack (PyTorch) was read as the
reference for the schedules and budgets.

Every run also checks AutoAttack's sanity flags (``sanity.py``: randomised or probability
outputs, zero gradients, too few classes, Square beating the white-box attacks) and reports
them in ``AutoAttackResult.flags`` / ``autoattack_flags``.
"""

from tftransfer.adversarial.autoattack import sanity
from tftransfer.adversarial.autoattack.apgd import apgd_ce, apgd_run, apgd_t
from tftransfer.adversarial.autoattack.ensemble import STANDARD, AutoAttackResult, run_standard
from tftransfer.adversarial.autoattack.fab import fab_t, fab_targeted_run
from tftransfer.adversarial.autoattack.square import square_attack, square_run

__all__ = ["STANDARD", "AutoAttackResult", "run_standard", "apgd_ce", "apgd_t", "apgd_run",
           "fab_t", "fab_targeted_run", "sanity", "square_attack", "square_run"]
