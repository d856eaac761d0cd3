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

import sys
import time
import traceback
from pathlib import Path

from tftransfer import runs
from tftransfer.config import SweepConfig
from tftransfer.errors import UserError
from tftransfer.sweeps import run_dirs, same_config
from tftransfer.sweeps.fingerprint import HASH_COLUMN, fingerprint
# Re-exported: the sweep's public names stay importable from here (tests, commands).
from tftransfer.sweeps.cells import (Cell, cells, parse_shard, select_sources, shard_cells,
                                   transfer_config)
from tftransfer.sweeps.state import (CLAIM_STALE_SECONDS, CLAIMS_DIR, Claim, Heartbeat,
                                    append_row, claim_is_live, claim_next, claim_path,
                                    claimed_elsewhere, finished_keys, read_rows, record_row,
                                    release_claim, results_file)

__all__ = ["CLAIM_STALE_SECONDS", "CLAIMS_DIR", "Cell", "Heartbeat", "append_row", "cells",
           "check_max_runs", "claim_is_live", "claim_path", "finished_keys", "load_targets",
           "parse_shard", "read_rows", "run_sweep", "select_sources", "shard_cells",
           "transfer_config"]


def check_max_runs(max_runs: int | None) -> None:
    """Refuses a ``max_runs`` below 1 (a slice with -1 would silently skip the last cell)."""
    if max_runs is not None and max_runs < 1:
        raise UserError(f"--max-runs must be at least 1, got {max_runs}.")


def run_sweep(sweep: SweepConfig, results_dir, shard: str | None = None,
              max_runs: int | None = None, data_dir=None, download=True,
              save_models: bool = False, cache=None, sources=None) -> dict:
    """Runs the unfinished cells of (a shard of) ``sweep``; see the module docstring.

    Other processes may run the same sweep on ``results_dir`` at the same time: each
    cell is claimed before it runs, and cells finished or claimed by others are skipped.

    ``cache``: a ``finetune.RunCache`` to share with other sweeps in this process (a new
    one when None). ``sources``: run only the cells of these sources (all when None); the
    rows go to the same results file, so later calls fill in the rest of the grid.
    ``max_runs``: stop after this many runs (failed ones included).

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
            claim = claim_next(results_dir, mine, skip=attempted)
            if claim is None:
                break
            attempted.add(claim.cell.key)
            outcome = _run_claimed(sweep, claim, path, cache, data, save_models)
            if outcome == "failed":
                failed.append(claim.cell.key)
            ran += outcome == "ran"
            bar.update()
    finished = finished_keys(results_dir) & {cell.key for cell in mine}
    elsewhere = claimed_elsewhere(results_dir, mine)
    if elsewhere:
        print(f"sweep {sweep.name}: {elsewhere} unfinished cells are running in other "
              f"processes.", file=sys.stderr)
    return {"sweep": sweep.name, "shard": f"{index}/{count}", "cells": len(mine),
            "finished_before": len(done), "ran": ran, "failed": len(failed),
            "remaining": len(mine) - len(finished), "results": str(path),
            "features_computed": cache.computed}


def _run_claimed(sweep: SweepConfig, claim: Claim, path: Path, cache, data: dict,
                 save_models: bool) -> str:
    """Runs a claimed cell, records its row and releases the claim, also when interrupted.

    Returns:
      "ran", "failed", or "duplicate" when another process recorded the cell first.
    """
    cell = claim.cell
    try:
        with Heartbeat(claim.path):
            row = _run_cell(sweep, cell, claim.results_dir, cache, data, save_models)
        if row is None:
            return "failed"
        row = {"run_key": cell.key, "sweep": sweep.name, **row,
               "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        return "ran" if record_row(claim.results_dir, path, cell, row) else "duplicate"
    finally:
        release_claim(claim)


def load_targets(sweep: SweepConfig, todo: list, results_dir: Path, cache, data: dict) -> None:
    """Loads every target of ``todo`` into ``cache`` before any run, so that a data problem
    (not prepared offline, a wrong --data-dir, a misspelled name) stops the sweep with one
    sentence instead of failing each of its cells in turn."""
    first_cell = {}
    for cell in todo:
        first_cell.setdefault(cell.target, cell)
    for cell in first_cell.values():
        cache.target(transfer_config(sweep, cell, results_dir / "runs", **data))


def _run_cell(sweep: SweepConfig, cell: Cell, results_dir: Path, cache, data: dict,
              save_models: bool) -> dict | None:
    """Fine-tunes one cell: its result row, or None (after logging why) when it failed.

    Failures are logged and not raised: one bad cell should not end a long sweep, and
    re-running the sweep retries it.
    """
    from tftransfer import finetune

    try:
        # Checked again now: the directory may have changed since the sweep started.
        run_dir = run_dirs.check_run_dir(results_dir, cell)
        cfg = transfer_config(sweep, cell, run_dir, **data)
        settings = fingerprint(cfg)
        run_dirs.mark(run_dir, cell, settings)
        row = finetune.fine_tune(cfg, cache=cache, save_model=save_models, verbose=False)
        return {**row, "run_dir": runs.checkout_relative(run_dir), HASH_COLUMN: settings.hash}
    except UserError as error:
        # This cell's own problem (N below the target's class count, a source not trained
        # yet): the message says it all, and the other sources' cells may well run.
        print(f"\nrun {cell.key} failed: {error}", file=sys.stderr)
    except Exception:
        print(f"\nrun {cell.key} failed:\n{traceback.format_exc()}", file=sys.stderr)
    return None
