"""Does the default training length converge? Accuracy by the number of SGD steps.

Reads every ``<results>/*/results.csv`` (the ``photo-length-*`` grids write them: the default
length, longer twins, and head-only ladders of 8,000 and 32,000 steps) and writes one markdown
table per cell (target, N, unfrozen blocks): the mean test accuracy at each number of SGD
steps measured, each step count's change against the next shorter one paired by seed (95%
Student-t interval), and the shortest step count whose accuracy is within ``TOLERANCE`` points
of the longest one measured. Run as

    python main.py report --results results/photo/length --analysis length-check

which writes ``length.md`` into that folder.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from tftransfer.errors import UserError
from tftransfer.report.stats import t_half_width

TOLERANCE = 1.0  # points: "within 1 point of a long, converged run"
CELL = ["target", "train_images", "unfrozen_blocks"]


def load(results: Path) -> pd.DataFrame:
    """Every grid folder's rows, with ``steps``: the run's SGD steps."""
    frames = [pd.read_csv(path) for path in sorted(results.glob("*/results.csv"))]
    if not frames:
        raise UserError(f"no <grid>/results.csv under {results}")
    table = pd.concat(frames, ignore_index=True)
    per_epoch = [math.ceil(n / b) for n, b in zip(table.train_images, table.batch_size)]
    return table.assign(steps=table.epochs * pd.Series(per_epoch, index=table.index))


def paired_change(wide: pd.DataFrame, longer: int, shorter: int) -> str:
    """``mean ± half-width (n = k)`` of the longer run's accuracy minus the shorter's, points,
    over the seeds both have."""
    diff = (wide[longer] - wide[shorter]).dropna()
    if diff.empty:
        return "n/a"
    half = t_half_width(diff.std(ddof=1), len(diff)) if len(diff) > 1 else float("nan")
    return f"{diff.mean():+.1f} ± {half:.1f} (n = {len(diff)})"


def shortest_within(means: pd.Series) -> int | None:
    """The fewest steps whose mean accuracy is within ``TOLERANCE`` points of the longest
    run's (None with one step count only)."""
    if len(means) < 2:
        return None
    longest = means.iloc[-1]
    return int(next(steps for steps, mean in means.items() if abs(longest - mean) <= TOLERANCE))


def cell_lines(cell: tuple, rows: pd.DataFrame) -> list[str]:
    """One table row per step count of a cell."""
    wide = rows.pivot_table(index="seed", columns="steps", values="test_accuracy") * 100
    means = wide.mean()
    enough = shortest_within(means)
    target, n, blocks = cell
    lines, previous = [], None
    for steps in wide.columns:
        change = "-" if previous is None else paired_change(wide, steps, previous)
        mark = " (shortest within 1 point of the longest)" if steps == enough else ""
        lines.append(f"| {target} | {n} | {blocks} | {steps:,}{mark} | {means[steps]:.1f} | "
                     f"{wide[steps].count()} | {change} |")
        previous = steps
    return lines


def markdown(results: Path) -> str:
    """The analysis as markdown."""
    table = load(results)
    commits = ", ".join(sorted(table.git_commit.astype(str).str[:7].unique()))
    lines = ["| target | N | unfrozen blocks | SGD steps | test accuracy (%) | seeds | change "
             "against the next shorter (points, paired by seed, 95% t) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for cell, rows in table.groupby(CELL):
        lines += cell_lines(cell, rows)
    return (f"# The default training length against longer runs\n\n"
            f"Rows: {len(table)}, commit(s) {commits}. Written by "
            f"`python main.py report --results {results} --analysis length-check`.\n\n"
            + "\n".join(lines) + "\n")
