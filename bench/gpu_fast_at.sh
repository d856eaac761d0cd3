#!/usr/bin/env bash
# Fast adversarial training on one GPU (issue 24, section 2): FGSM with a random start
# (Wong, Rice & Kolter, "Fast is better than free", ICLR 2020) on full CIFAR-10 with a
# ResNet-18, L-infinity eps 8/255 (their threat model, so the numbers compare with their
# 86.06% clean / 46.06% PGD in 12 minutes), step 1.25 eps, one-cycle learning rate peaking at
# 0.2, and their PGD early stop against catastrophic overfitting; then clean and PGD-20
# accuracy on the 10,000 test images (cleverhans' PGD, step 2/255, random start). Prints one
# table: training time, clean accuracy, PGD-20 accuracy.
#
# Budget: at most 8 minutes on one GPU (float32; TensorFlow uses TF32 on Ampere and later).
# EPOCHS (default 10; Wong et al. used 15) and RUN_DIR (default: a new temporary folder)
# can be set in the environment. TFDS_DATA_DIR must hold a prepared cifar10.
# Without a GPU it prints why it skips and exits 0. PRETRAIN_ARGS and EVALUATE_ARGS (default
# none) are added to the two commands: with ALLOW_CPU=1, tests/gpu_scripts_test.py runs the
# script on the CPU at toy scale (--train-images, --max-examples) to check its commands.
#
#   TFDS_DATA_DIR=../shared/tfds bash bench/gpu_fast_at.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"

NAME=gpu_fast_at; source bench/gpu_require.sh

EPOCHS="${EPOCHS:-10}"
RUN_DIR="${RUN_DIR:-$(mktemp -d -t gpu_fast_at.XXXXXX)}"
mkdir -p "$RUN_DIR"
echo "gpu_fast_at: $gpus GPU(s); ResNet-18, CIFAR-10, Linf 8/255 fgsm_rs, $EPOCHS epochs -> $RUN_DIR" >&2

start=$(date +%s)
"$PYTHON" main.py pretrain --dataset cifar10 --no-download --arch resnet18 \
  --out "$RUN_DIR/model" --epochs "$EPOCHS" --batch-size 128 \
  --attack linf --eps 8/255 --attack-method fgsm_rs --attack-step-size 10/255 \
  --schedule one_cycle --lr 0.2 --weight-decay 5e-4 --early-stop \
  --eval-every "$EPOCHS" --json-out "$RUN_DIR/pretrain.json" ${PRETRAIN_ARGS:-} > /dev/null
trained=$(date +%s)
"$PYTHON" main.py evaluate --model "$RUN_DIR/model" --dataset cifar10 --no-download \
  --attack linf --eps 8/255 --attack-steps 20 --attack-step-size 2/255 --random-start \
  --batch-size 500 --json-out "$RUN_DIR/evaluate.json" ${EVALUATE_ARGS:-} > /dev/null
finished=$(date +%s)

"$PYTHON" - "$RUN_DIR" "$((trained - start))" "$((finished - trained))" <<'EOF'
import json
import sys
from pathlib import Path

run, train_wall, eval_wall = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
pretrain = json.loads((run / "pretrain.json").read_text())
evaluation = json.loads((run / "evaluate.json").read_text())
stopped, best = pretrain.get("early_stopped_at_epoch"), pretrain.get("best_epoch")
epochs = f"{pretrain['last_epoch']}" + (f" (early stop, kept {best})" if stopped else "")
print("| method | epochs | train s (fit) | train s (wall) | eval s | clean % | PGD-20 % |")
print("|---|---|---|---|---|---|---|")
print(f"| fgsm_rs Linf 8/255, ResNet-18 | {epochs} | {pretrain['train_seconds_this_session']:.0f}"
      f" | {train_wall} | {eval_wall} | {100 * evaluation['accuracy']:.2f}"
      f" | {100 * evaluation['adversarial_accuracy']:.2f} |")
EOF
