"""Sweeps: a grid of fine-tuning runs -> one CSV row per finished run, resumable and shardable.

Each cell of a ``SweepConfig`` is one ``transfer.fine_tune`` run. A finished run
appends exactly one row to the shard's results CSV (rewritten atomically, so a
crash never leaves half a row); re-running the sweep skips the cells already in
any results file of the directory (whatever shard layout wrote them) and re-runs
failed or interrupted ones. A failed cell does not stop the others. ``--shard i/n``
takes every n-th cell of the deterministic cell order, so n machines share a grid
without talking to each other; ``report`` merges their files.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import sys
import time
import traceback
from pathlib import Path

from tftransfer import runs
from tftransfer.config import SweepConfig, TransferConfig, apply_overrides
from tftransfer.errors import UserError


@dataclasses.dataclass(frozen=True)
class Cell:
    """One run of a sweep."""

    source: str
    target: str
    train_images: int
    unfrozen_blocks: int
    seed: int
    epochs: int

    @property
    def key(self) -> str:
        """A stable identifier of the cell (the ``run_key`` column)."""
        return (f"{self.target}|{self.source}|n{self.train_images}|b{self.unfrozen_blocks}"
                f"|s{self.seed}|e{self.epochs}")


def cells(sweep: SweepConfig) -> list[Cell]:
    """Every cell of the grid, in a deterministic order (grouped by source and target, so
    consecutive runs share cached features)."""
    grid = []
    for source in sweep.sources:
        for target in sweep.targets:
            for n in sweep.train_images:
                for blocks in sweep.unfrozen_blocks:
                    seeds, epochs = _cell_settings(sweep, n, blocks)
                    grid += [Cell(source, target, n, blocks, s, epochs) for s in seeds]
    return grid


def _cell_settings(sweep: SweepConfig, n: int, blocks: int):
    seeds, epochs = sweep.seeds, sweep.epochs
    for override in sweep.overrides:
        if override.matches(n, blocks):
            seeds = override.seeds if override.seeds is not None else seeds
            epochs = override.epochs if override.epochs is not None else epochs
    return tuple(seeds), epochs


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"i/n"`` -> (i, n) with 1 <= i <= n; None -> (1, 1)."""
    if not text:
        return 1, 1
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise UserError(f"--shard expects i/n (e.g. 2/4), got {text!r}.") from None
    if not 1 <= index <= count:
        raise UserError(f"--shard {text}: i must be between 1 and n.")
    return index, count


def shard_cells(grid: list[Cell], index: int, count: int) -> list[Cell]:
    """The cells of shard ``index`` of ``count`` (every count-th cell, round-robin)."""
    return [cell for position, cell in enumerate(grid) if position % count == index - 1]


def select_sources(grid: list[Cell], sweep: SweepConfig, sources) -> list[Cell]:
    """The cells whose source is in ``sources`` (all cells when None), so a grid can run
    source by source as its models become available; an unknown name is a UserError."""
    if not sources:
        return grid
    unknown = sorted(set(sources) - set(sweep.sources))
    if unknown:
        raise UserError(f"--sources {', '.join(unknown)}: not in sweep {sweep.name!r}, whose "
                        f"sources are {', '.join(sweep.sources)}.")
    return [cell for cell in grid if cell.source in sources]


def results_file(results_dir, index: int, count: int) -> Path:
    """``results.csv``, or ``results.shard-i-of-n.csv`` for a shard."""
    name = "results.csv" if count == 1 else f"results.shard-{index}-of-{count}.csv"
    return Path(results_dir) / name


def read_rows(path) -> list[dict]:
    """The rows of a results CSV ([] when it does not exist)."""
    path = Path(path)
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def finished_keys(results_dir) -> set[str]:
    """The ``run_key`` of every row of every results file in ``results_dir`` (the files
    ``report`` merges, all shards included), so a cell finished under another shard
    layout counts as done."""
    from tftransfer.stats import find_result_files  # pandas/scipy: only once a sweep runs

    try:
        files = find_result_files(results_dir)
    except UserError:  # no directory or no results file yet: nothing is finished
        return set()
    return {row["run_key"] for path in files for row in read_rows(path) if row.get("run_key")}


