"""Our replication numbers beside the paper's (issue 8's table), from the report's CSVs.

Usage: python results/replication/paper_table.py [REPORT_DIR]   (default results/replication/report)

Prints markdown: for each robust source, N x target with the paper's natural / robust
(difference) at unfrozen blocks = 3 and ours at the last stage (3 blocks) and head only
(0 blocks), each "natural / robust (difference ± 95% half-width, paired by seed)".
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

# The paper repository's summary table: unfrozen blocks = 3, final-epoch test accuracy, mean
# over seeds, natural / robust L2 eps 3 (ImageNet ResNet-50 sources at 224 px).
# (natural, robust, difference): the differences as the paper reports them (from unrounded means).
PAPER = {
    "mnist": {100: (68.7, 83.8, 15.1), 200: (81.6, 90.7, 9.1), 400: (88.1, 94.3, 6.2),
              800: (91.8, 96.0, 4.2), 1600: (94.5, 97.1, 2.7), 3200: (96.4, 98.1, 1.7)},
    "fashion_mnist": {100: (66.1, 71.8, 5.7), 200: (73.5, 78.5, 5.0), 400: (78.8, 82.1, 3.3),
                      800: (82.7, 85.2, 2.5), 1600: (85.4, 87.6, 2.2), 3200: (88.0, 89.4, 1.5)},
}


def paper_cell(target: str, n: int) -> str:
    natural, robust, difference = PAPER[target][n]
    return f"{natural:.1f} / {robust:.1f} ({difference:+.1f})"


def our_cell(row) -> str:
    if row is None:
        return "not run"
    half = row.difference_ci_half * 100
    interval = f" ± {half:.1f}" if pd.notna(half) else ""
    return (f"{row.baseline_mean * 100:.1f} / {row.source_mean * 100:.1f} "
            f"({row.difference_mean * 100:+.1f}{interval})")


def table(differences: pd.DataFrame, source: str) -> str:
    """The markdown table of one robust source against the baseline."""
    rows = differences[differences.source == source]
    lookup = {(r.target, r.train_images, r.unfrozen_blocks): r for r in rows.itertuples()}
    targets = [t for t in PAPER if t in set(rows.target)]
    header = ["N"] + [f"{t}: {who}" for t in targets
                      for who in ("paper (3 blocks)", "ours, last stage", "ours, head only")]
    lines = ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
    for n in sorted(PAPER["mnist"]):
        cells = [str(n)]
        for t in targets:
            cells += [paper_cell(t, n), our_cell(lookup.get((t, n, 3))),
                      our_cell(lookup.get((t, n, 0)))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(report_dir: str = "results/replication/report") -> None:
    differences = pd.read_csv(Path(report_dir) / "differences.csv")
    if differences.empty:
        print("No robust source beside the natural one in this report yet: nothing to compare.")
    for source in sorted(differences.source.unique()):
        baseline = differences[differences.source == source].baseline.iloc[0]
        print(f"### {baseline} / {source}\n")
        print(table(differences, source), end="\n\n")


if __name__ == "__main__":
    main(*sys.argv[1:])
