#!/usr/bin/env bash
# Issue 9's check: a keras-tuner search of the fine-tuning recipe on MNIST with N = 400 (objective:
# accuracy on a stratified 20% validation split of the 400 images; the test set is not read),
# then its best configuration retrained on all 400 images and compared with the default recipe
# on the 10,000 test images over seeds 0-2. Resumable (the search resumes from its directory,
# finished rows of compare.jsonl are kept). Usage:
#   SOURCE=cifar10-resnet20-l2-eps0.5 bash results/tuning/compare.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
SOURCE="${SOURCE:-cifar10-resnet20-l2-eps0.5}"
DATA_DIR="${TFDS_DATA_DIR:-../shared/tfds}"
TRIALS="${TRIALS:-12}"
OUT=results/tuning
SEARCH_DIR="runs/tune/compare-mnist-n400-$SOURCE"
RESULTS="$OUT/compare-$SOURCE.jsonl"
touch "$RESULTS"

# 1. The search (random search over the whole space, up to 30 epochs per trial).
python main.py tune --target mnist --source "$SOURCE" --train-images 400 --tuner random \
  --max-trials "$TRIALS" --max-epochs 30 --seed 0 --dir "$SEARCH_DIR" \
  --data-dir "$DATA_DIR" --no-download --quiet | tail -1 > "$OUT/search-$SOURCE.json"

# 2. Best configuration (the search's own command, other seeds) vs the default recipe.
commands=$(python - "$OUT/search-$SOURCE.json" "$SOURCE" "$DATA_DIR" <<'PY'
import json, shlex, sys
result, source, data_dir = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3]
best = shlex.split(result["command"])

def with_option(words, name, value):
    words = list(words)
    if name in words:
        words[words.index(name) + 1] = value
    else:
        words += [name, value]
    return words

default = ["python", "main.py", "transfer", "--target", "mnist", "--source", source,
           "--train-images", "400", "--unfrozen-blocks", "3", "--epochs", "30",
           "--data-dir", data_dir, "--no-download"]
for seed in (0, 1, 2):
    for method, words in (("tuned", best), ("default", default)):
        words = with_option(words, "--seed", str(seed))
        words = with_option(words, "--out", f"runs/tune/compare-{source}/{method}-s{seed}")
        print(method, seed, shlex.join(words))
PY
)
while read -r method seed command; do
  python - "$RESULTS" "$method" "$seed" <<'PY' && continue
import json, sys
path, method, seed = sys.argv[1:]
rows = [json.loads(line) for line in open(path) if line.strip()]
sys.exit(0 if any(r["method"] == method and r["seed"] == int(seed) for r in rows) else 1)
PY
  eval "$command" | tail -1 | python -c "
import json, sys
r = json.load(sys.stdin); r['method'] = sys.argv[1]; print(json.dumps(r))" "$method" >> "$RESULTS"
done <<< "$commands"

python - "$RESULTS" <<'PY'
import json, sys
import pandas as pd
rows = pd.DataFrame([json.loads(line) for line in open(sys.argv[1]) if line.strip()])
for method, group in rows.groupby("method"):
    accs = 100 * group.sort_values("seed")["test_accuracy"]
    print(f"{method}: mean {accs.mean():.2f}% (sd {accs.std():.2f}) per seed "
          + ", ".join(f"{a:.2f}" for a in accs))
PY
