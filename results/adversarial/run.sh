#!/usr/bin/env bash
# Issue 3's check: the natural and the L2-robust (eps 0.5, PGD-3 training) CIFAR-10 resnet20,
# same recipe and 10 epochs (pipelines/train_demo_sources.sh), evaluated on the full CIFAR-10
# test set, clean and under 20-step L2 PGD at eps 0.5 (cleverhans' projected_gradient_descent,
# step size 2.5 * eps / 20, no random start). Writes <model>.json here; a model whose JSON
# exists is skipped. The replication's 30-epoch sources (pipelines/train_sources.sh):
#   MODELS="natural l2-eps0.5 l2-eps0.25 l2-eps1.0" bash results/adversarial/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA_DIR="${TFDS_DATA_DIR:-../shared/tfds}"
for model in ${MODELS:-natural-10ep l2-eps0.5-10ep}; do
  [[ -s "results/adversarial/$model.json" ]] && continue
  python main.py evaluate --model "saved_models/cifar10-resnet20-$model" --dataset cifar10 \
    --attack l2 --eps 0.5 --attack-steps 20 --data-dir "$DATA_DIR" --no-download \
    --json-out "results/adversarial/$model.json"
done
