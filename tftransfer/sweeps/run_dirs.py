"""A sweep cell's run directory, ``<results>/runs/<cell>``: checked before a run replaces it,
and marked with the cell whose run it holds.

A run replaces the record files of its directory (``finetune.rundir``), so a sweep starts one
only in a real folder of its own results folder that is empty or holds an earlier try of the
same cell. Refused, with one sentence: a symbolic link (a link to a finished run elsewhere
would lose that run's model and metrics), a path that resolves outside the results folder
(``runs/`` itself a link), a file, and a directory holding the run of another cell or a model
that no record names.

``mark`` writes ``sweep_cell.json`` when a cell's run starts: its key and config fingerprint
(``sweeps.fingerprint``), fields included. A directory written before these markers is known
by the run directory that its ``metrics.json`` (or a saved model's ``config.json``) recorded.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tftransfer import runs
from tftransfer.errors import UserError
from tftransfer.sweeps.cells import Cell
from tftransfer.sweeps.fingerprint import HASH_COLUMN, Fingerprint

RUNS_DIR = "runs"
CELL_RECORD = "sweep_cell.json"


def run_dir(results_dir, cell: Cell) -> Path:
    """Where the run of ``cell`` goes in ``results_dir``."""
    return Path(results_dir) / RUNS_DIR / cell.file_name


def check_run_dir(results_dir, cell: Cell) -> Path:
    """``cell``'s run directory, when a run of it may start there (see the module docstring).

    Raises:
      UserError: a link, a path outside ``results_dir``, a file, or another run's directory.
    """
    path = run_dir(results_dir, cell)
    inside = Path(results_dir).resolve() / RUNS_DIR / cell.file_name
    if path.is_symlink() or path.resolve() != inside:
        raise UserError(f"{path} is a symbolic link or resolves outside {results_dir} (to "
                        f"{path.resolve()}), and a sweep replaces the files of its run "
                        f"directories; remove the link and rerun.")
    if path.exists() and not path.is_dir():
        raise UserError(f"{path} is a file where the run directory of {cell.key} goes; "
                        f"move it away and rerun.")
    other = _other_run(path, cell)
    if other:
        raise UserError(f"{path} holds {other}, not a run of {cell.key}, and a sweep replaces "
                        f"only its own cell's runs; move it away and rerun.")
    return path


def check_run_dirs(results_dir, todo: list[Cell]) -> None:
    """``check_run_dir`` for each cell of ``todo`` whose run directory exists, and for the
    ``runs`` folder itself, so that a sweep is refused before its first run."""
    folder = Path(results_dir) / RUNS_DIR
    if folder.is_symlink():
        raise UserError(f"{folder} is a symbolic link, and a sweep replaces the files of the "
                        f"run directories in it; make it a real folder and rerun.")
    existing = set(os.listdir(folder)) if folder.is_dir() else set()
    for cell in todo:
        if cell.file_name in existing:
            check_run_dir(results_dir, cell)


def mark(path: Path, cell: Cell, fingerprint: Fingerprint) -> None:
    """Records in the run directory ``path`` that it holds the run of ``cell``, made with
    the settings of ``fingerprint``."""
    runs.write_json(path / CELL_RECORD, {"run_key": cell.key, HASH_COLUMN: fingerprint.hash,
                                         "config": fingerprint.fields})


def recorded_fields(results_dir, cell: Cell, config_hash: str) -> dict | None:
    """The fingerprint fields that ``cell``'s run directory recorded with ``config_hash``;
    None when it holds no such record (removed, or another try since)."""
    record = _read(run_dir(results_dir, cell) / CELL_RECORD)
    if not isinstance(record, dict) or record.get(HASH_COLUMN) != config_hash:
        return None
    fields = record.get("config")
    return fields if isinstance(fields, dict) else None


def _other_run(path: Path, cell: Cell) -> str | None:
    """What ``path`` holds when it is not a run of ``cell`` (None: nothing, or one of it)."""
    record = _read(path / CELL_RECORD)
    if record is not None:
        key = record.get("run_key") if isinstance(record, dict) else None
        return None if key == cell.key else f"a {CELL_RECORD} of {key or 'no readable key'!r}"
    metrics, config = _read(path / "metrics.json"), _read(path / "config.json")
    if metrics is None and config is None:
        # Nothing, or what a killed try leaves before its first record: replaced whole.
        return "a model.keras that no record names" if (path / "model.keras").exists() else None
    written_to = _recorded_run_dir(metrics, config)
    if written_to is None:
        return "a run record (metrics.json or config.json) that names no run directory"
    return None if Path(written_to).name == cell.file_name else f"the run of {written_to}"


def _recorded_run_dir(metrics, config) -> str | None:
    if isinstance(metrics, dict) and isinstance(metrics.get("run_dir"), str):
        return metrics["run_dir"]
    resolved = config.get("resolved_config") if isinstance(config, dict) else None
    out = resolved.get("out") if isinstance(resolved, dict) else None
    return out if isinstance(out, str) else None


def _read(path: Path):
    """A JSON file's contents; None when there is none; ``"unreadable"`` when it cannot be
    read (never a run of this cell, then)."""
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return "unreadable"
