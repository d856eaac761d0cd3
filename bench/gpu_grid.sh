#!/usr/bin/env bash
# K-seed batching on one GPU (issue 37, item 2): K seeds of a ResNet-50 layer4 + head fine-tune
# at 224 px on cached features, trained together in one compiled call
# (finetune.fine_tune_seeds) against the same K seeds run one after another
# (finetune.fine_tune), in one process, through bench/multi_seed.py. Prints its report: the
# seconds of each side (best of REPEATS alternated rounds, after a first round of each that
# builds and traces the networks, also printed), the ratio single / together, and the largest
# test-accuracy difference between the two sides (they should agree to float tolerance).
#
# The source: a ResNet-50 with random weights built by the toolkit (no checkpoint needed). The
# target: Flowers-102 by its TFDS name through tfds.testing.mock_data (random images of varying
# sizes and random labels shaped by its metadata, MOCK_EXAMPLES per split; no data set, no
# download), resized to IMAGE_SIZE. Speed does not depend on either; the accuracies are
# meaningless. --precision auto: mixed_float16 on the GPU.
#
# Budget: at most 8 minutes on one GPU at the defaults. N (default 1020, Flowers-102's train
# split), K (5), EPOCHS (30), REPEATS (2), TEST_IMAGES (1000), CURVE_IMAGES (500),
# MOCK_EXAMPLES (1100) and IMAGE_SIZE (224) can be set in the environment.
# Without a GPU it prints why it skips and exits 0; ALLOW_CPU=1 runs it on the CPU at toy
# scale (IMAGE_SIZE=32 N=24 MOCK_EXAMPLES=24 TEST_IMAGES=24 CURVE_IMAGES=24 EPOCHS=2 K=2
# REPEATS=1 in tests/gpu_scripts_test.py) to check its commands.
#
#   bash bench/gpu_grid.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"

NAME=gpu_grid; source bench/gpu_require.sh

N="${N:-1020}" K="${K:-5}" EPOCHS="${EPOCHS:-30}" REPEATS="${REPEATS:-2}"
TEST_IMAGES="${TEST_IMAGES:-1000}" CURVE_IMAGES="${CURVE_IMAGES:-500}"
MOCK_EXAMPLES="${MOCK_EXAMPLES:-1100}" IMAGE_SIZE="${IMAGE_SIZE:-224}"
echo "gpu_grid: $gpus GPU(s); ResNet-50 layer4 + head at ${IMAGE_SIZE} px, N = $N," \
     "$EPOCHS epochs, K = $K seeds together vs one after another" >&2

timeout 470 "$PYTHON" bench/multi_seed.py --arch resnet50 --image-size "$IMAGE_SIZE" \
  --unfrozen-stages 1 --target oxford_flowers102 --mock-examples "$MOCK_EXAMPLES" \
  --n "$N" --k "$K" --epochs "$EPOCHS" --repeats "$REPEATS" --test-images "$TEST_IMAGES" \
  --curve-images "$CURVE_IMAGES"
