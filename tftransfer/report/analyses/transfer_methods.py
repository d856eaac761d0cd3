"""results.jsonl -> summary.md of results/transfer: per target and method, mean, sd and per-seed
test accuracy; and each transfer method minus each scratch method, paired by seed (same
training images).

    python -m tftransfer.report.analyses.transfer_methods [DIR]   (default results/transfer)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd


def summary_lines(table: pd.DataFrame) -> list[str]:
    """The two markdown tables of ``summary.md`` for the runs in ``table``."""
    table["accuracy"] = 100 * table["test_accuracy"].astype(float)
    lines = ["| target | method | mean test accuracy | sd | per seed (0, 1, 2) |", "|---|---|---|---|---|"]
    for (target, method), group in table.groupby(["target", "method"]):
        accs = group.sort_values("seed")["accuracy"]
        lines.append(f"| {target} | {method} | {accs.mean():.1f}% | {accs.std():.1f} | "
                     + ", ".join(f"{a:.1f}" for a in accs) + " |")

    lines += ["", "| target | transfer minus scratch (points, paired by seed) | mean | per seed |",
              "|---|---|---|---|"]
    by_seed = table.pivot_table(index=["target", "seed"], columns="method", values="accuracy")
    transfers = [m for m in by_seed.columns if m.startswith("transfer")]
    scratches = [m for m in by_seed.columns if m.startswith("scratch")]
    for target, group in by_seed.groupby(level="target"):
        for t in transfers:
            for s in scratches:
                diff = (group[t] - group[s]).dropna()
                if len(diff):
                    lines.append(f"| {target} | {t} - {s} | {diff.mean():+.1f} | "
                                 + ", ".join(f"{d:+.1f}" for d in diff) + " |")
    return lines


def main(directory: str = "results/transfer") -> None:
    here = Path(directory)
    rows = [json.loads(line) for line in (here / "results.jsonl").read_text().splitlines()
            if line]
    lines = summary_lines(pd.DataFrame(rows))
    (here / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main(*sys.argv[1:])
