"""The transfer half of the fast-adversarial analysis (``fast_adversarial``): the fast sources'
fine-tuning runs paired by seed with the replication's natural and PGD-3 runs of the same cells,
the differences with their intervals, and their markdown table.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pandas as pd

from tftransfer.sweeps import registry as grid_registry
from tftransfer.report import stats
from tftransfer.sweeps import runner as sweeps
from tftransfer.report.analyses.replication_answers import TARGETS, difference_text
from tftransfer.errors import UserError

# The three sources compared (the methods table of ``fast_adversarial`` names them too).
NATURAL = "cifar10-resnet20-natural"
PGD = "cifar10-resnet20-l2-eps0.5"          # the replication's robust source (PGD-3, 30 epochs)
# The fast sources fine-tuned (the transfer grid's), in the order the table shows them: the first
# one fine-tuned and the one that meets the fast-training goal.
FAST_SOURCES = {"cifar10-resnet20-l2-eps0.5-fgsm-rs-10ep": "FGSM-RS 10 ep",
                "cifar10-resnet20-l2-eps0.5-fgsm-rs-25ep": "FGSM-RS 25 ep"}
FAST = next(iter(FAST_SOURCES))
GRID = "fast-adversarial-transfer"
BLOCKS = {0: "head only", 3: "last stage"}


def percent(value) -> str:
    """An accuracy in [0, 1] as a percentage with one decimal; ``-`` when missing."""
    return "-" if value is None or pd.isna(value) else f"{100 * value:.1f}"


def transfer_table(results_dir) -> tuple[pd.DataFrame | None, list[str]]:
    """The fast sources' transfer runs with the natural and PGD ones of the replication on
    the same cells and seeds; None (and why) when either is missing."""
    results_dir = Path(results_dir)
    notes = []
    try:
        fast = stats.read_results(results_dir / "transfer")
    except UserError as error:
        return None, [f"The transfer comparison is not there yet: {error}"]
    fast = fast[fast.source.isin(FAST_SOURCES)]
    try:
        reference = stats.read_results(results_dir.parent / "replication")
    except UserError as error:
        return None, [f"No natural and PGD rows to pair with: {error}"]
    reference = reference[reference.source.isin([NATURAL, PGD])]
    # The same seeds on both sides: in every cell a fast source has, only the seeds it has.
    keys = stats.pair_keys(fast)
    reference = reference.merge(fast[keys + ["seed"]].drop_duplicates(), on=keys + ["seed"])
    if fast.empty or reference.empty:
        return None, ["The transfer comparison is not there yet: no fast-source run shares "
                      "a cell and seed with the replication's natural and PGD runs."]
    expected = len(sweeps.cells(grid_registry.get(GRID)))
    if len(fast) < expected:
        notes.append(f"Partial: {len(fast)} of the grid's {expected} fast-source runs are "
                     "done; the cells below use the seeds done so far.")
    both = (reference.groupby(keys + ["seed"]).source.nunique().rename("sources")
            .reset_index())
    joined = fast.merge(both, on=keys + ["seed"], how="left")
    missing = sorted(joined.loc[joined.sources.fillna(0) < 2, "run_key"])
    if missing:
        notes.append(f"{len(missing)} fast-source run(s) lack a natural or PGD run of the "
                     f"same cell (epochs included) and seed in ../replication, e.g. "
                     f"{missing[0]}.")
    return pd.concat([reference, fast], ignore_index=True), notes


def transfer_differences(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """(fast and PGD minus natural, fast minus PGD), each from ``stats.paired_differences``,
    per fast source on that source's own seeds (column ``fast_source``), so that every row of
    the table compares the same runs."""
    against_natural, against_pgd, notes = [], [], []
    keys = stats.pair_keys(table)
    for fast in [name for name in FAST_SOURCES if (table.source == name).any()]:
        seeds = table.loc[table.source == fast, keys + ["seed"]].drop_duplicates()
        runs = table[table.source.isin([NATURAL, PGD, fast])].merge(seeds, on=keys + ["seed"])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", stats.DataWarning)
            against_natural.append(stats.paired_differences(runs, NATURAL).assign(fast_source=fast))
            against_pgd.append(stats.paired_differences(runs[runs.source != NATURAL], PGD)
                               .assign(fast_source=fast))
        notes += [str(w.message) for w in caught if issubclass(w.category, stats.DataWarning)]
    return (pd.concat(against_natural, ignore_index=True),
            pd.concat(against_pgd, ignore_index=True), list(dict.fromkeys(notes)))


def _row(frame: pd.DataFrame, source: str, fast_source: str, cell: tuple) -> pd.Series | None:
    rows = frame[(frame.source == source) & (frame.fast_source == fast_source)
                 & (frame.target == cell[0]) & (frame.train_images == cell[1])
                 & (frame.unfrozen_blocks == cell[2])]
    return None if rows.empty else rows.iloc[0]


def _difference(row: pd.Series | None) -> str:
    return "-" if row is None else difference_text(row)


def transfer_markdown(against_natural: pd.DataFrame, against_pgd: pd.DataFrame) -> str:
    """One row per cell and fast source: the accuracies and the three paired differences."""
    lines = ["| target | N | fine-tuned | fast source | seeds | natural % | PGD-3 % | fast % | "
             "PGD − natural | fast − natural | fast − PGD |",
             "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    fast_rows = against_natural[against_natural.source == against_natural.fast_source].assign(
        order=lambda rows: rows.source.map(list(FAST_SOURCES).index))
    for _, row in fast_rows.sort_values(["target", "train_images", "unfrozen_blocks",
                                         "order"]).iterrows():
        cell = (row.target, row.train_images, row.unfrozen_blocks)
        pgd = _row(against_natural, PGD, row.source, cell)
        lines.append(
            f"| {TARGETS.get(row.target, row.target)} | {row.train_images} | "
            f"{BLOCKS.get(row.unfrozen_blocks, f'{row.unfrozen_blocks} blocks')} | "
            f"{FAST_SOURCES[row.source]} | {row.n_pairs} | {percent(row.baseline_mean)} | "
            f"{'-' if pgd is None else percent(pgd.source_mean)} | "
            f"{percent(row.source_mean)} | {_difference(pgd)} | {_difference(row)} | "
            f"{_difference(_row(against_pgd, row.source, row.source, cell))} |")
    return "\n".join(lines)
