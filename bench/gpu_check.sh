#!/usr/bin/env bash
# The photo path on one GPU (issue 23): ResNet-50 at 224 px, float32 against mixed_float16, for
# the three costs of bench/photo_step.py: the frozen trunk's features (head-only fine-tuning and
# the feature cache), a training step with layer4 + head unfrozen, and a PGD-3 (L2 eps 3)
# adversarial training step. Prints one table (images/s and the mixed/float32 ratio).
#
# Budget: at most 8 minutes on one GPU (random weights and images: no data set, no download).
# BATCH (default 128) and STEPS (default 20) can be set in the environment.
# Without a GPU it prints why it skips and exits 0 (bench/photo_step.py runs on a CPU too).
#
#   bash bench/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"

NAME=gpu_check; source bench/gpu_require.sh
echo "gpu_check: $gpus GPU(s); ResNet-50 224 px, float32 vs mixed_float16" >&2
timeout 470 "$PYTHON" bench/photo_step.py --batch "${BATCH:-128}" --steps "${STEPS:-20}" \
  --image-size 224
