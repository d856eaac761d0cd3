"""Running claimed sweep cells: one at a time (``finetune.fine_tune``), or the seeds of one
cell together (``finetune.fine_tune_seeds``), each seed's row the one its single run gives.

A cell's failure is logged and not raised: one bad cell should not end a long sweep, and
re-running the sweep retries it. The seeds of a cell train together where ``SeedBatching``
finds that they can (cached trunk features, the compiled loop); otherwise, and when training
them together fails as a whole, they run one by one, which is what ``--seed-batch 1`` asks
for every cell.
"""

from __future__ import annotations

import dataclasses
import sys
import traceback
from pathlib import Path

from tftransfer import runs
from tftransfer.config import SweepConfig
from tftransfer.errors import UserError
from tftransfer.sweeps import run_dirs
from tftransfer.sweeps.cells import Cell, transfer_config
from tftransfer.sweeps.fingerprint import HASH_COLUMN, fingerprint

# Seeds of one cell trained in one call by default (``sweep --seed-batch``): the replication
# grid's small-N cells have 5 seeds.
DEFAULT_SEED_BATCH = 5


def run_cell(sweep: SweepConfig, cell: Cell, results_dir: Path, cache, data: dict,
             save_models: bool) -> dict | None:
    """Fine-tunes one cell: its result row, or None (after logging why) when it failed."""
    from tftransfer import finetune

    try:
        cfg, run_dir, settings = _prepare(sweep, cell, results_dir, data)
        row = finetune.fine_tune(cfg, cache=cache, save_model=save_models, verbose=False)
        return _cell_row(row, run_dir, settings)
    except Exception as error:  # logged: the other cells may well run
        _log_failure(cell, error)
    return None


class SeedBatching:
    """Whether and how the seeds of a sweep's cells train together: at most ``size`` at
    once (1: never), refused cells named once per reason on stderr, and the networks that
    groups of seeds reuse (``finetune.SeedNetworks``)."""

    def __init__(self, sweep: SweepConfig, size: int):
        if size < 1:
            raise UserError(f"--seed-batch must be at least 1, got {size}.")
        self.sweep, self.size = sweep, size
        self.networks = None
        self._refusals: dict[Cell, str | None] = {}
        self._said: set[str] = set()

    def companions(self, cell: Cell, candidates: list[Cell], results_dir: Path, cache,
                   data: dict) -> list[Cell]:
        """The cells of ``candidates`` that may train together with ``cell``: its other
        seeds, when its seeds can train together, in grid order ([] otherwise)."""
        if self.size < 2 or self._refusal(cell, results_dir, cache, data):
            return []
        group = _seedless(cell)
        return [other for other in candidates
                if other.key != cell.key and _seedless(other) == group]

    def run(self, cells: list[Cell], results_dir: Path, cache, data: dict,
            save_models: bool) -> list[dict | None]:
        """Fine-tunes the seeds ``cells`` of one cell together: each one's result row, or
        None (after logging why) when it failed; one by one if training them together
        failed as a whole."""
        from tftransfer import finetune

        prepared = {}
        for cell in cells:
            try:
                prepared[cell] = _prepare(self.sweep, cell, results_dir, data)
            except Exception as error:  # this cell's own problem; its seeds still train
                _log_failure(cell, error)
        if len(prepared) < 2:
            return [run_cell(self.sweep, cell, results_dir, cache, data, save_models)
                    if cell in prepared else None for cell in cells]
        if self.networks is None:
            self.networks = finetune.SeedNetworks()
            print(f"\nsweep {self.sweep.name}: the seeds of a cell train together, up to "
                  f"{self.size} at once (--seed-batch 1: one at a time).", file=sys.stderr)
        try:
            outcomes = finetune.fine_tune_seeds(
                [cfg for cfg, _, _ in prepared.values()], cache=cache, save_model=save_models,
                verbose=False, networks=self.networks, raise_errors=False)
        except Exception as error:
            print(f"\nsweep {self.sweep.name}: training seeds {[c.seed for c in prepared]} of "
                  f"{_seedless(cells[0]).key} together failed ({error}); running them one "
                  f"at a time.", file=sys.stderr)
            return [run_cell(self.sweep, cell, results_dir, cache, data, save_models)
                    if cell in prepared else None for cell in cells]
        rows = dict(zip(prepared, outcomes))
        return [self._row(cell, rows[cell], prepared[cell]) if cell in rows else None
                for cell in cells]

    def _row(self, cell: Cell, outcome, prepared: tuple) -> dict | None:
        if isinstance(outcome, Exception):
            _log_failure(cell, outcome)
            return None
        _, run_dir, settings = prepared
        return _cell_row(outcome, run_dir, settings)

    def _refusal(self, cell: Cell, results_dir: Path, cache, data: dict) -> str | None:
        """Why ``cell``'s seeds run one by one (said once per reason), or None."""
        from tftransfer import finetune

        group = _seedless(cell)
        if group not in self._refusals:
            try:
                cfg = transfer_config(self.sweep, cell, results_dir / run_dirs.RUNS_DIR, **data)
                self._refusals[group] = finetune.batch_refusal(cfg, cache)
            except Exception as error:  # the cell's own run says it best
                self._refusals[group] = f"its configuration could not be checked ({error})"
        reason = self._refusals[group]
        if reason and reason not in self._said:
            self._said.add(reason)
            print(f"\nsweep {self.sweep.name}: cells like {group.key} run one seed at a "
                  f"time: {reason}.", file=sys.stderr)
        return reason


def _seedless(cell: Cell) -> Cell:
    """``cell`` with seed 0: the same for every seed of one cell."""
    return dataclasses.replace(cell, seed=0)


def _prepare(sweep: SweepConfig, cell: Cell, results_dir: Path, data: dict) -> tuple:
    """(config, run directory, fingerprint) of a cell about to run, its run directory
    checked again now (it may have changed since the sweep started) and marked."""
    run_dir = run_dirs.check_run_dir(results_dir, cell)
    cfg = transfer_config(sweep, cell, run_dir, **data)
    settings = fingerprint(cfg)
    run_dirs.mark(run_dir, cell, settings)
    return cfg, run_dir, settings


def _cell_row(row: dict, run_dir: Path, settings) -> dict:
    return {**row, "run_dir": runs.checkout_relative(run_dir), HASH_COLUMN: settings.hash}


def _log_failure(cell: Cell, error: Exception) -> None:
    """Logs a failed cell: a UserError (N below the target's class count, a source not
    trained yet) in its one sentence, anything else with its traceback."""
    if isinstance(error, UserError):
        print(f"\nrun {cell.key} failed: {error}", file=sys.stderr)
    else:
        trace = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        print(f"\nrun {cell.key} failed:\n{trace}", file=sys.stderr)
