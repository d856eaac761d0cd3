"""Where the robust source's gain goes as more blocks are fine-tuned: 0, 1, 2 and 3 blocks.

Usage: python results/replication/blocks.py [FIGURE]
       (default figure: results/replication-blocks/difference_vs_blocks.png)

Joins the replication sweep (head only = 0 blocks, last stage = 3) with the
``replication-blocks`` sweep (1 and 2 blocks), keeps the cells both cover (its N, the natural
and the eps 0.5 source, its seeds) and pairs each robust run with the natural run of the same
seed (``stats.paired_differences``). Prints a markdown table, natural / robust (difference
± 95%), and plots the difference against the number of fine-tuned blocks.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import pandas as pd

from answers import TARGETS, difference_text  # same directory: run as a script
from tftransfer import stats

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


def differences_by_blocks(table: pd.DataFrame) -> pd.DataFrame:
    """Robust minus natural per (target, N, blocks) of ``joined_results``, paired by seed."""
    return stats.paired_differences(table, NATURAL)


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


def plot(differences: pd.DataFrame, path: Path) -> None:
    """One panel per target: the difference (95% interval) against the fine-tuned blocks."""
    targets = [t for t in TARGETS if t in set(differences.target)]
    figure, axes = plt.subplots(1, len(targets), figsize=(6 * len(targets), 4), sharey=True,
                                squeeze=False)
    for axis, target in zip(axes[0], targets):
        rows = differences[differences.target == target]
        for shift, (n, by_n) in zip((-0.06, 0, 0.06), rows.groupby("train_images")):
            by_n = by_n.sort_values("unfrozen_blocks")
            mean = 100 * by_n.difference_mean
            axis.errorbar(by_n.unfrozen_blocks + shift, mean, yerr=100 * by_n.difference_ci_half,
                          marker="o", capsize=3, label=f"N = {n}")
        axis.axhline(0, color="black", linewidth=0.8)
        axis.set(title=TARGETS[target], xlabel="fine-tuned blocks (0 = head only, 3 = last stage)",
                 xticks=[0, 1, 2, 3])
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel("L2 eps 0.5 minus natural (points, 95% CI)")
    axes[0][0].legend()
    figure.suptitle("Robust minus natural source vs fine-tuned blocks (paired by seed)")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(figure: str = "results/replication-blocks/difference_vs_blocks.png") -> None:
    table = joined_results()
    differences = differences_by_blocks(table)
    seeds = ", ".join(str(seed) for seed in sorted(table.seed.unique()))
    print(f"Natural / L2 eps 0.5 test accuracy (%), mean over seeds {seeds}, and the "
          "difference paired by seed ± 95% (**bold**: clear of zero). Written by "
          "`python results/replication/blocks.py`.\n")
    for target in TARGETS:
        if target in set(differences.target):
            print(f"### {TARGETS[target]}\n\n{markdown_table(differences, target)}\n")
    plot(differences, Path(figure))
    print(f"Figure: `{figure}`")


if __name__ == "__main__":
    main(*sys.argv[1:])
