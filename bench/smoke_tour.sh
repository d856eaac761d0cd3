#!/usr/bin/env bash
# Runs every command of the README's "A tour of the CLI" with small settings (subsets, one
# epoch) into a fresh temporary folder, and prints each command's wall time. Commands that
# need the network or tensorflow_model_server are skipped, with that reason. Usage, from the
# repository root with the virtual environment active:
#     TFDS_DATA_DIR=../shared/tfds bash bench/smoke_tour.sh [WORK_DIR]
# Exits non-zero at the first command that fails.
set -euo pipefail
WORK=${1:-$(mktemp -d -t tftransfer-smoke.XXXXXX)}
mkdir -p "$WORK"
export TFDS_DATA_DIR=${TFDS_DATA_DIR:-../shared/tfds}
T=$(date +%s)

step() {  # step NAME COMMAND...: runs it quietly, prints its time and the result's last line
  local name=$1; shift
  local start=$(date +%s)
  if ! "$@" >"$WORK/$name.out" 2>"$WORK/$name.err"; then
    echo "FAILED $name: $*"; tail -5 "$WORK/$name.err"; exit 1
  fi
  printf '%-12s %4ss  %s\n' "$name" $(( $(date +%s) - start )) "$(tail -c 160 "$WORK/$name.out")"
}
skip() { printf '%-12s skipped: %s\n' "$1" "$2"; }

M="python main.py"
step datasets  $M datasets
step pretrain  $M pretrain --dataset cifar10 --arch resnet20 --width 0.25 --epochs 1 \
    --train-images 512 --out "$WORK/nat"
step pretrain-rob $M pretrain --dataset cifar10 --arch resnet20 --width 0.25 --epochs 1 \
    --train-images 512 --out "$WORK/rob" --attack l2 --eps 0.5 --attack-steps 3
step pretrain-ext $M pretrain --dataset cifar10 --arch resnet20 --width 0.25 --epochs 2 \
    --train-images 512 --out "$WORK/nat"
step evaluate  $M evaluate --model "$WORK/rob" --dataset cifar10 --attack l2 --eps 0.5 \
    --attack-steps 3 --max-examples 200
step transfer  $M transfer --target fashion_mnist --source "$WORK/rob" --train-images 100 \
    --unfrozen-blocks 3 --epochs 1 --test-images 500 --out "$WORK/run"
step resume    $M transfer --resume "$WORK/run" --epochs 2
step recipe    $M transfer --target mnist --source "$WORK/rob" --train-images 100 \
    --unfrozen-blocks 3 --recipe utrera2021 --set epochs=1 --test-images 500 --out "$WORK/paper"
skip transfer-flowers "oxford_flowers102 needs the network (TFDS download)"
step sweep-list $M sweep --list
step sweep     $M sweep --config tiny --results "$WORK/tiny" --max-runs 2
step report    $M report --results results/tiny --out "$WORK/report" --baseline cifar10-resnet20-natural-3ep
step convert-list $M convert --list
skip convert   "a published checkpoint needs the network (and pip install -e .[torch])"
step saliency  $M saliency --models "$WORK/nat" "$WORK/rob" --dataset cifar10 --images 2 \
    --out "$WORK/sal.png"
step influence $M influence --model "$WORK/run" --train-images 100 --test-images 20 \
    --out "$WORK/influence"
step tune      $M tune --target mnist --source "$WORK/rob" --train-images 100 --tuner random \
    --max-trials 1 --max-epochs 1 --test-images 200 --dir "$WORK/tune"
step export    $M export --model "$WORK/run" --name smoke --base "$WORK/serving"
skip serve     "needs tensorflow_model_server (not installable here)"
skip predict   "needs a running TF Serving server (serve)"
echo "total $(( $(date +%s) - T ))s in $WORK"
