"""Where the robust source's gain goes as more blocks are fine-tuned: 0, 1, 2 and 3 blocks.

``python main.py report --results results/replication-blocks --analysis blocks`` writes the
table to ``results/replication-blocks/blocks.md`` and ``difference_vs_blocks_<target>.png``
beside it.

Joins the replication sweep (head only = 0 blocks, last stage = 3) with the
``replication-blocks`` sweep (1 and 2 blocks), keeps the cells both cover (its N, the natural
and the eps 0.5 source, its seeds) and pairs each robust run with the natural run of the same
seed (``stats.paired_differences``). Prints a markdown table, natural / robust (difference
± 95%), and writes ``plots.plot_difference_vs_blocks`` per target.
"""

from __future__ import annotations

import functools
import io
from pathlib import Path

import pandas as pd

from tftransfer.report import plot_parts, plots
from tftransfer.report import stats
from tftransfer.report.analyses.replication_answers import TARGETS, difference_text

RESULTS = Path("results")
NATURAL, ROBUST = "cifar10-resnet20-natural", "cifar10-resnet20-l2-eps0.5"
BLOCK_LABELS = {0: "head only", 1: "1 block", 2: "2 blocks", 3: "last stage (3 blocks)"}


def joined_results(results: Path = RESULTS) -> pd.DataFrame:
    """Both sweeps' runs of the two sources, restricted to the blocks sweep's N and seeds,
    so every block setting is averaged over the same seeds (the same training images)."""
    blocks = stats.read_results(results / "replication-blocks")
    main = stats.read_results(results / "replication")
    main = main[main.train_images.isin(blocks.train_images.unique())
                & main.seed.isin(blocks.seed.unique())]
    table = pd.concat([main, blocks], ignore_index=True)
    return table[table.source.isin([NATURAL, ROBUST])]


def markdown_table(differences: pd.DataFrame, target: str) -> str:
    """Rows N, columns the number of fine-tuned blocks: natural / robust (difference)."""
    rows = differences[differences.target == target]
    blocks = sorted(rows.unfrozen_blocks.unique())
    lines = ["| N | " + " | ".join(BLOCK_LABELS.get(b, f"{b} blocks") for b in blocks) + " |",
             "|---:|" + "---:|" * len(blocks)]
    for n, by_n in rows.groupby("train_images"):
        cells = {r.unfrozen_blocks: f"{100 * r.baseline_mean:.1f} / {100 * r.source_mean:.1f} "
                                    f"({difference_text(r)})" for r in by_n.itertuples()}
        lines.append(f"| {n} | " + " | ".join(cells.get(b, "-") for b in blocks) + " |")
    return "\n".join(lines)


def markdown(figure_dir="results/replication-blocks", results: Path = RESULTS) -> str:
    """The table as markdown; the figures go to ``figure_dir``. ``results``: the folder that
    holds both sweeps' results directories."""
    stream = io.StringIO()
    emit = functools.partial(print, file=stream)
    table = joined_results(Path(results))
    differences = stats.paired_differences(table, NATURAL)
    seeds = ", ".join(str(seed) for seed in sorted(table.seed.unique()))
    emit(f"Natural / L2 eps 0.5 test accuracy (%), mean over seeds {seeds}, and the "
         "difference paired by seed ± 95% (**bold**: clear of zero). Written by "
         "`python main.py report --results results/replication-blocks --analysis blocks`.\n")
    for target in TARGETS:
        if target in set(differences.target):
            path = plot_parts.save_figure(plots.plot_difference_vs_blocks(differences, target),
                                     Path(figure_dir) / f"difference_vs_blocks_{target}.png")
            emit(f"### {TARGETS[target]}\n\n{markdown_table(differences, target)}\n\n"
                 f"![difference vs fine-tuned blocks, {TARGETS[target]}]({path.name})\n")
    return stream.getvalue()
