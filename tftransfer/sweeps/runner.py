"""Sweeps: a grid of fine-tuning runs -> one CSV row per finished run, resumable and shardable.

Each cell of a ``SweepConfig`` is one ``finetune.fine_tune`` run. A finished run
appends exactly one row to the shard's results CSV (rewritten atomically, so a
crash never leaves half a row); re-running the sweep skips the cells already in
any results file of the directory (whatever shard layout wrote them) and re-runs
failed or interrupted ones. A failed cell does not stop the others. ``--shard i/n``
takes every n-th cell of the deterministic cell order, so n machines share a grid
without talking to each other; ``report`` merges their files.

Any number of processes may work on one results directory at once (a second worker
on a cluster, a rerun while the first is still going, shards or ``--sources`` runs
side by side), and each cell still runs once and every row is kept:

- One exclusive lock per results directory (``fcntl.flock`` on ``runs/.lock``) is
  held around every read-modify-write of the directory's state: choosing and claiming
  the next cell, and appending a row. It is held for milliseconds, never during a run,
  and the kernel drops it when its process dies, so a kill -9 cannot leave it stuck.
- A cell is claimed before it runs by a marker ``runs/.claims/<cell>.json`` naming
  the process (pid, host, start time). While the cell runs, a heartbeat thread touches
  the marker every ``HEARTBEAT_SECONDS``. A claim is taken over when its process is
  dead on this host, or when its heartbeat is older than ``CLAIM_STALE_SECONDS`` (a
  process on another host, killed or cut off), so a killed worker's cells are not lost.
- The next cell is chosen under the lock from the results files as they are now, not
  from a list fixed at start, so cells finished or claimed by others are skipped.
  A row is appended only when no results file holds the cell yet (a claim taken over
  from a process that was merely stalled must not give a second row).

The seeds of one cell train together (``sweeps.cell_runs``, up to ``seed_batch`` at once,
each seed's row the one it gets alone) where its runs allow: the first cell claimed as
above, then, once its seeds are known to train together, its other unfinished seeds that
no live process holds, all claimed before any of them trains; each row is then recorded,
and each claim released, as a single run's.

The lock and the claims sit in the results directory itself (a shared file system
for processes on several hosts; ``flock`` works on local disks and NFSv4). The grid is
``sweeps.cells``; the rows, the lock and the claims are ``sweeps.state``; this module runs
the cells.

Before any run, a rerun is refused when the rows it would add to were made with other
settings (``sweeps.same_config``: each row records its cell's ``config_hash``), and when a run
directory is a link, lies outside the results folder or holds another cell's run
(``sweeps.run_dirs``).
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path

from tftransfer import runs
from tftransfer.config import SweepConfig
from tftransfer.errors import UserError
from tftransfer.sweeps import run_dirs, same_config
from tftransfer.sweeps.cell_runs import DEFAULT_SEED_BATCH, SeedBatching, run_cell
# Re-exported: the sweep's public names stay importable from here (tests, commands).
from tftransfer.sweeps.cells import (Cell, cells, parse_shard, select_sources, shard_cells,
                                   transfer_config)
from tftransfer.sweeps.state import (CLAIM_STALE_SECONDS, CLAIMS_DIR, Claim, Heartbeat,
                                    append_row, claim_cells, claim_is_live, claim_next,
                                    claim_path,
                                    claimed_elsewhere, finished_keys, read_rows, record_row,
                                    release_claim, results_file)

__all__ = ["CLAIM_STALE_SECONDS", "CLAIMS_DIR", "Cell", "DEFAULT_SEED_BATCH", "Heartbeat",
           "append_row", "cells",
           "check_max_runs", "claim_is_live", "claim_path", "finished_keys", "load_targets",
           "parse_shard", "read_rows", "run_sweep", "select_sources", "shard_cells",
           "transfer_config"]


def check_max_runs(max_runs: int | None) -> None:
    """Refuses a ``max_runs`` below 1 (a slice with -1 would silently skip the last cell)."""
    if max_runs is not None and max_runs < 1:
        raise UserError(f"--max-runs must be at least 1, got {max_runs}.")


def run_sweep(sweep: SweepConfig, results_dir, shard: str | None = None,
              max_runs: int | None = None, data_dir=None, download=True,
              save_models: bool = False, cache=None, sources=None,
              seed_batch: int = 1) -> dict:
    """Runs the unfinished cells of (a shard of) ``sweep``; see the module docstring.

    Other processes may run the same sweep on ``results_dir`` at the same time: each
    cell is claimed before it runs, and cells finished or claimed by others are skipped.

    ``cache``: a ``finetune.RunCache`` to share with other sweeps in this process (a new
    one when None). ``sources``: run only the cells of these sources (all when None); the
    rows go to the same results file, so later calls fill in the rest of the grid.
    ``max_runs``: stop after this many runs (failed ones included). ``seed_batch``: train up
    to this many seeds of a cell together where its runs allow (1: one run at a time; the
    ``sweep`` command's default is ``DEFAULT_SEED_BATCH``).

    Returns:
      Counts of cells, finished-before, run now, failed and remaining (unfinished at the
      end, including cells still running in other processes), and the results file.

    Raises:
      UserError: for bad arguments (shard, sources, max_runs), a grid of too many cells,
        rows made with other settings (``same_config``) or a run directory a run must not
        replace (``run_dirs``), before any cell runs. A cell's own UserError is logged and
        counted as failed instead.
    """
    from tqdm import tqdm

    check_max_runs(max_runs)
    batching = SeedBatching(sweep, seed_batch)
    index, count = parse_shard(shard)
    runs.git_commit()  # pinned now, before this sweep's rows make the checkout dirty
    results_dir = Path(results_dir)
    path = results_file(results_dir, index, count)
    grid = cells(sweep)
    mine = select_sources(shard_cells(grid, index, count), sweep, sources)
    same_config.check(sweep, results_dir, grid)
    # Rows of other cells (other sources, with --sources) are neither done nor to do here.
    done = finished_keys(results_dir) & {cell.key for cell in mine}
    unfinished = [cell for cell in mine if cell.key not in done]
    run_dirs.check_run_dirs(results_dir, unfinished)
    pending = unfinished[:max_runs]
    from tftransfer import finetune  # TensorFlow: only now, so a refusal above is quick

    cache = cache or finetune.RunCache()
    print(f"sweep {sweep.name} shard {index}/{count}: {len(mine)} cells, {len(done)} finished "
          f"before, up to {len(pending)} to run now -> {path}", file=sys.stderr)
    data = dict(data_dir=data_dir, download=download)
    load_targets(sweep, pending, results_dir, cache, data)
    attempted, failed, ran = set(), [], 0
    with tqdm(total=len(pending), desc=f"sweep {sweep.name}", unit="run",
              file=sys.stderr) as bar:
        while max_runs is None or len(attempted) < max_runs:
            claims = _claim(batching, results_dir, mine, attempted, max_runs, cache, data)
            if not claims:
                break
            attempted.update(claim.cell.key for claim in claims)
            outcomes = _run_claimed(batching, claims, path, cache, data, save_models)
            for claim, outcome in zip(claims, outcomes):
                if outcome == "failed":
                    failed.append(claim.cell.key)
                ran += outcome == "ran"
            bar.update(len(claims))
    finished = finished_keys(results_dir) & {cell.key for cell in mine}
    elsewhere = claimed_elsewhere(results_dir, mine)
    if elsewhere:
        print(f"sweep {sweep.name}: {elsewhere} unfinished cells are running in other "
              f"processes.", file=sys.stderr)
    return {"sweep": sweep.name, "shard": f"{index}/{count}", "cells": len(mine),
            "finished_before": len(done), "ran": ran, "failed": len(failed),
            "remaining": len(mine) - len(finished), "results": str(path),
            "features_computed": cache.computed}


def _claim(batching: SeedBatching, results_dir: Path, mine: list, attempted: set,
           max_runs: int | None, cache, data: dict) -> list[Claim]:
    """The next cell's claim, and those of its other seeds that train with it (as many as
    ``batching`` and ``max_runs`` allow); [] when no cell is left to claim."""
    claim = claim_next(results_dir, mine, skip=attempted)
    if claim is None:
        return []
    room = batching.size - 1 if max_runs is None else min(batching.size,
                                                            max_runs - len(attempted)) - 1
    if room < 1:
        return [claim]
    others = batching.companions(claim.cell, mine, results_dir, cache, data)
    return [claim] + claim_cells(results_dir, others, attempted, limit=room)


def _run_claimed(batching: SeedBatching, claims: list[Claim], path: Path, cache, data: dict,
                 save_models: bool) -> list[str]:
    """Runs claimed cells (the seeds of one cell together when there are several), records
    their rows and releases the claims, also when interrupted.

    Returns:
      Per claim: "ran", "failed", or "duplicate" when another process recorded it first.
    """
    sweep, results_dir = batching.sweep, claims[0].results_dir
    try:
        with contextlib.ExitStack() as beating:
            for claim in claims:
                beating.enter_context(Heartbeat(claim.path))
            cells = [claim.cell for claim in claims]
            rows = (batching.run(cells, results_dir, cache, data, save_models) if len(cells) > 1
                    else [run_cell(sweep, cells[0], results_dir, cache, data, save_models)])
        return [_record(sweep, claim, path, row) for claim, row in zip(claims, rows)]
    finally:
        for claim in claims:
            release_claim(claim)


def _record(sweep: SweepConfig, claim: Claim, path: Path, row: dict | None) -> str:
    """Appends a finished cell's row (``state.record_row``); "ran", "failed" (no row) or
    "duplicate"."""
    if row is None:
        return "failed"
    row = {"run_key": claim.cell.key, "sweep": sweep.name, **row,
           "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    return "ran" if record_row(claim.results_dir, path, claim.cell, row) else "duplicate"


def load_targets(sweep: SweepConfig, todo: list, results_dir: Path, cache, data: dict) -> None:
    """Loads every target of ``todo`` into ``cache`` before any run, so that a data problem
    (not prepared offline, a wrong --data-dir, a misspelled name) stops the sweep with one
    sentence instead of failing each of its cells in turn."""
    first_cell = {}
    for cell in todo:
        first_cell.setdefault(cell.target, cell)
    for cell in first_cell.values():
        cache.target(transfer_config(sweep, cell, results_dir / "runs", **data))
