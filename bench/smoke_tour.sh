#!/usr/bin/env bash
# Runs every command of docs/cli.md's "A tour of the CLI" with small settings (subsets, one
# epoch) on a fresh clone of this repository's HEAD, and prints each command's wall time and a
# final PASS/FAIL table. Commands that need the network or tensorflow_model_server are listed
# as SKIP with the reason. Usage, from the repository root with the virtual environment active:
#     bash bench/smoke_tour.sh [WORK_DIR]
# Environment: TFDS_DATA_DIR (default: ../shared/tfds beside the checkout), SMOKE_CHECKOUT=.
# to run in this working tree instead of a clone (uncommitted changes included),
# SMOKE_STEP_TIMEOUT (seconds per command, default 300). Exits 1 when any command failed.
set -uo pipefail
REPO=$(git rev-parse --show-toplevel)
WORK=$(realpath -m "${1:-$(mktemp -d -t tftransfer-smoke.XXXXXX)}")
mkdir -p "$WORK/logs"
export TFDS_DATA_DIR=$(realpath -m "${TFDS_DATA_DIR:-$REPO/../shared/tfds}")
STEP_TIMEOUT=${SMOKE_STEP_TIMEOUT:-300}

if [[ "${SMOKE_CHECKOUT:-}" == "." ]]; then
    CHECKOUT=$REPO
else
    # A clone is what a newcomer has: committed files only (results/tiny/ finished included).
    CHECKOUT=$WORK/clone
    git clone -q "$REPO" "$CHECKOUT" || { echo "git clone $REPO failed"; exit 1; }
fi
cd "$CHECKOUT" || exit 1
echo "smoke tour of $(git rev-parse --short HEAD) in $CHECKOUT, data $TFDS_DATA_DIR, logs $WORK/logs"

NAMES=() STATUS=() SECONDS_TAKEN=() NOTES=()
T0=$(date +%s)

record() {  # record NAME STATUS SECONDS NOTE
    NAMES+=("$1") STATUS+=("$2") SECONDS_TAKEN+=("$3") NOTES+=("$4")
}

step() {  # step NAME COMMAND...: runs it (logs in $WORK/logs), prints its time and last line
    local name=$1; shift
    local start=$(date +%s) code=0
    timeout "$STEP_TIMEOUT" "$@" >"$WORK/logs/$name.out" 2>"$WORK/logs/$name.err" || code=$?
    local took=$(( $(date +%s) - start )) last
    last=$(tail -n 1 "$WORK/logs/$name.out" | cut -c1-110)
    if (( code == 0 )); then
        record "$name" PASS "$took" "$last"
        printf '%-15s PASS %4ss  %s\n' "$name" "$took" "$last"
    else
        local why="exit $code"; (( code == 124 )) && why="timed out after ${STEP_TIMEOUT}s"
        record "$name" FAIL "$took" "$why: $(tail -n 1 "$WORK/logs/$name.err" | cut -c1-90)"
        printf '%-15s FAIL %4ss  %s: %s\n' "$name" "$took" "$why" "$*"
        tail -n 5 "$WORK/logs/$name.err" | sed 's/^/    /'
    fi
}

skip() {  # skip NAME REASON
    record "$1" SKIP 0 "$2"
    printf '%-15s SKIP        %s\n' "$1" "$2"
}

