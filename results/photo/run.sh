#!/usr/bin/env bash
# Issue 23: the photo path at its real scale, offline. Flowers-102 by its TFDS name through
# tfds.testing.mock_data (bench/mock_tfds.py: random images of varying sizes and random labels
# shaped by the real metadata, TEST_IMAGES per split), a randomly initialised ResNet-50 written
# as a PyTorch checkpoint (tftransfer/models/torch_resnet.py) and converted (`convert`), fine-tuned at
# 224 px with the head only and with layer4 (`--unfrozen-stages 1`). Per phase: wall time,
# images/s of the feature extraction, peak resident memory (/usr/bin/time -v), and the feature
# cache's size on disk. The accuracies are meaningless (random weights, random images).
#   bash results/photo/run.sh                      # writes results/photo/phases.md
#   TEST_IMAGES=300 TRAIN_IMAGES=204 bash results/photo/run.sh   # a quick check
set -euo pipefail
cd "$(dirname "$0")/../.."
WORK="${WORK:-runs/photo}"                # checkpoint, converted source, run directories
TEST_IMAGES="${TEST_IMAGES:-6149}"        # Flowers-102's real test split size
TRAIN_IMAGES="${TRAIN_IMAGES:-1020}"      # its train split (10 per class)
STEPS="${STEPS:-40}"                      # SGD steps of batch 128 (about 5 epochs of 1,020)
# --feature-cache-memory: 512MB rather than the flag's 2GB default: the committed table's
# setting. With 2GB the layer4 run peaked at 5.1 GB when the budget counted a training set held
# in memory once; it now counts its two copies too, and that run peaked at 3.97 GiB
# (results/photo/README.md).
MEMORY="${FEATURE_CACHE_MEMORY:-512MB}"
TABLE="${TABLE:-results/photo/phases.md}"
mkdir -p "$WORK/logs" "$WORK/tmp"
export TMPDIR="$WORK/tmp"                 # where features beyond the budget go
rows=()

phase() {  # phase NAME COMMAND...: runs it under /usr/bin/time -v, adds a table row
  local name="$1"; shift
  local log="$WORK/logs/$name.log"
  /usr/bin/time -v "$@" > "$WORK/logs/$name.json" 2> "$log"
  local wall rss features disk
  wall=$(sed -n 's/.*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' "$log")
  rss=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$log")
  features=$(grep -o '^features: [0-9,]* images in [^(]*([0-9.]* images/s)' "$log" \
             | sed 's/^features: //' | paste -sd ';' - || true)
  disk=$(grep -o 'on disk in [^(]*([^)]*in all)' "$log" | sed 's/.*(\(.*\) in all)/\1/' \
         | paste -sd ';' - || true)
  rows+=("| $name | $wall | $(awk -v k="$rss" 'BEGIN{printf "%.2f", k / 1048576}') | ${features:--} | ${disk:-none} |")
  echo "photo: $name done in $wall, peak $(awk -v k="$rss" 'BEGIN{printf "%.2f", k / 1048576}') GiB" >&2
}

transfer() {  # transfer NAME FLAGS...: the mocked Flowers-102 fine-tune
  local name="$1"; shift
  phase "$name" python bench/mock_tfds.py --num-examples "$TEST_IMAGES" -- transfer \
    --target oxford_flowers102 --source "$WORK/source" --train-images "$TRAIN_IMAGES" \
    --steps "$STEPS" --feature-cache-memory "$MEMORY" --out "$WORK/$name" "$@"
}

rm -rf "$WORK/source" "$WORK/head-only" "$WORK/layer4"
phase checkpoint python -m tftransfer.models.torch_resnet --arch resnet50 --classes 1000 \
  --out "$WORK/resnet50-random.pt"
phase convert python main.py convert --checkpoint "$WORK/resnet50-random.pt" --arch resnet50 \
  --out "$WORK/source"
transfer head-only
transfer layer4 --unfrozen-stages 1

{
  echo "Written by \`bash results/photo/run.sh\` (TEST_IMAGES=$TEST_IMAGES TRAIN_IMAGES=$TRAIN_IMAGES"\
       "STEPS=$STEPS FEATURE_CACHE_MEMORY=$MEMORY) on $(date -u +%Y-%m-%d), $(nproc) cores."
  echo
  echo "| phase | wall (h:mm:ss) | peak memory (GiB) | feature extraction (train; test) | feature cache on disk |"
  echo "|---|---|---:|---|---|"
  printf '%s\n' "${rows[@]}"
} > "$TABLE"
cat "$TABLE"
