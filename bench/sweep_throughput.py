"""Sweep throughput: fine-tuning runs per hour, and the projected time of a 1,000-run grid.

Runs, in one process, a small sweep of the replication's shape (a resnet20 source at
32 px, MNIST, N = 400, 30 epochs, the per-epoch curve every 5 epochs on 2,000 test
images and the final accuracy on all 10,000), head-only and last-stage cells, 3 seeds
each, through ``sweeps.run_sweep`` (one RunCache: data read once, trunk features
computed once, networks traced once and reset per run), and reports runs per hour for
each kind and the projected wall time of a 1,000-run grid with half of each kind. For
comparison it also times last-stage runs whose curve uses the full test set.

    python bench/sweep_throughput.py [--data-dir ../shared/tfds] [--seeds 3]
"""

import argparse
import tempfile
import time
from pathlib import Path

from common import machine_note, random_source

from tftransfer.sweeps import runner as sweeps
from tftransfer import finetune
from tftransfer.config import SweepConfig


def runs_per_hour(source, blocks, seeds, data_dir, results, cache, curve_test_images=2000):
    sweep = SweepConfig(name=f"bench-b{blocks}", sources=(source,), targets=("mnist",),
                        train_images=(400,), unfrozen_blocks=(blocks,), seeds=tuple(seeds),
                        epochs=30, eval_every=5, curve_test_images=curve_test_images,
                        recipe=("head_init=glorot",))
    start = time.perf_counter()
    summary = sweeps.run_sweep(sweep, results, data_dir=data_dir, download=False, cache=cache)
    elapsed = time.perf_counter() - start
    return 3600 * summary["ran"] / elapsed, elapsed / summary["ran"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="../shared/tfds")
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    print(machine_note())
    tmp = Path(tempfile.mkdtemp())
    source = random_source(tmp / "source")
    seeds = range(args.seeds)
    # One RunCache, as in one long sweep. The first sweep of each kind pays for reading
    # MNIST, computing the trunk features of the test set and tracing the network once;
    # the table reports it and the steady state of the following runs (new seeds: new
    # training images, whose features are computed).
    cache = finetune.RunCache()
    later = [s + 100 for s in seeds]
    head_cold = runs_per_hour(source, 0, seeds, args.data_dir, tmp / "cold", cache)
    head = runs_per_hour(source, 0, later, args.data_dir, tmp / "head", cache)
    stage_cold = runs_per_hour(source, 3, seeds, args.data_dir, tmp / "stage-cold", cache)
    stage = runs_per_hour(source, 3, later, args.data_dir, tmp / "stage", cache)
    stage_full = runs_per_hour(source, 3, later, args.data_dir, tmp / "stage-full", cache, None)
    print(f"\n{'runs':<34} {'runs/hour':>10} {'s/run':>7}")
    print(f"{'head only, first (reads data)':<34} {head_cold[0]:>10.0f} {head_cold[1]:>7.1f}")
    print(f"{'head only':<34} {head[0]:>10.0f} {head[1]:>7.1f}")
    print(f"{'last stage, first (test features)':<34} {stage_cold[0]:>10.0f} {stage_cold[1]:>7.1f}")
    print(f"{'last stage (3 blocks)':<34} {stage[0]:>10.0f} {stage[1]:>7.1f}")
    print(f"{'last stage, curve on all 10,000':<34} {stage_full[0]:>10.0f} {stage_full[1]:>7.1f}")
    print(f"curve on 2,000 images: last-stage runs {stage_full[1] / stage[1]:.2f}x faster")
    hours = (500 * head[1] + 500 * stage[1]) / 3600
    print(f"\nprojected 1,000-run grid (500 head-only + 500 last-stage): {hours:.2f} h "
          f"(target <= 3 h)")


if __name__ == "__main__":
    main()
