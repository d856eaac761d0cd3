"""The photo path's costs at 224 px: ResNet-50 fine-tuning and PGD-3 training, per precision.

Measured in one run, on random weights and random images (speed does not depend on either):

- ``features``: the frozen trunk's forward pass (what the feature cache costs once per image,
  and all a head-only run pays per image beyond a Dense layer);
- ``layer4``: one training step with layer4 and the head trainable (the rest frozen, BatchNorm
  of frozen layers in inference mode), what a last-stage fine-tune pays per image and epoch;
- ``pgd3``: one PGD-3 L2 eps 3 adversarial training step of the whole network (the paper's
  source training), images per second.

Each at float32 and at the mixed policy of the device (mixed_float16 on a GPU, mixed_bfloat16 on
a CPU), printed as one table with the mixed/float32 ratio.

    python bench/photo_step.py [--batch 64] [--steps 5] [--image-size 224]
"""

import argparse

from common import best_rate, machine_note

import keras
import numpy as np
import tensorflow as tf

from tftransfer.models import resnet
from tftransfer.training import runtime
from tftransfer.adversarial.train_step import AdversarialTrainer
from tftransfer.config import AttackConfig

CLASSES = 102  # Flowers-102


def _network(image_size: int) -> keras.Model:
    keras.utils.set_random_seed(0)
    return resnet.build("resnet50", CLASSES, image_size)


def _batches(args):
    x = tf.random.uniform((args.batch, args.image_size, args.image_size, 3), seed=1)
    y = tf.constant(np.arange(args.batch) % CLASSES)
    return x, tf.data.Dataset.from_tensors((x, y)).repeat(args.steps)


def features_rate(args) -> float:
    """Images/s of the frozen trunk's forward pass (inference mode, compiled)."""
    model = _network(args.image_size)
    trunk = keras.Model(model.input, model.get_layer("avgpool").output)
    x, _ = _batches(args)
    forward = tf.function(lambda images: trunk(images, training=False), jit_compile=False)
    return best_rate(lambda: [forward(x).numpy() for _ in range(args.steps)],
                     args.batch * args.steps)


def layer4_rate(args) -> float:
    """Images/s of a training step with only layer4 and fc trainable."""
    model = _network(args.image_size)
    for layer in model.layers:
        layer.trainable = layer.name.startswith(("layer4.", "fc"))
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    _, ds = _batches(args)
    return best_rate(lambda: model.fit(ds, epochs=1, verbose=0, shuffle=False), args.batch * args.steps)


def pgd3_rate(args) -> float:
    """Images/s of a PGD-3 (L2, eps 3, step 2.5 eps / 3) adversarial training step."""
    trainer = AdversarialTrainer(_network(args.image_size),
                                 attack=AttackConfig(kind="l2", eps=3.0, steps=3))
    trainer.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    _, ds = _batches(args)
    return best_rate(lambda: trainer.fit(ds, epochs=1, verbose=0, shuffle=False), args.batch * args.steps)


PHASES = {"features": features_rate, "layer4": layer4_rate, "pgd3": pgd3_rate}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64, help="images per step (default: 64)")
    parser.add_argument("--steps", type=int, default=5, help="steps per timing (default: 5)")
    parser.add_argument("--image-size", type=int, default=224, help="pixels (default: 224)")
    parser.add_argument("--phases", default=",".join(PHASES),
                        help=f"comma-separated subset of {', '.join(PHASES)} (default: all)")
    args = parser.parse_args()
    mixed = "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16"
    device = "GPU" if mixed == "mixed_float16" else "CPU"
    print(machine_note())
    print(f"ResNet-50, {args.image_size} px, batch {args.batch}, {args.steps} steps per timing, "
          f"best of 3, {device}")
    print(f"| phase | float32 img/s | {mixed} img/s | mixed / float32 |")
    print("|---|---|---|---|")
    for name in args.phases.split(","):
        rates = {}
        for precision in ("float32", mixed):
            with runtime.precision_policy(precision):
                rates[precision] = PHASES[name](args)
        print(f"| {name} | {rates['float32']:.1f} | {rates[mixed]:.1f} | "
              f"{rates[mixed] / rates['float32']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
