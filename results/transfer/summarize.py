"""results.jsonl -> summary.md: per target and method, mean, sd and per-seed test accuracy; and
each transfer method minus each scratch method, paired by seed (same training images)."""

import json
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent

rows = [json.loads(line) for line in (HERE / "results.jsonl").read_text().splitlines() if line]
table = pd.DataFrame(rows)
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
(HERE / "summary.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
