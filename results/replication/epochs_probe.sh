#!/usr/bin/env bash
# Why the replication grid does not use the paper's 30 epochs everywhere (pipelines/grids/replication.toml):
# single MNIST runs with the natural source at the smallest N, each with the paper's recipe and
# only the number of epochs changed, plus the BatchNorm-statistics probe. Prints one line per
# run: final test accuracy on the 10,000 test images, last-epoch training accuracy, and the
# test curve (every 5 epochs, 2,000 images) at a few points. Output: results/replication/epochs_probe.txt,
# and each run's per-epoch history (training and test curves) in results/replication/epochs_probe/.
#   bash results/replication/epochs_probe.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA_DIR="${TFDS_DATA_DIR:-../shared/tfds}"
OUT=runs/epochs_probe
SOURCE=cifar10-resnet20-natural
run() {  # name, N, unfrozen blocks, epochs
  python main.py transfer --target mnist --source "$SOURCE" --train-images "$2" \
    --unfrozen-blocks "$3" --epochs "$4" --eval-every 5 --curve-test-images 2000 --seed 0 \
    --data-dir "$DATA_DIR" --no-download --out "$OUT/$1" > /dev/null
  mkdir -p results/replication/epochs_probe
  cp "$OUT/$1/history.csv" "results/replication/epochs_probe/$1.history.csv"
  python - "$OUT/$1" "$4" <<'PY'
import json, sys
import pandas as pd
run, epochs = sys.argv[1], int(sys.argv[2])
history = pd.read_csv(f"{run}/history.csv")
test = json.load(open(f"{run}/metrics.json"))["test_accuracy"]
points = sorted({e for e in (5, 10, 20, 30, epochs // 3, epochs // 2, epochs) if e <= epochs and e % 5 == 0})
curve = " ".join(f"{e}:{history.test_accuracy[history.epoch == e].iloc[0] * 100:.1f}" for e in points)
print(f"{run.split('/')[-1]:<16} test {test * 100:5.1f}%  train (last epoch) "
      f"{history.accuracy.iloc[-1] * 100:5.1f}%  curve {curve}")
PY
}
{
  run head-n100-e30 100 0 30
  run head-n100-e300 100 0 300
  run head-n100-e2000 100 0 2000
  run head-n3200-e30 3200 0 30
  run head-n3200-e300 3200 0 300
  run last-n100-e30 100 3 30
  python -m tftransfer.report.analyses.bn_statistics_probe "$OUT/last-n100-e30" | tail -1
  run last-n100-e90 100 3 90
  run last-n200-e30 200 3 30
  run last-n200-e60 200 3 60
} | tee results/replication/epochs_probe.txt
