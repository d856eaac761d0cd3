"""The replication's real cell mix, timed, and the projected time of a paper-sized grid (issue 24).

In one process with one RunCache (as one long sweep): the natural ``cifar10-resnet20-natural``
source on MNIST, every (N, blocks, epochs) cell kind of the ``replication`` grid
(pipelines/grids/replication.toml: N = 100-3200, head only with 300-2,000 epochs and the last
stage with 30-90 epochs, the curve every 5 epochs on 2,000 test images), each run twice: a first
run (its training images' trunk features, traces) and a second seed (the steady state a sweep
pays for most cells). The projection weights the steady-state times by the grid's own mix of
cells (seeds per N included) and scales it to 14,400 fine-tunes (the paper's count). Then a
cProfile of one last-stage run says where its time goes. ``--precision mixed_bfloat16`` runs
every cell under that Keras policy instead of the grid's float32 (on CPUs with bfloat16
instructions, such as this machine's AVX512_BF16).

    python bench/sweep_projection.py [--data-dir ../shared/tfds] [--profile-n 400]
                                     [--precision float32|mixed_bfloat16|mixed_float16]
"""

import argparse
import cProfile
import collections
import dataclasses
import io
import pstats
import tempfile
import time
from pathlib import Path

from common import machine_note

from tftransfer.sweeps import registry as grid_registry
from tftransfer.sweeps import runner as sweeps
from tftransfer import finetune

PAPER_RUNS = 14_400


def cell_kinds(grid):
    """(N, blocks, epochs) -> how many cells of one source and one target have it."""
    kinds = collections.Counter()
    first = (grid.sources[0], grid.targets[0])
    for cell in sweeps.cells(grid):
        if (cell.source, cell.target) == first:
            kinds[(cell.train_images, cell.unfrozen_blocks, cell.epochs)] += 1
    return kinds


def run_seconds(grid, cell, seed, data_dir, root, cache, precision="float32"):
    cell = dataclasses.replace(cell, seed=seed, source="cifar10-resnet20-natural",
                               target="mnist")
    cfg = sweeps.transfer_config(grid, cell, root / cell.key.replace("|", "__"), data_dir,
                                 download=False)
    cfg = dataclasses.replace(cfg, precision=precision)
    start = time.perf_counter()
    finetune.fine_tune(cfg, cache=cache, save_model=False, verbose=False)
    return time.perf_counter() - start, cfg


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="../shared/tfds")
    parser.add_argument("--profile-n", type=int, default=400)
    parser.add_argument("--precision", default="float32",
                        choices=("float32", "mixed_bfloat16", "mixed_float16"))
    args = parser.parse_args()
    print(machine_note())
    grid = grid_registry.get("replication")
    kinds = cell_kinds(grid)
    cells = {(c.train_images, c.unfrozen_blocks, c.epochs): c for c in sweeps.cells(grid)}
    cache, root = finetune.RunCache(), tempfile.TemporaryDirectory()
    timings = {}
    for kind in sorted(kinds, key=lambda k: (k[1], k[0])):
        first, _ = run_seconds(grid, cells[kind], 100, args.data_dir, Path(root.name), cache,
                               args.precision)
        steady, _ = run_seconds(grid, cells[kind], 101, args.data_dir, Path(root.name), cache,
                                args.precision)
        timings[kind] = (first, steady)
    print("\n| N | blocks | epochs | cells per source and target | first run (s) | next runs (s) |")
    print("|---|---|---|---|---|---|")
    for (n, blocks, epochs), (first, steady) in timings.items():
        print(f"| {n} | {blocks} | {epochs} | {kinds[(n, blocks, epochs)]} | {first:.1f} | "
              f"{steady:.1f} |")
    total_cells = sum(kinds.values())
    per_cell = sum(kinds[k] * timings[k][1] for k in kinds) / total_cells
    head = sum(kinds[k] * timings[k][1] for k in kinds if k[1] == 0)
    stage = sum(kinds[k] * timings[k][1] for k in kinds if k[1] != 0)
    print(f"\nthe replication mix ({total_cells} cells per source and target): "
          f"{per_cell:.1f} s per cell on average; head-only cells take "
          f"{head / (head + stage):.0%} of the time, last-stage cells {stage / (head + stage):.0%}")
    print(f"projected {PAPER_RUNS:,} fine-tunes with this mix ({args.precision}): "
          f"{PAPER_RUNS * per_cell / 3600:.1f} h on this machine (steady state; each source and target adds its first runs once)")
    profile_last_stage(grid, cells, kinds, args, cache, root)


def profile_last_stage(grid, cells, kinds, args, cache, root):
    """cProfile of one steady-state last-stage run: the functions with the most time."""
    kind = next(k for k in kinds if k[0] == args.profile_n and k[1] != 0)
    profiler = cProfile.Profile()
    profiler.enable()
    seconds, _ = run_seconds(grid, cells[kind], 102, args.data_dir, Path(root.name), cache,
                             args.precision)
    profiler.disable()
    stream = io.StringIO()
    pstats.Stats(profiler, stream=stream).sort_stats("cumulative").print_stats(
        r"tftransfer|keras/src/(trainers|models)/|tensorflow/python/(eager/polymorphic|data/ops/ite)",
        25)
    print(f"\nprofile of one last-stage run (N = {kind[0]}, {kind[2]} epochs, {seconds:.1f} s), "
          "by cumulative time:")
    print("\n".join(line for line in stream.getvalue().splitlines()
                    if line.strip() and not line.startswith(("   Ordered", "   List"))))


if __name__ == "__main__":
    main()
