"""Sweep throughput: fine-tuning runs per hour, and the projected time of a 1,000-run grid.

Runs, in one process, a small sweep of the replication's shape (a resnet20 source at
32 px, MNIST, N = 400, 30 epochs, test accuracy every 5 epochs on the full 10,000-image
test set), head-only and last-stage cells, 3 seeds each, through ``sweeps.run_sweep``
(shared feature cache, data read once), and reports runs per hour for each kind and
the projected wall time of a 1,000-run grid with half of each kind.

    python bench/sweep_throughput.py [--data-dir ../shared/tfds] [--seeds 3]
"""

import argparse
import tempfile
import time
from pathlib import Path

from common import machine_note, random_source

from tftransfer import sweeps
from tftransfer.config import SweepConfig


def runs_per_hour(source, blocks, seeds, data_dir, results):
    sweep = SweepConfig(name=f"bench-b{blocks}", sources=(source,), targets=("mnist",),
                        train_images=(400,), unfrozen_blocks=(blocks,), seeds=tuple(seeds),
                        epochs=30, eval_every=5, recipe=("head_init=glorot",))
    start = time.perf_counter()
    summary = sweeps.run_sweep(sweep, results, data_dir=data_dir, download=False)
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
    # First sweep pays for reading MNIST and computing the trunk features once; the table
    # reports both that sweep and the steady state of the following ones.
    head_cold = runs_per_hour(source, 0, seeds, args.data_dir, tmp / "cold")
    head = runs_per_hour(source, 0, [s + 100 for s in seeds], args.data_dir, tmp / "head")
    stage = runs_per_hour(source, 3, seeds, args.data_dir, tmp / "stage")
    print(f"\n{'runs':<34} {'runs/hour':>10} {'s/run':>7}")
    print(f"{'head only, first (reads data)':<34} {head_cold[0]:>10.0f} {head_cold[1]:>7.1f}")
    print(f"{'head only':<34} {head[0]:>10.0f} {head[1]:>7.1f}")
    print(f"{'last stage (3 blocks)':<34} {stage[0]:>10.0f} {stage[1]:>7.1f}")
    hours = (500 * head[1] + 500 * stage[1]) / 3600
    print(f"\nprojected 1,000-run grid (500 head-only + 500 last-stage): {hours:.2f} h "
          f"(target <= 3 h)")


if __name__ == "__main__":
    main()
