#!/usr/bin/env bash
# 10-epoch CIFAR-10 resnet20 sources (natural and L2 eps 0.5, PGD-3): issue 3's robustness
# comparison and the default source of `transfer` until the 30-epoch replication sources
# (pipelines/train_sources.sh) exist. Resumable: re-run to continue.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA_DIR="${TFDS_DATA_DIR:-../shared/tfds}"
common=(--dataset cifar10 --arch resnet20 --epochs 10 --batch-size 128 --lr 0.1
        --schedule cosine --weight-decay 5e-4 --seed 0 --data-dir "$DATA_DIR" --no-download)
python main.py pretrain "${common[@]}" --out saved_models/cifar10-resnet20-natural-10ep
python main.py pretrain "${common[@]}" --attack l2 --eps 0.5 --attack-steps 3 \
  --out saved_models/cifar10-resnet20-l2-eps0.5-10ep
