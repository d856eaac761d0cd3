"""Sweeps: a grid of fine-tuning runs -> one CSV row per finished run, resumable and shardable.

Each cell of a ``SweepConfig`` is one ``transfer.fine_tune`` run. A finished run
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
for processes on several hosts; ``flock`` works on local disks and NFSv4).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import fcntl
import os
import socket
import sys
import threading
import time
import traceback
import uuid
from pathlib import Path

from tftransfer import runs
from tftransfer.config import SweepConfig, TransferConfig, apply_overrides, apply_recipe
from tftransfer.errors import UserError
from tftransfer.result_files import find_result_files

LOCK_FILE = Path("runs") / ".lock"        # relative to the results directory
CLAIMS_DIR = Path("runs") / ".claims"
HEARTBEAT_SECONDS = 60
# Long enough that a busy machine's late heartbeat is not mistaken for a dead process.
CLAIM_STALE_SECONDS = 15 * 60


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

    @property
    def file_name(self) -> str:
        """The key as a file name (the run directory's and the claim's)."""
        return self.key.replace("|", "__").replace("/", "_")


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
    if sweep.order == "train_images":
        grid.sort(key=lambda cell: cell.train_images)  # stable: the order above within each N
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
    try:
        files = find_result_files(results_dir)
    except UserError:  # no directory or no results file yet: nothing is finished
        return set()
    return {row["run_key"] for path in files for row in read_rows(path) if row.get("run_key")}


@contextlib.contextmanager
def locked(results_dir):
    """Holds the exclusive lock of ``results_dir`` (waiting for it) for the ``with`` body."""
    path = Path(results_dir) / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def append_row(path, row: dict) -> None:
    """Adds ``row`` to the results CSV ``path``, under its directory's lock, so rows that
    concurrent processes append are all kept."""
    with locked(Path(path).parent):
        _write_with_row(path, row)


def _write_with_row(path, row: dict) -> None:
    """Rewrites the CSV atomically with ``row`` added (the columns are the union); the
    caller holds the directory's lock."""
    runs.write_csv_atomic(path, read_rows(path) + [row])


@dataclasses.dataclass(frozen=True)
class Claim:
    """This process's claim of one cell: the cell, its results directory and the token
    written into the marker."""

    cell: Cell
    results_dir: Path
    token: str

    @property
    def path(self) -> Path:
        """The claim marker."""
        return claim_path(self.results_dir, self.cell)


def claim_path(results_dir, cell: Cell) -> Path:
    """The claim marker of ``cell`` in ``results_dir``."""
    return Path(results_dir) / CLAIMS_DIR / f"{cell.file_name}.json"


def claim_next(results_dir, candidates: list[Cell], skip=frozenset()) -> Claim | None:
    """Claims the first cell of ``candidates`` that no results file holds, that is not in
    ``skip`` (keys) and that no live process has claimed; None when there is none.

    The results files are read now, under the directory's lock, so that concurrent
    processes never claim the same cell.
    """
    results_dir = Path(results_dir)
    with locked(results_dir):
        finished = finished_keys(results_dir)
        for cell in candidates:
            if cell.key in finished or cell.key in skip:
                continue
            path = claim_path(results_dir, cell)
            if path.exists() and claim_is_live(path):
                continue
            if path.exists():
                print(f"\nrun {cell.key}: taking over the claim of a stopped process "
                      f"({_describe_claim(path)})", file=sys.stderr)
            token = uuid.uuid4().hex
            runs.write_json(path, {"run_key": cell.key, "pid": os.getpid(),
                                   "host": socket.gethostname(), "token": token,
                                   "claimed_at": time.strftime("%Y-%m-%dT%H:%M:%S")})
            return Claim(cell, results_dir, token)
    return None


def claim_is_live(path) -> bool:
    """Whether the claim marker ``path`` belongs to a process that may still be running:
    its heartbeat is recent and, on this host, its pid is alive. An unreadable marker is
    not live (markers are written atomically, so it cannot be one being written)."""
    path = Path(path)
    try:
        age = time.time() - path.stat().st_mtime
        claim = runs.read_json(path)
        pid, host = int(claim["pid"]), claim["host"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if age > CLAIM_STALE_SECONDS:
        return False
    return host != socket.gethostname() or process_alive(pid)


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host is running (a zombie, killed but not yet
    reaped by its parent, is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # no /proc (macOS): os.kill's answer is all there is
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def release_claim(claim: Claim) -> None:
    """Removes ``claim``'s marker unless another process has taken it over since."""
    with locked(claim.results_dir):
        with contextlib.suppress(OSError, ValueError, KeyError):
            if runs.read_json(claim.path)["token"] == claim.token:
                claim.path.unlink()


def record_row(results_dir, path, cell: Cell, row: dict) -> bool:
    """Appends ``row`` of ``cell`` to the results CSV ``path`` unless a results file of
    the directory already holds the cell (it ran elsewhere after a claim was taken over
    from this process); returns whether it was appended."""
    with locked(results_dir):
        if cell.key in finished_keys(results_dir):
            print(f"\nrun {cell.key}: another process recorded it meanwhile; this run's row "
                  f"is not added.", file=sys.stderr)
            return False
        _write_with_row(path, row)
        return True


def claimed_elsewhere(results_dir, candidates: list[Cell]) -> int:
    """How many unfinished cells of ``candidates`` a live process holds a claim on."""
    results_dir = Path(results_dir)
    finished = finished_keys(results_dir)
    return sum(1 for cell in candidates if cell.key not in finished
               and claim_is_live(claim_path(results_dir, cell)))


def _describe_claim(path: Path) -> str:
    try:
        claim = runs.read_json(path)
        return f"pid {claim['pid']} on {claim['host']}, claimed at {claim['claimed_at']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "unreadable marker"


class Heartbeat:
    """Touches a claim marker every ``interval`` seconds while the ``with`` body runs, so
    that processes on other hosts can tell a live claim from a dead one."""

    def __init__(self, path, interval: float = HEARTBEAT_SECONDS):
        self.path, self.interval = Path(path), interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        self._thread.join()

    def _beat(self):
        while not self._stop.wait(self.interval):
            try:
                os.utime(self.path)
            except FileNotFoundError:  # released, or taken over and finished elsewhere
                return


def transfer_config(sweep: SweepConfig, cell: Cell, run_dir: Path, data_dir=None,
                    download=True) -> TransferConfig:
    """The TransferConfig of one cell: the sweep's preset (a named recipe), then the cell's
    own values, then the sweep's recipe assignments."""
    base = apply_recipe(TransferConfig(target=cell.target), sweep.preset)
    cfg = dataclasses.replace(base, source=cell.source, out=str(run_dir),
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

    Other processes may run the same sweep on ``results_dir`` at the same time: each
    cell is claimed before it runs, and cells finished or claimed by others are skipped.

    ``cache``: a ``transfer.RunCache`` to share with other sweeps in this process (a new
    one when None). ``sources``: run only the cells of these sources (all when None); the
    rows go to the same results file, so later calls fill in the rest of the grid.
    ``max_runs``: stop after this many runs (failed ones included).

    Returns:
      Counts of cells, finished-before, run now, failed and remaining (unfinished at the
      end, including cells still running in other processes), and the results file.

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
    pending = [cell for cell in mine if cell.key not in done][:max_runs]
    cache = cache or transfer.RunCache()
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
    from tftransfer import transfer

    run_dir = results_dir / "runs" / cell.file_name
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
