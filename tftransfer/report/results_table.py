"""A sweep's results files -> one validated table (one row per finished fine-tuning run).

``read_results`` reads every shard (``sweeps.result_files``), merges duplicates and types the
columns. Data-quality problems that do not stop the report (duplicate run keys, unpaired
seeds, rows without an accuracy) are raised as ``DataWarning`` so callers can show them and
keep them in the report.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pandas as pd

from tftransfer.errors import UserError
from tftransfer.sweeps.fingerprint import HASH_COLUMN
from tftransfer.sweeps.result_files import find_result_files

NATURAL_ATTACK = "none"
REQUIRED_COLUMNS = ("run_key", "source", "source_attack", "target", "train_images",
                    "unfrozen_blocks", "seed", "test_accuracy")
INTEGER_COLUMNS = ("train_images", "unfrozen_blocks", "epochs", "seed")
FLOAT_COLUMNS = ("source_eps", "test_accuracy", "test_loss", "train_seconds")
EPOCH_COLUMN = re.compile(r"^test_accuracy_epoch_(\d+)$")
# The columns of one cell, whose runs (its seeds) the report averages (``stats.cell_keys``).
CELL_COLUMNS = ("target", "source", "train_images", "unfrozen_blocks", "epochs")


class DataWarning(UserWarning):
    """A problem in the results that the report works around and mentions."""


# ----------------------------------------------------------------------------- reading


def read_results(results_dir) -> pd.DataFrame:
    """Reads, merges and validates every results file in ``results_dir``.

    Args:
      results_dir: the sweep's output directory.

    Returns:
      One row per unique ``run_key``, with typed columns (see ``validate_results``).

    Raises:
      UserError: no files, unreadable files, no rows or missing/invalid columns.
    """
    files = find_result_files(results_dir)
    frames = [_read_csv(path) for path in files]
    frames = [frame for frame in frames if frame is not None]
    if not frames or all(frame.empty for frame in frames):
        names = ", ".join(path.name for path in files)
        raise UserError(f"the results files in {str(results_dir)!r} ({names}) hold no runs yet.")
    return validate_results(merge_shards(frames), source=str(results_dir))


def _read_csv(path: Path) -> pd.DataFrame | None:
    try:
        # Everything as text first: "None"/"NA" may be real names, and numbers are checked below.
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        warnings.warn(f"{path.name} is empty and was skipped.", DataWarning, stacklevel=3)
        return None
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise UserError(f"{str(path)!r} is not a readable CSV file ({error}).") from error


def merge_shards(frames) -> pd.DataFrame:
    """Concatenates result shards, keeping the first row of each ``run_key``.

    A run can appear twice when a shard was re-run or files were copied together;
    counting it twice would shrink the confidence intervals, so duplicates are dropped
    with a ``DataWarning`` (which says when the duplicates disagree).

    Args:
      frames: DataFrames in the order of precedence (earlier wins).

    Returns:
      The merged DataFrame with a fresh index.
    """
    table = pd.concat(list(frames), ignore_index=True, sort=False)
    if "run_key" not in table.columns:
        return table
    duplicated = table["run_key"].duplicated(keep="first")
    if duplicated.any():
        keys = table.loc[duplicated, "run_key"].unique()
        conflicting = [key for key in keys
                       if len(table.loc[table["run_key"] == key].drop_duplicates()) > 1]
        message = (f"{int(duplicated.sum())} duplicate row(s) of {len(keys)} run key(s) "
                   f"were dropped (the first occurrence is kept)")
        if conflicting:
            message += (f"; {len(conflicting)} of them had differing values, e.g. "
                        f"{', '.join(map(repr, conflicting[:3]))}")
        warnings.warn(message + ".", DataWarning, stacklevel=2)
        table = table.loc[~duplicated]
    return table.reset_index(drop=True)


def validate_results(table: pd.DataFrame, source: str = "the results") -> pd.DataFrame:
    """Checks the required columns and converts columns to their types.

    Args:
      table: merged results, possibly all-text.
      source: where the table came from, for error messages.

    Returns:
      A copy with integer/float columns converted, ``source_attack`` lower-cased and
      rows without a test accuracy removed (with a ``DataWarning``).

    Raises:
      UserError: a required column is missing, a value is not a number, an accuracy
        is outside [0, 1], or one source name has several attack settings.
    """
    missing = [column for column in REQUIRED_COLUMNS if column not in table.columns]
    if missing:
        raise UserError(f"{source} is missing column(s) {', '.join(missing)}; "
                        f"the report needs {', '.join(REQUIRED_COLUMNS)}.")
    table = table.copy()
    for column in ("run_key", "source", "target"):
        table[column] = table[column].astype(str).str.strip()
    table["source_attack"] = table["source_attack"].astype(str).str.strip().str.lower()
    for column in INTEGER_COLUMNS:
        if column in table.columns:
            table[column] = _to_integer(table, column, source)
    for column in list(FLOAT_COLUMNS) + epoch_columns(table):
        if column in table.columns:
            table[column] = pd.to_numeric(table[column], errors="coerce").astype(float)
    table = _drop_rows_without_accuracy(table)
    _check_fraction(table, source)
    _check_one_attack_per_source(table, source)
    _check_one_config_per_cell(table, source)
    return table.reset_index(drop=True)


def _to_integer(table: pd.DataFrame, column: str, source: str) -> pd.Series:
    values = pd.to_numeric(table[column], errors="coerce")
    bad = values.isna() | (values != values.round())
    if bad.any():
        row = table.loc[bad].iloc[0]
        raise UserError(f"{source}: column {column!r} must hold integers; found "
                        f"{row[column]!r} (run_key {row['run_key']!r}).")
    return values.astype("int64")


def _drop_rows_without_accuracy(table: pd.DataFrame) -> pd.DataFrame:
    missing = table["test_accuracy"].isna()
    if missing.any():
        keys = ", ".join(map(repr, table.loc[missing, "run_key"].head(3)))
        warnings.warn(f"{int(missing.sum())} row(s) without a numeric test_accuracy were "
                      f"ignored, e.g. {keys}.", DataWarning, stacklevel=3)
    return table.loc[~missing]


def _check_fraction(table: pd.DataFrame, source: str) -> None:
    columns = ["test_accuracy"] + epoch_columns(table)
    for column in columns:
        outside = (table[column] < 0) | (table[column] > 1)
        if outside.any():
            row = table.loc[outside].iloc[0]
            raise UserError(f"{source}: {column} must be a fraction in [0, 1]; found "
                            f"{row[column]!r} (run_key {row['run_key']!r}).")


def _check_one_attack_per_source(table: pd.DataFrame, source: str) -> None:
    columns = ["source_attack"] + (["source_eps"] if "source_eps" in table.columns else [])
    settings = table.drop_duplicates(["source"] + columns)
    repeated = settings["source"].duplicated(keep=False)
    if repeated.any():
        name = settings.loc[repeated, "source"].iloc[0]
        found = settings.loc[settings["source"] == name, columns].to_dict("records")
        raise UserError(f"{source}: source {name!r} appears with different attack settings "
                        f"{found}; give each source model its own name.")


def _check_one_config_per_cell(table: pd.DataFrame, source: str) -> None:
    """Refuses a cell whose rows were made with different settings (``config_hash``, which
    sweeps record); a row without one (written before fingerprints) is taken as compatible."""
    if HASH_COLUMN not in table.columns:
        return
    known = table.loc[table[HASH_COLUMN].astype(str).str.strip() != ""]
    keys = [column for column in CELL_COLUMNS if column in table.columns]
    hashes = known.groupby(keys)[HASH_COLUMN].unique()
    mixed = hashes[hashes.map(len) > 1]
    if len(mixed):
        cell = dict(zip(keys, mixed.index[0]))
        rows = known.loc[(known[keys] == pd.Series(cell)).all(axis=1)]
        examples = rows.drop_duplicates(HASH_COLUMN)["run_key"].head(2)
        described = ", ".join(f"{key} {value}" for key, value in cell.items())
        raise UserError(f"{source}: the runs of the cell {described} were made with different "
                        f"settings (config_hash {', '.join(mixed.iloc[0])}, e.g. run_keys "
                        f"{', '.join(map(repr, examples))}), so their mean would mix them; "
                        f"report each setting's runs from a results folder of its own.")


def epoch_columns(table: pd.DataFrame) -> list[str]:
    """The ``test_accuracy_epoch_<k>`` columns of ``table``, ordered by epoch."""
    found = [(int(match.group(1)), column) for column in table.columns
             if (match := EPOCH_COLUMN.match(column))]
    return [column for _, column in sorted(found)]