expect() {  # expect NAME PATTERN FILE: a step passes only if FILE holds PATTERN
    if ! grep -q -- "$2" "$3"; then
        local i=$(( ${#NAMES[@]} - 1 ))
        STATUS[$i]=FAIL NOTES[$i]="expected '$2' in $(basename "$3")"
        echo "    FAIL: expected '$2' in $3"
    fi
}

tour() {  # the tour of docs/cli.md, in its order
M="python main.py"
# 1/4 width, 512 training images, tested on 500 (the full test split takes most of the time).
SRC=(--dataset cifar10 --arch resnet20 --width 0.25 --train-images 512 --set data.test_images=500)
# A tiny image folder (train/ + test/ class folders) for `transfer --target path/to/images`.
python - "$WORK/images" <<'EOF'
import sys
from pathlib import Path
import numpy as np
from PIL import Image
rng = np.random.default_rng(0)
for split, count in (("train", 8), ("test", 4)):
    for label in ("a", "b"):
        folder = Path(sys.argv[1]) / split / label
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")
EOF
cat >"$WORK/mine.toml" <<EOF
name = "mine"
sources = ["$WORK/nat", "$WORK/rob"]
targets = ["$WORK/images"]
train_images = [8]
unfrozen_blocks = [0]
seeds = [0]
epochs = 1
EOF

step version      $M --version
step help         $M transfer --help
step datasets     $M datasets
if $M sources --help >/dev/null 2>&1; then
    step sources  $M sources
else
    skip sources  "no sources command in this commit"
fi
step pretrain     $M pretrain "${SRC[@]}" --epochs 1 --out "$WORK/nat"
step pretrain-rob $M pretrain "${SRC[@]}" --epochs 1 --out "$WORK/rob" --attack l2 --eps 0.5 \
    --attack-steps 3
step pretrain-ext $M pretrain "${SRC[@]}" --epochs 2 --out "$WORK/nat"  # extends it
step evaluate     $M evaluate --model "$WORK/rob" --dataset cifar10 --attack l2 --eps 0.5 \
    --attack-steps 3 --max-examples 200
expect evaluate "evaluated 200/200 images" "$WORK/logs/evaluate.err"
step transfer     $M transfer --target fashion_mnist --source "$WORK/rob" --train-images 100 \
    --unfrozen-blocks 3 --epochs 3 --seed 0 --eval-every 1 --curve-test-images 200 \
    --test-images 500 --out "$WORK/run"  # N = 100: one SGD step per epoch
# 3 -> 6 epochs: extending a run of 1 or 2 epochs stops with "The checkpoint does not fit this
# run's network" (its step schedule has no boundary, so its optimizer holds one more
# variable); 2026-12-01, reported with issue 22.
step resume       $M transfer --resume "$WORK/run" --epochs 6
step transfer-dir $M transfer --target "$WORK/images" --source "$WORK/rob" --epochs 1 \
    --out "$WORK/run-images"
skip transfer-tfds "oxford_flowers102 needs the network (TFDS downloads it)"
step recipe       $M transfer --target mnist --source "$WORK/rob" --train-images 100 \
    --unfrozen-blocks 3 --recipe utrera2021 --set epochs=1 --test-images 500 --out "$WORK/paper"
step sweep-list   $M sweep --list
step sweep        $M sweep --config tiny --results "$WORK/tiny" --max-runs 2
expect sweep '"ran": 2' "$WORK/logs/sweep.out"
step sweep-done   $M sweep --config tiny      # the committed, finished demo: says why nothing ran
expect sweep-done "give it a fresh directory" "$WORK/logs/sweep-done.err"
step sweep-src    $M sweep --config replication --sources cifar10-resnet20-natural \
    --results "$WORK/replication" --max-runs 1
step sweep-grid   $M sweep --grid "$WORK/mine.toml" --results "$WORK/mine"
step report       $M report --results results/tiny --out "$WORK/report" \
    --baseline cifar10-resnet20-natural-3ep
step convert-list $M convert --list
skip convert      "needs a published PyTorch checkpoint file (network) and pip install -e .[torch]"
skip transfer-r50 "robust-resnet50-l2-eps3 is downloaded on first use (network)"
step saliency     $M saliency --models "$WORK/nat" "$WORK/rob" --dataset cifar10 --images 2 \
    --out "$WORK/sal.png"
step influence    $M influence --model "$WORK/run" --train-images 100 --test-images 20 \
    --out "$WORK/influence"
step tune         $M tune --target mnist --source "$WORK/rob" --train-images 100 \
    --tuner random --max-trials 1 --max-epochs 1 --test-images 200 --dir "$WORK/tune"
expect tune "Search: Running Trial #1" "$WORK/logs/tune.err"  # keras-tuner's numbering
expect tune "best trial: #1 " "$WORK/logs/tune.err"              # ours, the same
step export       $M export --model "$WORK/run" --name smoke --base "$WORK/serving"
skip serve        "needs tensorflow_model_server (not installable here)"
skip predict      "needs a running TF Serving server (serve)"
}

# bash reads a script as it runs it; in functions it has parsed everything before the first
# command runs, so editing this file during a tour cannot break that tour.
main() {
    tour

    TOTAL=$(( $(date +%s) - T0 ))
    echo
    printf '%-15s %-6s %6s  %s\n' COMMAND RESULT TIME NOTE
    failed=0
    for i in "${!NAMES[@]}"; do
        [[ ${STATUS[$i]} == FAIL ]] && failed=$(( failed + 1 ))
        printf '%-15s %-6s %5ss  %s\n' "${NAMES[$i]}" "${STATUS[$i]}" "${SECONDS_TAKEN[$i]}" \
            "${NOTES[$i]:0:80}"
    done
    echo "total ${TOTAL}s on $(nproc) cores; $failed failed; logs in $WORK/logs"
    (( failed == 0 ))
}
main "$@"; exit
