"""Cost of the adversarial train step: PGD-k step time / natural step time, ours vs cleverhans.

For k = 1, 3, 7 PGD steps (L2, eps 0.5 at 32 px, step size min(eps, 2.5 eps / k) so that
cleverhans accepts it), measures in one run the time of one training step of resnet20
(batch 128, float32) with (a) our ``attacks.pgd`` inside ``AdversarialTrainer.train_step``
and (b) the same trainer with cleverhans' ``projected_gradient_descent`` as the inner
maximization, each divided by the time of a natural training step.

    python bench/adversarial_step.py [--arch resnet20] [--steps 10]
"""

import argparse

from common import best_rate, machine_note

import keras
import numpy as np
import tensorflow as tf

from tftransfer import attacks, resnet
from tftransfer.adversarial import AdversarialTrainer
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
    args = parser.parse_args()
    print(machine_note())
    natural = step_seconds(AdversarialTrainer, args.arch, AttackConfig(), args.steps)
    print(f"{args.arch}, batch {BATCH}: natural step {natural * 1000:.0f} ms")
    print(f"{'k':>3} {'ours ms':>9} {'ours/nat':>9} {'cleverhans ms':>14} {'ch/nat':>7} "
          f"{'ours/ch':>8} {'k+1':>4}")
    for k in (1, 3, 7):
        attack = AttackConfig(kind="l2", eps=0.5, steps=k, step_size=min(0.5, 2.5 * 0.5 / k))
        ours = step_seconds(AdversarialTrainer, args.arch, attack, args.steps)
        theirs = step_seconds(CleverhansTrainer, args.arch, attack, args.steps)
        print(f"{k:>3} {ours * 1000:>9.0f} {ours / natural:>9.2f} {theirs * 1000:>14.0f} "
              f"{theirs / natural:>7.2f} {ours / theirs:>8.2f} {k + 1:>4}")


if __name__ == "__main__":
    main()
