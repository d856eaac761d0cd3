"""The ablation: from the replication's protocol to the paper's, one difference at a time.

``python main.py report --results results/replication-paper --analysis ablation`` writes
``results/replication-paper/ablation.md``: for the last stage (3 blocks) at N = 100 and 400,
L2 eps 0.5 minus natural, paired by seed (``stats.paired_differences``), +- the 95% t
half-width, in each protocol: the ``replication`` grid's (nothing changed), each
``replication-paper-ablation-<change>`` grid's (one difference changed) and the
``replication-paper`` grid's (every difference changed). A protocol whose runs are not there
yet is marked so; a cell with fewer than 5 paired seeds says how many it has.
"""

from __future__ import annotations

import functools
import io
from pathlib import Path

import pandas as pd

from tftransfer.report import stats
from tftransfer.errors import UserError

NATURAL, ROBUST = "cifar10-resnet20-natural", "cifar10-resnet20-l2-eps0.5"
# (label, results directory under the results root), from our protocol to the paper's.
PROTOCOLS = (
    ("replication (none changed)", "replication"),
    ("BN train mode", "replication-paper-ablation/bn"),
    ("target normalisation", "replication-paper-ablation/norm"),
    ("150 epochs", "replication-paper-ablation/epochs"),
    ("random subset", "replication-paper-ablation/subset"),
    ("all (replication-paper)", "replication-paper"),
)
TARGETS = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST"}
CELLS = [(target, n) for target in TARGETS for n in (100, 400)]
SEEDS = 5


def differences(results_root: Path) -> dict[str, pd.DataFrame]:
    """Protocol label -> its paired differences at the ablation's cells (absent: not run)."""
    found = {}
    for label, folder in PROTOCOLS:
        try:
            table = stats.read_results(Path(results_root) / folder)
        except UserError:  # no results yet
            continue
        table = table[table.source.isin([NATURAL, ROBUST]) & (table.unfrozen_blocks == 3)
                      & table.train_images.isin([n for _, n in CELLS])]
        if table.source.nunique() == 2:
            found[label] = stats.paired_differences(table, NATURAL)
    return found


def _cell(frame: pd.DataFrame | None, target: str, n: int, what: str) -> str:
    if frame is None:
        return "not run yet"
    rows = frame[(frame.target == target) & (frame.train_images == n)]
    if rows.empty:
        return "not run yet"
    row = rows.iloc[0]
    if what == "accuracies":
        text = f"{100 * row.baseline_mean:.1f} / {100 * row.source_mean:.1f}"
    else:
        text = f"{100 * row.difference_mean:+.1f}"
        if pd.notna(row.difference_ci_half):
            text += f" ± {100 * row.difference_ci_half:.1f}"
        if row.difference_ci_low > 0 or row.difference_ci_high < 0:
            text = f"**{text}**"
    return text + ("" if row.n_pairs >= SEEDS else f" ({row.n_pairs} seeds)")


def _table(found: dict, what: str) -> str:
    labels = [label for label, _ in PROTOCOLS]
    lines = ["| target | N | " + " | ".join(labels) + " |", "|---|---:|" + "---:|" * len(labels)]
    for target, n in CELLS:
        lines.append(f"| {TARGETS[target]} | {n} | "
                     + " | ".join(_cell(found.get(label), target, n, what) for label in labels)
                     + " |")
    return "\n".join(lines)


def markdown(results_dir) -> str:
    """The ablation's two tables; ``results_dir``: results/replication-paper (its parent holds
    every protocol's results directory)."""
    stream = io.StringIO()
    emit = functools.partial(print, file=stream)
    found = differences(Path(results_dir).parent)
    emit("# The ablation: last stage (3 blocks), L2 eps 0.5 vs natural\n")
    emit("Written by `python main.py report --results results/replication-paper --analysis "
         "ablation` (do not edit by hand). Columns: the protocol, from the replication's "
         "(left) to the paper's (right), one difference at a time in between.\n")
    emit("## Robust minus natural (points)\n")
    emit("Paired by seed, ± the 95% t half-width; **bold**: the interval excludes zero.\n")
    emit(_table(found, "differences") + "\n")
    emit("## Natural / robust test accuracy (%)\n")
    emit("Means over the paired seeds, on all 10,000 test images.\n")
    emit(_table(found, "accuracies"))
    return stream.getvalue()
