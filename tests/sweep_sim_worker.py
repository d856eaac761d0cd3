"""One worker of the many-worker sweep simulation (tests/scale_out_test.py).

It runs the sweep runner's claim loop over ``sweeps.state`` (claim the next cell under the
directory's lock, keep the claim fresh with a heartbeat, record the row unless another
process did, release the claim) with a stub cell that sleeps 0.1-1 s instead of
fine-tuning, so that many workers fit on two cores.

    python tests/sweep_sim_worker.py RESULTS_DIR CELLS SHARD
"""

from __future__ import annotations

import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tftransfer.sweeps import state  # noqa: E402
from tftransfer.sweeps.cells import Cell, parse_shard, shard_cells  # noqa: E402

HEARTBEAT_SECONDS = 0.2


def grid(count: int) -> list[Cell]:
    """``count`` stub cells in a fixed order (the order every worker computes alike)."""
    return [Cell("stub-source", "stub-target", 10 * (1 + i % 7), i % 3, i, 1)
            for i in range(count)]


def duration(cell: Cell) -> float:
    """The stub cell's run time: 0.1-1 s, fixed per cell (seeded by its key)."""
    return random.Random(cell.key).uniform(0.1, 1.0)


def stub_cell(cell: Cell) -> dict:
    """Sleeps instead of training; the row a finished run would append."""
    time.sleep(duration(cell))
    return {"run_key": cell.key, "sweep": "simulation", "pid": os.getpid(),
            "finished_at": f"{time.time():.3f}"}


def work(results_dir: Path, count: int, shard: str) -> int:
    """Runs cells of ``shard`` until none is left to claim; how many it recorded."""
    index, shards = parse_shard(shard)
    mine = shard_cells(grid(count), index, shards)
    path = state.results_file(results_dir, index, shards)
    recorded = 0
    while (claim := state.claim_next(results_dir, mine)) is not None:
        try:
            with state.Heartbeat(claim.path, HEARTBEAT_SECONDS):
                row = stub_cell(claim.cell)
            recorded += state.record_row(results_dir, path, claim.cell, row)
        finally:
            state.release_claim(claim)
    return recorded


if __name__ == "__main__":
    work(Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
