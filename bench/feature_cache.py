"""Feature caching: fine-tuning time with the frozen trunk's features cached vs recomputed.

For head-only (0 blocks) and last-stage (3 blocks) fine-tuning of a resnet20 source at
32 px on MNIST (N = 400, 30 epochs, test accuracy every 5 epochs on 2000 test images),
measures in one run the wall time of ``finetune.fine_tune`` with ``feature_cache=off``
(every epoch runs the whole network) and ``on`` (trunk features computed once), and
``on`` again with the features already in the cache (as in a sweep).

    python bench/feature_cache.py [--data-dir ../shared/tfds]
"""

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

from common import machine_note, random_source

from tftransfer import finetune
from tftransfer.config import DataConfig, TransferConfig


def timed_run(cfg, cache=None):
    start = time.perf_counter()
    row = finetune.fine_tune(cfg, cache=cache, save_model=False, verbose=False)
    return time.perf_counter() - start, row["test_accuracy"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="../shared/tfds")
    parser.add_argument("--train-images", type=int, default=400)
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    print(machine_note())
    tmp = Path(tempfile.mkdtemp())
    source = random_source(tmp / "source")
    base = TransferConfig(target="mnist", source=source, epochs=args.epochs, eval_every=5,
                          head_init="glorot", data=DataConfig(
                              dataset="mnist", data_dir=args.data_dir, download=False,
                              train_images=args.train_images, test_images=2000, augment=False))
    finetune.fine_tune(dataclasses.replace(base, epochs=1, out=str(tmp / "warm")),
                       save_model=False, verbose=False)  # loads MNIST into memory once
    print(f"\nresnet20, MNIST N={args.train_images}, {args.epochs} epochs, 2000 test images")
    print(f"{'blocks':>6} {'uncached s':>11} {'cached s':>9} {'cache warm s':>13} "
          f"{'speed-up':>9} {'warm speed-up':>14} {'acc off/on':>12}")
    for blocks in (0, 3):
        cfg = dataclasses.replace(base, unfrozen_blocks=blocks, out=str(tmp / f"b{blocks}"))
        off, acc_off = timed_run(dataclasses.replace(cfg, feature_cache="off"))
        cache = finetune.RunCache()
        on, acc_on = timed_run(dataclasses.replace(cfg, feature_cache="on"), cache)
        warm, _ = timed_run(dataclasses.replace(cfg, feature_cache="on", seed=1), cache)
        print(f"{blocks:>6} {off:>11.1f} {on:>9.1f} {warm:>13.1f} {off / on:>8.1f}x "
              f"{off / warm:>13.1f}x {acc_off:>6.3f}/{acc_on:.3f}")


if __name__ == "__main__":
    main()