def append_row(path, row: dict) -> None:
    """Adds ``row`` to the CSV by rewriting it atomically (the columns are the union)."""
    rows = read_rows(path) + [row]
    columns = []
    for r in rows:
        columns += [c for c in r if c not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    runs.write_text_atomic(path, buffer.getvalue())


def transfer_config(sweep: SweepConfig, cell: Cell, run_dir: Path, data_dir=None,
                    download=True) -> TransferConfig:
    """The TransferConfig of one cell (the sweep's recipe assignments applied)."""
    cfg = TransferConfig(target=cell.target, source=cell.source, out=str(run_dir),
                         unfrozen_blocks=cell.unfrozen_blocks, epochs=cell.epochs,
                         eval_every=sweep.eval_every, seed=cell.seed,
                         curve_test_images=sweep.curve_test_images)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(
        cfg.data, dataset=cell.target, data_dir=data_dir, download=download,
        train_images=cell.train_images, test_images=sweep.test_images))
    return apply_overrides(cfg, sweep.recipe)


def check_max_runs(max_runs: int | None) -> None:
    """Refuses a ``max_runs`` below 1 (a slice with -1 would silently skip the last cell)."""
    if max_runs is not None and max_runs < 1:
        raise UserError(f"--max-runs must be at least 1, got {max_runs}.")


def run_sweep(sweep: SweepConfig, results_dir, shard: str | None = None,
              max_runs: int | None = None, data_dir=None, download=True,
              save_models: bool = False, cache=None, sources=None) -> dict:
    """Runs the unfinished cells of (a shard of) ``sweep``; see the module docstring.

    ``cache``: a ``transfer.RunCache`` to share with other sweeps in this process (a new
    one when None). ``sources``: run only the cells of these sources (all when None); the
    rows go to the same results file, so later calls fill in the rest of the grid.

    Returns:
      Counts of cells, finished-before, run now and failed, and the results file.

    Raises:
      UserError: for bad arguments (shard, sources, max_runs), before any cell runs. A
        cell's own UserError is logged and counted as failed instead.
    """
    from tqdm import tqdm

    from tftransfer import transfer

    check_max_runs(max_runs)
    index, count = parse_shard(shard)
    runs.git_commit()  # pinned now, before this sweep's rows make the checkout dirty
    results_dir = Path(results_dir)
    path = results_file(results_dir, index, count)
    mine = select_sources(shard_cells(cells(sweep), index, count), sweep, sources)
    # Rows of other cells (other sources, with --sources) are neither done nor to do here.
    done = finished_keys(results_dir) & {cell.key for cell in mine}
    todo = [cell for cell in mine if cell.key not in done][:max_runs]
    cache = cache or transfer.RunCache()
    failed, ran = [], 0
    print(f"sweep {sweep.name} shard {index}/{count}: {len(mine)} cells, {len(done)} finished "
          f"before, {len(todo)} to run now -> {path}", file=sys.stderr)
    data = dict(data_dir=data_dir, download=download)
    load_targets(sweep, todo, results_dir, cache, data)
    for cell in tqdm(todo, desc=f"sweep {sweep.name}", unit="run", file=sys.stderr):
        row = _run_cell(sweep, cell, results_dir, cache, data, save_models)
        if row is None:
            failed.append(cell.key)
            continue
        append_row(path, {"run_key": cell.key, "sweep": sweep.name, **row,
                          "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S")})
        ran += 1
    return {"sweep": sweep.name, "shard": f"{index}/{count}", "cells": len(mine),
            "finished_before": len(done), "ran": ran, "failed": len(failed),
            "remaining": len(mine) - len(done) - ran, "results": str(path),
            "features_computed": cache.computed}


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
    from tftransfer import transfer

    run_dir = results_dir / "runs" / cell.key.replace("|", "__").replace("/", "_")
    try:
        return transfer.fine_tune(transfer_config(sweep, cell, run_dir, **data),
                                  cache=cache, save_model=save_models, verbose=False)
    except UserError as error:
        # This cell's own problem (N below the target's class count, a source not trained
        # yet): the message says it all, and the other sources' cells may well run.
        print(f"\nrun {cell.key} failed: {error}", file=sys.stderr)
    except Exception:
        print(f"\nrun {cell.key} failed:\n{traceback.format_exc()}", file=sys.stderr)
    return None
