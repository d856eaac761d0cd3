"""Which input size a small source should get on photos: the same grid at two sizes, compared.

Reads ``<results>/<size>px/results.csv`` for every size folder (the ``photo-flowers12-*px``
grids write them) and writes one markdown table per (source, unfrozen blocks): the mean test
accuracy at each size, the change from the smallest size to each larger one paired by seed
(95% Student-t interval), the robust-minus-natural difference at each size (paired by seed),
and the median training time. Run as

    python main.py report --results results/photo/flowers12 --analysis photo-sizes

which writes ``sizes.md`` into that folder.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from tftransfer.errors import UserError
from tftransfer.report.stats import t_half_width

SIZE_FOLDER = re.compile(r"^(\d+)px$")


def load(results: Path) -> pd.DataFrame:
    """Every size folder's rows, with an ``input_size`` column from the folder's name."""
    frames = []
    for folder in sorted(results.iterdir()):
        match = SIZE_FOLDER.match(folder.name)
        if match and (folder / "results.csv").is_file():
            frame = pd.read_csv(folder / "results.csv")
            frames.append(frame.assign(input_size=int(match.group(1))))
    if not frames:
        raise UserError(f"no <size>px/results.csv under {results}")
    return pd.concat(frames, ignore_index=True)


def paired(rows: pd.DataFrame, column: str, new, old) -> str:
    """``mean ± half-width`` (points) of accuracy at ``column == new`` minus ``== old``,
    paired by seed; ``n/a`` without two pairs."""
    wide = rows.pivot_table(index="seed", columns=column, values="test_accuracy")
    if new not in wide or old not in wide:
        return "n/a"
    diff = (wide[new] - wide[old]).dropna() * 100
    if len(diff) < 2:
        return "n/a"
    return f"{diff.mean():+.1f} ± {t_half_width(diff.std(ddof=1), len(diff)):.1f}"


def size_table(table: pd.DataFrame) -> str:
    """The markdown table: one row per source, unfrozen blocks and size."""
    smallest = table.input_size.min()
    natural = sorted(table.loc[table.source_attack == "none", "source"].unique())
    lines = ["| unfrozen blocks | source | input size | test accuracy (%) | change vs "
             f"{smallest} px (points) | robust - natural (points) | training (s, median) |",
             "|---:|---|---:|---:|---:|---:|---:|"]
    for (blocks, source), rows in table.groupby(["unfrozen_blocks", "source"]):
        for size, at_size in rows.groupby("input_size"):
            change = "-" if size == smallest else paired(rows, "input_size", size, smallest)
            versus = "-"
            if source not in natural and natural:
                both = table[(table.unfrozen_blocks == blocks) & (table.input_size == size)
                             & table.source.isin([source, natural[0]])]
                versus = paired(both, "source", source, natural[0])
            lines.append(f"| {blocks} | {source} | {size} | "
                         f"{at_size.test_accuracy.mean() * 100:.1f} | {change} | {versus} | "
                         f"{at_size.train_seconds.median():.0f} |")
    return "\n".join(lines)


def markdown(results: Path) -> str:
    """The analysis as markdown."""
    table = load(results)
    commits = ", ".join(sorted(table.git_commit.astype(str).str[:7].unique()))
    seeds = table.groupby(["source", "unfrozen_blocks", "input_size"]).seed.nunique()
    return (f"# Input size for a {int(table.input_size.min())} px source on "
            f"{table.target.iloc[0]}\n\n"
            f"Rows: {len(table)} ({seeds.min()}-{seeds.max()} seeds per cell), "
            f"N = {', '.join(str(n) for n in sorted(table.train_images.unique()))}, "
            f"commit(s) {commits}. Differences are paired by seed, ± the half-width of "
            f"the 95% Student-t interval. Written by "
            f"`python main.py report --results {results} --analysis photo-sizes`.\n\n"
            f"{size_table(table)}\n")

