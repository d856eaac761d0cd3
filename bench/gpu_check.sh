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

gpus="$("$PYTHON" -c "import os; os.environ['TF_CPP_MIN_LOG_LEVEL'] = '3'
import tensorflow as tf; print(len(tf.config.list_physical_devices('GPU')))" 2>/dev/null || echo error)"
if [ "$gpus" = "error" ]; then
  echo "gpu_check: skipped: TensorFlow does not import with $PYTHON (install the project first)."
  exit 0
fi
if [ "$gpus" = "0" ]; then
  echo "gpu_check: skipped: TensorFlow sees no GPU here (no CUDA device, or a CPU-only" \
       "TensorFlow build); this benchmark needs one GPU. On a CPU: python bench/photo_step.py"
  exit 0
fi
echo "gpu_check: $gpus GPU(s); ResNet-50 224 px, float32 vs mixed_float16" >&2
timeout 470 "$PYTHON" bench/photo_step.py --batch "${BATCH:-128}" --steps "${STEPS:-20}" \
  --image-size 224
