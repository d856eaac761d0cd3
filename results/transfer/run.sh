#!/usr/bin/env bash
# Issue 4's check: fine-tuning CIFAR-10 resnet20 sources (last stage unfrozen) vs the same
# architecture trained from scratch, on the same 400 training images (same seed -> same
# images), MNIST and Fashion-MNIST, seeds 0-2, full 10,000-image test sets.
# Methods (one row each in results.jsonl; the script is resumable: rows already there are kept):
#   transfer-natural     fine-tune cifar10-resnet20-natural-10ep with the paper's recipe
#   transfer-robust      fine-tune cifar10-resnet20-l2-eps0.5-10ep, same recipe
#   transfer-augmented   fine-tune the natural source with pad-and-crop augmentation, plus
#                        flip on Fashion-MNIST (never on digits: data.NO_FLIP_DATASETS)
#                        (--augment; no feature cache), 30 epochs
#   scratch-matched      from random weights with the fine-tuning recipe: 30 epochs, SGD lr 0.1
#                        x0.1 every 10 epochs, batch 128, no augmentation
#   scratch-augmented    from random weights with pretrain's own recipe: 100 epochs, cosine lr,
#                        pad-and-crop and flip augmentation (stronger than the fine-tuning one)
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA_DIR="${TFDS_DATA_DIR:-../shared/tfds}"
OUT=results/transfer
RESULTS="$OUT/results.jsonl"
METHODS="${METHODS:-transfer-natural transfer-robust transfer-augmented scratch-matched scratch-augmented}"
touch "$RESULTS"

have() {  # have TARGET METHOD SEED: is the row already in results.jsonl?
  python - "$RESULTS" "$@" <<'PY'
import json, sys
path, target, method, seed = sys.argv[1:]
rows = [json.loads(line) for line in open(path) if line.strip()]
sys.exit(0 if any(r["target"] == target and r["method"] == method and r["seed"] == int(seed)
                  for r in rows) else 1)
PY
}

record() {  # record METHOD: the command's last JSON line -> one row of results.jsonl
  tail -1 | python -c "
import json, sys
r = json.load(sys.stdin)
r['method'] = sys.argv[1]
r.setdefault('target', r.get('dataset'))
r.setdefault('test_accuracy', r.get('accuracy'))
print(json.dumps(r))" "$1" >> "$RESULTS"
}

run() {  # run TARGET METHOD SEED
  local target=$1 method=$2 seed=$3 dir="runs/transfer-check/$1-$2-s$3"
  local common=(--train-images 400 --seed "$seed" --data-dir "$DATA_DIR" --no-download --out "$dir")
  rm -rf "$dir"
  case $method in
    transfer-natural|transfer-robust)
      local source=cifar10-resnet20-natural-10ep
      [[ $method == transfer-robust ]] && source=cifar10-resnet20-l2-eps0.5-10ep
      python main.py transfer --target "$target" --source "$source" --unfrozen-blocks 3 \
        --epochs 30 "${common[@]}" ;;
    transfer-augmented)
      python main.py transfer --target "$target" --source cifar10-resnet20-natural-10ep \
        --unfrozen-blocks 3 --epochs 30 --augment --eval-every 0 "${common[@]}" ;;
    scratch-matched)
      python main.py pretrain --dataset "$target" --arch resnet20 --image-size 32 --epochs 30 \
        --schedule step --no-augment --eval-every 30 "${common[@]}" ;;
    scratch-augmented)
      python main.py pretrain --dataset "$target" --arch resnet20 --image-size 32 --epochs 100 \
        --eval-every 100 "${common[@]}" ;;
  esac | record "$method"
}

for target in mnist fashion_mnist; do
  for method in $METHODS; do
    for seed in 0 1 2; do
      have "$target" "$method" "$seed" || run "$target" "$method" "$seed"
    done
  done
done
python -m tftransfer.report.analyses.transfer_methods results/transfer
