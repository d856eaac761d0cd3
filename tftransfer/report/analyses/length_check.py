"""Does the default training length converge? Each default-length grid against its long twin.

Reads ``<results>/<name>-default/results.csv`` and ``<results>/<name>-long/results.csv`` for
every such pair (the ``photo-length-*`` grids write them) and writes one markdown table: per
target, N and unfrozen blocks, the mean test accuracy of the default and the long runs, the
long run's gain paired by seed (95% Student-t interval) and whether the default is within
``TOLERANCE`` points of it. Run as

    python main.py report --results results/photo/length --analysis length-check

which writes ``length.md`` into that folder.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tftransfer.errors import UserError
from tftransfer.report.stats import t_half_width

TOLERANCE = 1.0  # points: "within 1 point of a long, converged run"
CELL = ["target", "train_images", "unfrozen_blocks"]


def load(results: Path) -> pd.DataFrame:
    """Every default/long pair's rows, with ``length`` (default or long) and ``grid``."""
    frames = []
    for default in sorted(results.glob("*-default/results.csv")):
        name = default.parent.name.removesuffix("-default")
        long = results / f"{name}-long" / "results.csv"
        for kind, path in (("default", default), ("long", long)):
            if path.is_file():
                frames.append(pd.read_csv(path).assign(length=kind, grid=name))
    if not frames:
        raise UserError(f"no <name>-default/results.csv under {results}")
    return pd.concat(frames, ignore_index=True)


def cell_row(cell: tuple, rows: pd.DataFrame) -> str:
    """One table row: the two means, the long run's paired gain and the verdict."""
    wide = rows.pivot_table(index="seed", columns="length", values="test_accuracy") * 100
    epochs = rows.groupby("length").epochs.first()
    means = {kind: f"{wide[kind].mean():.1f} ({epochs[kind]} ep, {wide[kind].count()} seeds)"
             if kind in wide else "not run" for kind in ("default", "long")}
    gain, verdict = "n/a", "n/a"
    if {"default", "long"} <= set(wide):
        diff = (wide["long"] - wide["default"]).dropna()
        if len(diff):
            half = t_half_width(diff.std(ddof=1), len(diff)) if len(diff) > 1 else float("nan")
            gain = f"{diff.mean():+.1f} ± {half:.1f} (n = {len(diff)})"
            verdict = "yes" if abs(diff.mean()) <= TOLERANCE else "no"
    target, n, blocks = cell
    return (f"| {target} | {n} | {blocks} | {means['default']} | {means['long']} | {gain} | "
            f"{verdict} |")


def markdown(results: Path) -> str:
    """The analysis as markdown."""
    table = load(results)
    commits = ", ".join(sorted(table.git_commit.astype(str).str[:7].unique()))
    lines = ["| target | N | unfrozen blocks | default: accuracy (%) | long: accuracy (%) | "
             "long - default (points, paired by seed, 95% t) | default within "
             f"{TOLERANCE:g} point |", "|---|---:|---:|---:|---:|---:|---|"]
    lines += [cell_row(cell, rows) for cell, rows in table.groupby(CELL)]
    return (f"# The default training length against long runs\n\n"
            f"Rows: {len(table)}, commit(s) {commits}. Written by "
            f"`python main.py report --results {results} --analysis length-check`.\n\n"
            + "\n".join(lines) + "\n")

