"""A rerun into a results folder must use the settings its rows were recorded with.

A rerun skips the cells that already have a row; when the grid has changed since (another
recipe, preset, ``test_images``, ``eval_every``, curve), its new rows would land beside rows
made with other settings, and ``report`` would average them into one cell. ``check`` refuses
that before any run, naming the fields that differ. Rows recorded before fingerprints
existed have no ``config_hash``: their settings are unknown and taken as compatible.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from tftransfer.config import SweepConfig
from tftransfer.errors import UserError
from tftransfer.sweeps import run_dirs
from tftransfer.sweeps.cells import Cell, transfer_config
from tftransfer.sweeps.fingerprint import HASH_COLUMN, differences, fingerprint
from tftransfer.sweeps.result_files import find_result_files
from tftransfer.sweeps.state import read_rows


def check(sweep: SweepConfig, results_dir, grid: list[Cell]) -> None:
    """Refuses to run ``sweep`` into ``results_dir`` when a row of one of its cells
    (``grid``) was recorded with another config fingerprint.

    Raises:
      UserError: one sentence naming a cell and the fields in which it differs.
    """
    recorded = recorded_hashes(results_dir)
    settings = {}  # the seeds of a cell share its fingerprint, built once
    changed = []
    for cell in grid:
        if recorded.get(cell.key):
            seedless = dataclasses.replace(cell, seed=0)
            if seedless not in settings:
                settings[seedless] = fingerprint(transfer_config(sweep, seedless,
                                                                 Path(results_dir)))
            if settings[seedless].hash != recorded[cell.key]:
                changed.append((cell, settings[seedless]))
    if changed:
        cell, current = changed[0]
        raise UserError(f"{results_dir} holds rows of {len(changed)} cell(s) of sweep "
                        f"{sweep.name!r} run with other settings ({cell.key}: "
                        f"{_what_differs(results_dir, cell, recorded[cell.key], current)}), and "
                        f"a report would average them with new runs; give another --results, "
                        f"or restore the grid's earlier settings.")


def recorded_hashes(results_dir) -> dict[str, str]:
    """``run_key`` -> ``config_hash`` of every row of every results file in ``results_dir``
    ("" for a row written before fingerprints)."""
    try:
        files = find_result_files(results_dir)
    except UserError:  # no directory or no results file yet
        return {}
    return {row["run_key"]: row.get(HASH_COLUMN) or "" for path in files
            for row in read_rows(path) if row.get("run_key")}


def _what_differs(results_dir, cell: Cell, recorded_hash: str, current) -> str:
    fields = run_dirs.recorded_fields(results_dir, cell, recorded_hash)
    shown = differences(fields, current.fields) if fields is not None else []
    if not shown:  # its run directory is gone or was replaced: the hashes are all there is
        return (f"config_hash {recorded_hash} there, {current.hash} here, and no "
                f"{run_dirs.CELL_RECORD} left to name the fields")
    return "differs in " + ", ".join(shown[:4]) + (
        f" and {len(shown) - 4} more" if len(shown) > 4 else "")
