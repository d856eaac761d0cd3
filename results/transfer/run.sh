#!/usr/bin/env bash
# Issue 4's check: fine-tuning a CIFAR-10 resnet20 source (last stage unfrozen) vs the same
# architecture trained from scratch, on the same 400 training images (same seed -> same images),
# MNIST and Fashion-MNIST, seeds 0-2, full 10,000-image test sets. Results: results.jsonl.
set -euo pipefail
cd "$(dirname "$0")/../.."
SOURCE="${SOURCE:-cifar10-resnet20-natural-10ep}"
DATA_DIR="${TFDS_DATA_DIR:-../shared/tfds}"
OUT=results/transfer
: > "$OUT/results.jsonl"
for target in mnist fashion_mnist; do
  for seed in 0 1 2; do
    python main.py transfer --target "$target" --source "$SOURCE" --train-images 400 \
      --unfrozen-blocks 3 --epochs 30 --seed "$seed" --data-dir "$DATA_DIR" --no-download \
      --out "runs/transfer-check/$target-transfer-s$seed" | tail -1 \
      | python -c "import json,sys; r=json.load(sys.stdin); r['method']='transfer'; print(json.dumps(r))" \
      >> "$OUT/results.jsonl"
    # From scratch: pretrain's own recipe (cosine lr, pad-and-crop), 100 epochs on the same images.
    rm -rf "runs/transfer-check/$target-scratch-s$seed"
    python main.py pretrain --dataset "$target" --arch resnet20 --train-images 400 --seed "$seed" \
      --epochs 100 --eval-every 100 --image-size 32 --data-dir "$DATA_DIR" --no-download \
      --out "runs/transfer-check/$target-scratch-s$seed" | tail -1 \
      | python -c "import json,sys; r=json.load(sys.stdin); r['method']='scratch'; r['target']=r['dataset']; r['test_accuracy']=r['accuracy']; print(json.dumps(r))" \
      >> "$OUT/results.jsonl"
  done
done
python results/transfer/summarize.py
