#!/usr/bin/env bash
# The replication's CIFAR-10 source models (issue 8): same architecture, recipe and epochs
# for all; natural and L2-robust with eps 0.25 / 0.5 / 1.0 at 32 px (PGD-3, step 2.5*eps/3).
# Resumable: re-running continues each model from its last finished epoch. Each finished model
# is evaluated clean and under L2 PGD-20 at eps 0.5 (results/adversarial/<name>.json; skipped
# when that file exists).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA_DIR="${TFDS_DATA_DIR:-../shared/tfds}"
EPOCHS="${EPOCHS:-30}"
common=(--dataset cifar10 --arch resnet20 --epochs "$EPOCHS" --batch-size 128 --lr 0.1
        --schedule cosine --weight-decay 5e-4 --seed 0 --data-dir "$DATA_DIR" --no-download)
python main.py pretrain "${common[@]}" --out saved_models/cifar10-resnet20-natural
MODELS=natural bash results/adversarial/run.sh
for eps in 0.5 0.25 1.0; do
  python main.py pretrain "${common[@]}" --attack l2 --eps "$eps" --attack-steps 3 \
    --out "saved_models/cifar10-resnet20-l2-eps$eps"
  MODELS="l2-eps$eps" bash results/adversarial/run.sh
done
