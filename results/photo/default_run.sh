#!/usr/bin/env bash
# A newcomer's first photo run, exactly as typed: `transfer --target ../shared/photos/flowers12
# --source S` with every other default (head only, --epochs auto, the 64 px input for a small
# source on photos), for the natural and the robust 32 px source and seeds 0-2 (--seed is the
# only flag added). Resumable: a seed whose JSON exists is skipped. Writes, under
# results/photo/default/: <source>-s<seed>.json (the result), .first_line (the run's first
# stderr line), runs.csv and summary.md (robust minus natural, paired by seed, 95% t interval).
#   bash results/photo/default_run.sh            # from the repository root; a few minutes
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-results/photo/default}"
RUNS="${RUNS:-runs/photo-default}"
mkdir -p "$OUT" "$RUNS"
for source in cifar10-resnet20-natural cifar10-resnet20-l2-eps0.5; do
  for seed in 0 1 2; do
    name="$source-s$seed"
    [[ -f "$OUT/$name.json" ]] && continue
    python main.py transfer --target ../shared/photos/flowers12 --source "$source" --seed "$seed" \
      --out "$RUNS/$name" --json-out "$OUT/$name.json.part" 2> "$RUNS/$name.err" >/dev/null
    head -n 1 "$RUNS/$name.err" | sed "s#$PWD/##" > "$OUT/$name.first_line"
    mv "$OUT/$name.json.part" "$OUT/$name.json"
  done
done
python - "$OUT" "$RUNS" <<'PY'
import json, sys
from pathlib import Path
import pandas as pd
from tftransfer.report.stats import t_half_width
out, runs = Path(sys.argv[1]), Path(sys.argv[2])
rows = []
for path in sorted(out.glob("*-s[0-9].json")):
    result = json.loads(path.read_text())
    first = path.with_suffix(".first_line").read_text().strip()
    commit = json.loads((runs / path.stem / "config.json").read_text()).get("git_commit")
    rows.append({key: result.get(key) for key in ("source", "seed", "test_accuracy",
                 "mean_class_accuracy", "train_images", "test_images", "unfrozen_blocks",
                 "epochs", "epochs_rule", "train_seconds")}
                | {"git_commit": commit, "first_line": first})
table = pd.DataFrame(rows)
table.to_csv(out / "runs.csv", index=False)
wide = table.pivot(index="seed", columns="source", values="test_accuracy") * 100
diff = wide["cifar10-resnet20-l2-eps0.5"] - wide["cifar10-resnet20-natural"]
half = t_half_width(diff.std(ddof=1), len(diff))
lines = ["| source | test accuracy (%), seeds 0-2 | mean |", "|---|---|---:|"]
for source in wide:
    lines.append(f"| {source} | {' / '.join(f'{v:.1f}' for v in wide[source])} | "
                 f"{wide[source].mean():.1f} |")
lines.append(f"| robust - natural (points, paired by seed, 95% t) | "
             f"{' / '.join(f'{v:+.1f}' for v in diff)} | {diff.mean():+.1f} ± {half:.1f} |")
(out / "summary.md").write_text("\n".join(lines) + "\n\nFirst stderr line (seed 0, robust):\n\n"
    + table.loc[(table.source == "cifar10-resnet20-l2-eps0.5") & (table.seed == 0),
                "first_line"].iloc[0] + "\n")
print((out / "summary.md").read_text())
PY
