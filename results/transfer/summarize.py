"""results.jsonl -> summary.md: mean, sd and per-seed test accuracy of transfer vs scratch."""

import json
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent

rows = [json.loads(line) for line in (HERE / "results.jsonl").read_text().splitlines() if line]
table = pd.DataFrame(rows)
lines = ["| target | method | mean test accuracy | sd | per seed |", "|---|---|---|---|---|"]
for (target, method), group in table.groupby(["target", "method"]):
    accs = group["test_accuracy"].astype(float)
    lines.append(f"| {target} | {method} | {100 * accs.mean():.1f}% | {100 * accs.std():.1f} | "
                 + ", ".join(f"{100 * a:.1f}" for a in accs) + " |")
(HERE / "summary.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
