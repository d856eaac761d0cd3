"""Cost of the adversarial train step: PGD-k, FGSM-RS and free step time / natural step time.

For k = 1, 3, 7 PGD steps (L2, eps 0.5 at 32 px, step size min(eps, 2.5 eps / k) so that
cleverhans accepts it), measures in one run the time of one training step of resnet20
(batch 128, float32) with (a) our ``attacks.pgd`` inside ``AdversarialTrainer.train_step``
and (b) the same trainer with cleverhans' ``projected_gradient_descent`` as the inner
maximization, each divided by the time of a natural training step.

In the same run, the cheaper methods of issue 24 (same trainer, L2 eps 0.5, their default
step sizes): FGSM with a random start (``--attack-method fgsm_rs``: one attack step, then the
weight step) and free training (``--attack-method free``: one gradient computation per
optimizer step, which updates the weights and the carried perturbation; each minibatch is
replayed m times). Per optimizer step, and per epoch: an FGSM-RS or PGD epoch is one step per
minibatch; free training's ``epochs`` count epoch-equivalents (E epochs = E / m passes over
the data, each minibatch m times), so an epoch-equivalent is also one step per minibatch and
costs the same ratio, and a pass over the data costs m of them. Early stopping's PGD check
(``--early-stop``: PGD-10 on 512 held-out images per epoch) is not included.

    python bench/adversarial_step.py [--arch resnet20] [--steps 10] [--k 1 3 7] [--free-replays 4]
"""

import argparse

from common import best_rate, machine_note

import keras
import numpy as np
import tensorflow as tf

from tftransfer.adversarial import attacks
from tftransfer.models import resnet
from tftransfer.adversarial.train_step import AdversarialTrainer
from tftransfer.config import AttackConfig

BATCH = 128


class CleverhansTrainer(AdversarialTrainer):
    """The same train step with cleverhans' PGD as the inner maximization."""

    def _training_inputs(self, x, y):
        return attacks.cleverhans_pgd(self.classifier, x, y, self.attack)


def step_seconds(trainer_class, arch, attack, steps):
    keras.utils.set_random_seed(0)
    trainer = trainer_class(resnet.build(arch, 10, 32), attack=attack)
    trainer.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = tf.random.uniform((BATCH, 32, 32, 3), seed=1)
    y = tf.constant(np.arange(BATCH) % 10)
    ds = tf.data.Dataset.from_tensors((x, y)).repeat(steps)
    return 1.0 / best_rate(lambda: trainer.fit(ds, epochs=1, verbose=0), steps, repeats=3)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet20")
    parser.add_argument("--steps", type=int, default=10, help="train steps per timing")
    parser.add_argument("--k", type=int, nargs="+", default=[1, 3, 7],
                        help="PGD steps per training step to time (ours and cleverhans')")
    parser.add_argument("--free-replays", type=int, default=4,
                        help="free training's m (replays per minibatch; results/fast-"
                             "adversarial uses 4)")
    args = parser.parse_args()
    print(machine_note())
    natural = step_seconds(AdversarialTrainer, args.arch, AttackConfig(), args.steps)
    print(f"{args.arch}, batch {BATCH}: natural step {natural * 1000:.0f} ms")
    print(f"{'k':>3} {'ours ms':>9} {'ours/nat':>9} {'cleverhans ms':>14} {'ch/nat':>7} "
          f"{'ours/ch':>8} {'k+1':>4}")
    pgd = {}
    for k in args.k:
        attack = AttackConfig(norm="l2", eps=0.5, steps=k, step_size=min(0.5, 2.5 * 0.5 / k))
        pgd[k] = ours = step_seconds(AdversarialTrainer, args.arch, attack, args.steps)
        theirs = step_seconds(CleverhansTrainer, args.arch, attack, args.steps)
        print(f"{k:>3} {ours * 1000:>9.0f} {ours / natural:>9.2f} {theirs * 1000:>14.0f} "
              f"{theirs / natural:>7.2f} {ours / theirs:>8.2f} {k + 1:>4}")
    fast_methods(args, natural, pgd)


def fast_methods(args, natural, pgd):
    """FGSM-RS and free beside the natural (and PGD-k, ours) step of the same run."""
    m = args.free_replays
    fgsm = step_seconds(AdversarialTrainer, args.arch,
                        AttackConfig(norm="l2", eps=0.5, method="fgsm_rs"), args.steps)
    # One step of free training is one replay; the benchmark's batch is the same every step,
    # as a replayed minibatch is.
    free = step_seconds(AdversarialTrainer, args.arch,
                        AttackConfig(norm="l2", eps=0.5, method="free"), args.steps)
    columns = "".join(f" {f'/ PGD-{k}':>8}" for k in pgd)
    print(f"\n{'method':<21} {'step ms':>8} {'step/nat':>9} {'epoch/nat':>10}{columns}")
    # (label, seconds of one optimizer step or None, seconds of one epoch / epoch-equivalent
    # in units of steps: one step per minibatch, a free pass m of them)
    rows = [("natural", natural, natural), ("fgsm_rs", fgsm, fgsm),
            (f"free (m={m})", free, free), (f"free, a pass (m={m})", None, m * free)]
    for label, step, epoch in rows:
        step_text = (f"{step * 1000:>8.0f} {step / natural:>9.2f}" if step is not None
                     else f"{'-':>8} {'-':>9}")
        ratios = "".join(f" {epoch / seconds:>8.2f}" for seconds in pgd.values())
        print(f"{label:<21} {step_text} {epoch / natural:>10.2f}{ratios}")
    print("epoch/nat: one epoch (free: one epoch-equivalent; a pass: m of them) over a natural "
          "epoch; / PGD-k: over a PGD-k epoch (ours), all one optimizer step per minibatch")


if __name__ == "__main__":
    main()
