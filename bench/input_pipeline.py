"""Input pipeline vs training: can tf.data feed a resnet20 training step at 32 px?

Measures, in one run, images per second of (a) the training input pipeline alone
(CIFAR-10 from ../shared/tfds, decode-once cache, per-epoch shuffle, pad-and-crop and
flip) and (b) what a natural resnet20 training step consumes (batch 128, float32).
The pipeline must supply at least 3x what training consumes.

    python bench/input_pipeline.py [--data-dir ../shared/tfds]
"""

import argparse

from common import best_rate, machine_note

import keras
import numpy as np
import tensorflow as tf

from tftransfer import data
from tftransfer.models import resnet
from tftransfer.adversarial.train_step import AdversarialTrainer

BATCH = 128


def pipeline_rate(target, images: int) -> float:
    indices = data.select_subset(target.train.labels, images, 0)
    ds = data.training_pipeline(target.train, indices, 32, BATCH, seed=0, epochs=4, flip=True)
    iterator = iter(ds)
    steps = images // BATCH

    def one_epoch():
        for _ in range(steps):
            next(iterator)
    return best_rate(one_epoch, steps * BATCH, repeats=2, warmup=1)  # warm-up fills the cache


def training_rate(steps: int = 20) -> float:
    keras.utils.set_random_seed(0)
    trainer = AdversarialTrainer(resnet.build("resnet20", 10, 32), weight_decay=5e-4)
    trainer.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = tf.random.uniform((BATCH, 32, 32, 3))
    y = tf.constant(np.arange(BATCH) % 10)
    ds = tf.data.Dataset.from_tensors((x, y)).repeat(steps)
    return best_rate(lambda: trainer.fit(ds, epochs=1, verbose=0), steps * BATCH, repeats=2)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="../shared/tfds")
    parser.add_argument("--images", type=int, default=20_000)
    args = parser.parse_args()
    print(machine_note())
    target = data.load("cifar10", args.data_dir, download=False)
    supply = pipeline_rate(target, args.images)
    demand = training_rate()
    print(f"input pipeline:            {supply:9.0f} images/s")
    print(f"resnet20 train step needs: {demand:9.0f} images/s")
    print(f"ratio supply/demand:       {supply / demand:9.1f}x (target >= 3x)")


if __name__ == "__main__":
    main()
