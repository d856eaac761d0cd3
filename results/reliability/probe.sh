#!/usr/bin/env bash
# Reliability probes (issues 20 and 33): bad inputs, impossible flags, corrupt and malicious files,
# kill -9 mid-run, concurrent sweeps. Reruns every probe offline with tiny settings and
# prints one line per probe:
#
#   PASS|FAIL | probe | command | observed outcome (exit code: last line, shortened; checks)
#
# then a summary; exits 1 when any probe failed. About 40-50 minutes for both rounds on this 2-core
# machine under load (38 min at c9fa005, 52 min at ebb4348: results/reliability/probe.log). Usage, from anywhere:
#
#   bash results/reliability/probe.sh          # KEEP=1 keeps the temporary directory
#   ROUNDS=2 ONLY='p2_planted|p2_bad' bash results/reliability/probe.sh   # a few probes only
#
# ROUNDS (default "1 2") picks the rounds; ONLY (an extended regex) keeps the round-two probe
# functions whose names match it. A run with either set is not a full run: probe.log and the
# README's counts come from a full run.
#
# Everything it writes goes to a `mktemp -d` directory (removed at the end unless KEEP=1);
# in the printed commands that directory is "$T". Needs the dev and torch extras
# (pip install -e ".[cpu,dev,torch]") and TFDS_DATA_DIR with mnist (default ../shared/tfds).
set -u

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$REPO" || exit 2
if [ -z "${VIRTUAL_ENV:-}" ] && [ -f .venv/bin/activate ]; then . .venv/bin/activate; fi
export TFDS_DATA_DIR=${TFDS_DATA_DIR:-$REPO/../shared/tfds}
export TF_CPP_MIN_LOG_LEVEL=2 PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
T=$(mktemp -d "${TMPDIR:-/tmp}/tftransfer-probe.XXXXXX")
export T
LOG=$T/log
mkdir -p "$LOG"
STEP_TIMEOUT=${STEP_TIMEOUT:-300}     # seconds any one command may take
START=$SECONDS

cleanup() {  # ends this script's background jobs still running (never other processes)
    local pid
    for pid in $(jobs -rp); do kill -9 "$pid" 2>/dev/null; done
    if [ "${KEEP:-0}" = 1 ]; then echo "kept $T" >&2; else rm -rf "$T"; fi
}
trap cleanup EXIT

PY="python main.py"

# --- helpers ---------------------------------------------------------------------------------

show() {  # the command as printed: the temp dir as $T
    local s="$*"
    printf '%s' "${s//$T/\$T}"
}

last_line() {  # last non-blank line of a file (after a progress bar's \r), shortened
    tr '\r' '\n' <"$1" | grep -v '^[[:space:]]*$' | tail -n 1 | sed "s#$T#\$T#g" \
        | cut -c 1-"${2:-180}"
}

# probe NAME CMD...: runs CMD (stdout and stderr to $LOG/NAME.out/.err) and starts a probe
probe() {
    NAME=$1
    shift
    CMD=$(show "$@")
    OK=1
    NOTES=""
    timeout "$STEP_TIMEOUT" "$@" >"$LOG/$NAME.out" 2>"$LOG/$NAME.err"
    RC=$?
    OUTF=$LOG/$NAME.out
    ERRF=$LOG/$NAME.err
}

check() {  # check DESCRIPTION CMD...: the probe passes only if CMD succeeds
    local what=$1
    shift
    if "$@" >/dev/null 2>&1; then NOTES+="; $what"; else NOTES+="; NOT $what"; OK=0; fi
}

no_traceback() { ! grep -q "Traceback" "$OUTF" "$ERRF"; }

strict_json_last_line() {  # the last stdout line is strict JSON (no NaN/Infinity)
    tail -n 1 "$1" | python -c '
import json, sys
def refuse(constant):
    raise ValueError(constant)
json.loads(sys.stdin.read(), parse_constant=refuse)'
}

json_field() {  # json_field FILE EXPR: evaluates EXPR on the last stdout line as `r`
    tail -n 1 "$1" | python -c "import json, sys; r = json.loads(sys.stdin.read()); print($2)"
}

# expect_refusal REGEX: exit 2, no traceback, exactly one "error:" line, and that line last
# on stderr, matching REGEX (grep -E)
expect_refusal() {
    local line
    line=$(last_line "$ERRF" 100000)
    OUTCOME="exit $RC: $(last_line "$ERRF")"
    [ "$RC" = 2 ] || OK=0
    no_traceback || { OK=0; NOTES+="; Traceback"; }
    [ "$(grep -c 'error: ' "$ERRF")" = 1 ] || { OK=0; NOTES+="; not one error line"; }
    printf '%s' "$line" | grep -q 'error: ' || OK=0
    printf '%s' "$line" | grep -Eq -- "$1" || { OK=0; NOTES+="; message does not match /$1/"; }
}

# expect_success [REGEX]: exit 0, no traceback, strict-JSON last stdout line; REGEX (if any)
# found in stderr or stdout
expect_success() {
    OUTCOME="exit $RC: $(last_line "$OUTF" 110)"
    [ "$RC" = 0 ] || { OK=0; OUTCOME="exit $RC: $(last_line "$ERRF")"; }
    no_traceback || { OK=0; NOTES+="; Traceback"; }
    strict_json_last_line "$OUTF" 2>/dev/null || { OK=0; NOTES+="; last stdout line not strict JSON"; }
    if [ -n "${1:-}" ]; then
        cat "$ERRF" "$OUTF" | grep -Eq -- "$1" || { OK=0; NOTES+="; /$1/ not in the output"; }
    fi
}

report() {  # the probe's line: PASS|FAIL | name | command | outcome; checks
    local verdict=PASS line
    [ "$OK" = 1 ] || verdict=FAIL
    line=$(printf '%s | %s | %s | %s%s' "$verdict" "$NAME" "$CMD" "$OUTCOME" "$NOTES")
    printf '%s\n' "$line"
    # A spawned probe's line is recorded by `barrier`; one run here is recorded now.
    [ "${SPAWNED:-0}" = 1 ] || printf '%s\n' "$line" >>"$LOG/report.txt"
}

refused() {  # refused NAME REGEX CMD...: a probe whose expected outcome is expect_refusal
    local name=$1 regex=$2
    shift 2
    probe "$name" "$@"
    expect_refusal "$regex"
    report
}

wait_for() {  # wait_for SECONDS CMD...: polls CMD every 0.1 s; 1 when time ran out
    local deadline=$((SECONDS + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.1
    done
}

csv_rows() { [ -f "$1" ] && python -c 'import csv, sys; print(len(list(csv.DictReader(open(sys.argv[1])))))' "$1" || echo 0; }
csv_unique_keys() { python -c 'import csv, sys; print(len({r["run_key"] for r in csv.DictReader(open(sys.argv[1]))}))' "$1"; }
no_files_in() { [ -z "$(ls -A "$1" 2>/dev/null)" ]; }

# spawn FUNC ARGS...: runs one probe (a function ending in `report`) in the background, JOBS
# at a time; `barrier` waits for them and prints their lines in the order they were spawned.
# Probes that depend on each other, or on timing (kill -9), are separated by barriers.
JOBS=${JOBS:-2}
SLOT=0
SPAWNED_PIDS=()
mkdir -p "$LOG/lines"
: >"$LOG/report.txt"
running_spawned() {
    local pid n=0
    for pid in ${SPAWNED_PIDS[@]+"${SPAWNED_PIDS[@]}"}; do kill -0 "$pid" 2>/dev/null && n=$((n + 1)); done
    echo "$n"
}
spawn() {
    SLOT=$((SLOT + 1))
    while [ "$(running_spawned)" -ge "$JOBS" ]; do sleep 0.2; done
    ( SPAWNED=1; "$@" ) >"$LOG/lines/$(printf %03d "$SLOT")" 2>&1 &
    SPAWNED_PIDS+=($!)
}
barrier() {
    local pid f
    for pid in ${SPAWNED_PIDS[@]+"${SPAWNED_PIDS[@]}"}; do wait "$pid" 2>/dev/null; done
    SPAWNED_PIDS=()
    for f in "$LOG"/lines/*; do
        [ -e "$f" ] || continue
        cat "$f"
        cat "$f" >>"$LOG/report.txt"
        rm -f "$f"
    done
}

# --- fixtures: tiny models, image folders, checkpoints, files, all under $T --------------------

echo "tftransfer reliability probes, $(git rev-parse --short HEAD 2>/dev/null), temp dir $T" >&2
echo "writing fixtures ..." >&2
python - <<'EOF' >"$LOG/fixtures.log" 2>&1 || { echo "fixtures failed, see below" >&2; tail -20 "$LOG/fixtures.log" >&2; exit 2; }
import os, shutil
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image

from tests.helpers import make_image_folder, make_source

T = Path(os.environ["T"])
src = make_source(T / "src")                             # random resnet20 (width 1/4), 10 classes

img = T / "img"
make_image_folder(img / "ok", classes=("a", "b"), per_class=10, split=True)
# Corrupt, zero-byte and non-image files beside good ones.
make_image_folder(img / "dirty", classes=("a", "b"), per_class=10, split=True)
good = (img / "dirty" / "train" / "a" / "0.png").read_bytes()
(img / "dirty" / "train" / "a" / "zero.png").write_bytes(b"")
(img / "dirty" / "train" / "a" / "truncated.png").write_bytes(good[:60])
(img / "dirty" / "train" / "b" / "notes.png").write_text("this is not an image\n")
(img / "dirty" / "train" / "b" / "readme.txt").write_text("not an image extension\n")
make_image_folder(img / "oneclass", classes=("a",), per_class=10)
# A class folder whose files are all unreadable.
make_image_folder(img / "deadclass", classes=("a", "b", "c"), per_class=10, split=True)
for f in (img / "deadclass" / "train" / "c").iterdir():
    f.write_bytes(b"not an image")
# A test/ class that train/ lacks.
make_image_folder(img / "extratest", classes=("a", "b"), per_class=10, split=True)
make_image_folder(T / "zebra", classes=("zebra",), per_class=3)
(T / "zebra" / "zebra").rename(img / "extratest" / "test" / "zebra")
# A 1-bit BMP: PIL reads it, tf.io.decode_image does not.
make_image_folder(img / "bmp1", classes=("a", "b"), per_class=12)
Image.fromarray(np.eye(16, dtype=bool)).convert("1").save(img / "bmp1" / "a" / "one_bit.bmp")
# Class folders without any image file.
(img / "noimages" / "a").mkdir(parents=True)
(img / "noimages" / "b").mkdir(parents=True)
(img / "noimages" / "a" / "x.txt").write_text("text")

# Broken model.keras files.
for name, cut in (("trunc", 20000), ("empty", 0)):
    shutil.copytree(src, T / name)
    model_file = T / name / "model.keras"
    model_file.write_bytes(model_file.read_bytes()[:cut])

# A SavedModel whose signature writes a file when run (the op an attack would use).
marker = T / "hostile_marker.txt"
class Hostile(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.float32, name="images")])
    def serve(self, images):
        tf.io.write_file(str(marker), "written by the SavedModel")
        return {"logits": tf.zeros([tf.shape(images)[0], 10])}
module = Hostile()
tf.saved_model.save(module, str(T / "hostile"), signatures={"serving_default": module.serve})
assert not marker.exists()

# PyTorch checkpoints for convert: a good tiny resnet18 (width 1/8, 5 classes) and broken ones.
import torch
from tests.convert_test import tiny_state_dict
ck = T / "ckpt"
ck.mkdir()
state = tiny_state_dict()
torch.save(state, ck / "ok.pth")
(ck / "truncated.pth").write_bytes((ck / "ok.pth").read_bytes()[:5000])
renamed = dict(state)
renamed["classifier.weight"] = renamed.pop("fc.weight")
torch.save(renamed, ck / "renamed.pth")
wrong = dict(state)
wrong["layer2.0.conv1.weight"] = torch.zeros(16, 8, 5, 5)
torch.save(wrong, ck / "wrongshape.pth")
nan = {k: v.clone() for k, v in state.items()}
nan["layer1.0.conv1.weight"].fill_(float("nan"))
torch.save(nan, ck / "nan.pth")
class Payload:  # unpickling it runs os.system: what a malicious checkpoint does
    def __reduce__(self):
        return (os.system, (f"touch {T / 'pickle_marker.txt'}",))
torch.save({"state_dict": state, "extra": Payload()}, ck / "malicious.pt")
(ck / "notes.txt").write_text("this is not a checkpoint\n")

# Images for the serving signature and predict.
from tests.export_test import constant_png
(T / "ok.png").write_bytes((img / "ok" / "test" / "a" / "0.png").read_bytes())
(T / "bomb.png").write_bytes(constant_png(12000, 12000))   # 144 MP in about 440 KB
print("fixtures written")
EOF

# --- bad input data: one sentence, exit 2 (or a warning and a run when files can be skipped) ---

if [[ " ${ROUNDS:-1 2} " == *" 1 "* ]]; then  # round one (not indented: it is most of the file)

spawn refused unknown-dataset "Unknown dataset 'no_such_dataset'" \
    $PY transfer --target no_such_dataset --source "$T/src" --train-images 20 --epochs 1 --test-images 50
spawn refused dataset-not-prepared-offline "not prepared" \
    $PY transfer --target cifar100 --source "$T/src" --train-images 20 --epochs 1 --test-images 50 --no-download
spawn refused missing-folder "nowhere.*(does not exist|neither a TFDS dataset nor a folder)" \
    $PY transfer --target "$T/img/nowhere/" --source "$T/src" --train-images 20 --epochs 1

p_dirty() {
    probe corrupt-zero-byte-non-image-files $PY transfer --target "$T/img/dirty" --source "$T/src" \
        --train-images 20 --epochs 1 --out "$T/runs/dirty"
    expect_success "skipped 3 unreadable image file\(s\)"
    check "3 files skipped with a warning" grep -q "warning: skipped 3 unreadable image file(s)" "$ERRF"
    check "trained on 20 images" test "$(json_field "$OUTF" 'r["train_images"]' 2>/dev/null)" = 20
    report
}
spawn p_dirty
spawn refused one-class-folder "has 1 class sub-folder\(s\); a classifier needs at least 2" \
    $PY transfer --target "$T/img/oneclass" --source "$T/src" --train-images 20 --epochs 1
spawn refused class-folder-all-unreadable "Class folder\(s\) '.*/train/c' have no readable images" \
    $PY transfer --target "$T/img/deadclass" --source "$T/src" --train-images 20 --epochs 1
spawn refused test-class-missing-from-train "class folder\(s\) 'zebra' that .*train' does not have" \
    $PY transfer --target "$T/img/extratest" --source "$T/src" --train-images 20 --epochs 1
spawn refused folder-without-images "no readable images" \
    $PY transfer --target "$T/img/noimages" --source "$T/src" --epochs 1
p_bmp() {
    probe one-bit-bmp $PY transfer --target "$T/img/bmp1" --source "$T/src" --train-images 16 \
        --epochs 1 --out "$T/runs/bmp1"
    expect_success "skipped 1 unreadable image file\(s\) .*one_bit\.bmp"
    check "the BMP skipped with a warning naming it" grep -q "warning: skipped 1 unreadable image file(s) .*one_bit.bmp" "$ERRF"
    report
}
spawn p_bmp

# --- impossible flags --------------------------------------------------------------------------

spawn refused seed-negative "seed must be a whole number from 0 to 4294967295, got -1\." \
    $PY transfer --target mnist --source "$T/src" --train-images 20 --epochs 1 --test-images 50 --seed -1
spawn refused seed-huge "seed must be a whole number from 0 to 4294967295, got 99999999999\." \
    $PY transfer --target mnist --source "$T/src" --train-images 20 --epochs 1 --test-images 50 --seed 99999999999
spawn refused pretrain-seed-negative "seed must be a whole number" \
    $PY pretrain --dataset mnist --out "$T/pre_seed" --epochs 1 --seed -1
spawn refused lr-inf "learning_rate must be a finite number, got inf\." \
    $PY transfer --target mnist --source "$T/src" --train-images 20 --epochs 1 --test-images 50 --lr inf
spawn refused weight-decay-nan "weight_decay must be a finite number, got nan\." \
    $PY transfer --target mnist --source "$T/src" --train-images 20 --epochs 1 --test-images 50 --set optim.weight_decay=nan
spawn refused eps-inf "eps must be a finite number, got inf\." \
    $PY pretrain --dataset mnist --out "$T/pre_eps" --epochs 1 --attack l2 --eps inf
p_lr1e39() {
    probe lr-1e39-inf-in-float32 $PY transfer --target "$T/img/ok" --source "$T/src" --train-images 20 \
        --epochs 1 --lr 1e39 --out "$T/runs/lr1e39"
    expect_refusal "diverged"
    check "no model.keras or metrics.json written" test ! -e "$T/runs/lr1e39/model.keras" -a ! -e "$T/runs/lr1e39/metrics.json"
    report
}
spawn p_lr1e39
spawn refused train-images-1 "train_images must be at least 2, got 1\." \
    $PY transfer --target mnist --source "$T/src" --train-images 1 --epochs 1 --test-images 50
spawn refused train-images-more-than-available "more than the .* images available" \
    $PY transfer --target "$T/img/ok" --source "$T/src" --train-images 5000 --epochs 1
spawn refused epochs-0 "epochs" \
    $PY transfer --target mnist --source "$T/src" --train-images 20 --epochs 0 --test-images 50
spawn refused shard-out-of-range "shard" \
    $PY sweep --config tiny --results "$T/sweep_bad" --shard 5/4 --max-runs 1
spawn refused shard-zero "shard" \
    $PY sweep --config tiny --results "$T/sweep_bad" --shard 0/4 --max-runs 1
spawn refused shard-garbage "shard" \
    $PY sweep --config tiny --results "$T/sweep_bad" --shard abc --max-runs 1
spawn refused max-runs-0 "max-runs|max_runs" \
    $PY sweep --config tiny --results "$T/sweep_bad" --max-runs 0
spawn refused unknown-sweep "no_such_grid" \
    $PY sweep --config no_such_grid --results "$T/sweep_bad"

# --- checkpoints for convert -------------------------------------------------------------------

CONV="--arch resnet18 --width 0.125 --image-size 32"
p_convert_ok() {
    probe convert-good-checkpoint $PY convert --checkpoint "$T/ckpt/ok.pth" $CONV --out "$T/conv/ok"
    expect_success
    report
}
spawn p_convert_ok
spawn refused convert-truncated "ckpt/truncated\.pth" \
    $PY convert --checkpoint "$T/ckpt/truncated.pth" $CONV --out "$T/conv/truncated"
spawn refused convert-renamed-key "'(classifier|fc)\.weight'" \
    $PY convert --checkpoint "$T/ckpt/renamed.pth" $CONV --out "$T/conv/renamed"
spawn refused convert-wrong-shape "'layer2\.0\.conv1\.weight' has shape \(16, 8, 5, 5\)" \
    $PY convert --checkpoint "$T/ckpt/wrongshape.pth" $CONV --out "$T/conv/wrongshape"
p_convert_nan() {
    probe convert-nan-weights $PY convert --checkpoint "$T/ckpt/nan.pth" $CONV --out "$T/conv/nan"
    expect_refusal "nan|NaN|finite"
    check "no model written" test ! -e "$T/conv/nan/model.keras"
    report
}
spawn p_convert_nan
p_convert_pickle() {
    probe convert-malicious-pickle $PY convert --checkpoint "$T/ckpt/malicious.pt" $CONV --out "$T/conv/malicious"
    expect_refusal "cannot be read safely.*--trust-pickle"
    check "payload not run (no marker file)" test ! -e "$T/pickle_marker.txt"
    report
}
spawn p_convert_pickle
spawn refused convert-not-a-checkpoint "notes\.txt' is not a PyTorch checkpoint" \
    $PY convert --checkpoint "$T/ckpt/notes.txt" $CONV --out "$T/conv/notes"
spawn refused convert-missing-file "nowhere\.pt' does not exist" \
    $PY convert --checkpoint "$T/ckpt/nowhere.pt" $CONV --out "$T/conv/nowhere"

# --- model files: corrupt model.keras, untrusted SavedModels, the toolkit's own export -----------

spawn refused truncated-model-keras "trunc/model\.keras' is corrupt.*not a complete zip archive" \
    $PY evaluate --model "$T/trunc" --dataset mnist --max-examples 50
spawn refused empty-model-keras "empty/model\.keras' is corrupt.*empty: 0 bytes" \
    $PY evaluate --model "$T/empty" --dataset mnist --max-examples 50
spawn refused empty-model-keras-as-source "is corrupt" \
    $PY transfer --target mnist --source "$T/empty" --train-images 20 --epochs 1 --test-images 50
p_hostile() {
    probe hostile-savedmodel-refused $PY evaluate --model "$T/hostile" --dataset mnist --max-examples 50
    expect_refusal "Refusing to load the SavedModel.*--trust-saved-model"
    check "file not written" test ! -e "$T/hostile_marker.txt"
    report
}
spawn p_hostile
spawn refused hostile-savedmodel-as-source "SavedModel" \
    $PY transfer --target mnist --source "$T/hostile" --train-images 20 --epochs 1 --test-images 50
p_export() {
    probe export-own-model $PY export --model "$T/src" --name tiny --base "$T/exports"
    expect_success
    check "metadata records the pixel cap" grep -q '"max_image_pixels"' "$T/exports/tiny/1/assets.extra/tftransfer.json"
    report
}
spawn p_export
# transfer --out into a directory holding another finished run: first the seed-0 run
p_seed0() {
    probe transfer-out-seed0 $PY transfer --target "$T/img/ok" --source "$T/src" --train-images 20 \
        --epochs 1 --seed 0 --out "$T/runs/shared"
    expect_success
    report
}
spawn p_seed0
barrier  # the hostile model's marker, the export and the seed-0 run are used below

p_hostile_trusted() {
    probe hostile-savedmodel-trusted $PY evaluate --model "$T/hostile" --trust-saved-model --dataset mnist --max-examples 50
    expect_success "--trust-saved-model"
    check "file written (the flag's warning is real)" test -e "$T/hostile_marker.txt"
    report
}
spawn p_hostile_trusted
p_own_export() {
    probe own-export-as-model $PY evaluate --model "$T/exports/tiny/1" --dataset mnist --max-examples 50
    expect_success
    report
}
spawn p_own_export
spawn refused own-export-as-source "cannot be fine-tuned" \
    $PY transfer --target mnist --source "$T/exports/tiny/1" --train-images 20 --epochs 1 --test-images 50
p_seed1() {
    cp "$T/runs/shared/metrics.json" "$T/metrics.seed0.json" 2>/dev/null
    probe transfer-out-holding-another-run $PY transfer --target "$T/img/ok" --source "$T/src" \
        --train-images 20 --epochs 1 --seed 1 --out "$T/runs/shared"
    expect_refusal "holds a finished transfer run of .* \(N=20, blocks 0, seed 0\) that differs from this one in seed \(0 there, 1 here\)"
    check "seed-0 metrics.json kept as it was" cmp -s "$T/runs/shared/metrics.json" "$T/metrics.seed0.json"
    report
}
spawn p_seed1

# --- malformed requests: the export's signatures in-process, and predict against a local -------
# --- stand-in for TF Serving's REST API (tests/export_test.FakeTFServing, running the export) ---

SIG='import sys, time, tensorflow as tf
from pathlib import Path
sig = tf.saved_model.load(sys.argv[1]).signatures
T = Path(sys.argv[2])
ok, bomb = (T / "ok.png").read_bytes(), (T / "bomb.png").read_bytes()
case = sys.argv[3]
def refusal(**kw):
    import resource
    sig["serving_default"](image_bytes=tf.constant([ok]))  # warm up: traced, weights loaded
    memory = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.monotonic()
    try:
        sig[kw.pop("name")](**kw)
    except tf.errors.InvalidArgumentError as e:
        lines = [l for l in e.message.splitlines() if l.strip()]
        line = [l for l in lines if "of the batch" in l or l.startswith("Invalid")] or lines
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - memory
        print(f"refused in {time.monotonic() - start:.1f} s, peak memory +{grown:.0f} MB: "
              f"{line[0].strip()[:160]}")
        return
    print("accepted")
if case == "empty":
    for name, kw in (("serving_default", dict(image_bytes=tf.constant([], tf.string))),
                     ("predict_images", dict(images=tf.zeros([0, 32, 32, 3])))):
        out = sig[name](**kw)
        print(name, "probabilities", tuple(out["probabilities"].shape), "classes", tuple(out["classes"].shape))
elif case == "bomb":
    refusal(name="serving_default", image_bytes=tf.constant([ok, bomb]))
elif case == "garbage":
    refusal(name="serving_default", image_bytes=tf.constant([ok, b"hello, not an image"]))
elif case == "truncated":
    refusal(name="serving_default", image_bytes=tf.constant([ok, ok[:60]]))
'
EXPORT=$T/exports/tiny/1
p_sig_empty() {
    probe signature-empty-batch python -c "$SIG" "$EXPORT" "$T" empty
    CMD="python -c \"\$SIG\" \$T/exports/tiny/1 \$T empty  (serving_default: [], predict_images: zeros [0,32,32,3])"
    OUTCOME="exit $RC: $(tr '\n' ' ' <"$OUTF" | cut -c 1-150)"
    [ "$RC" = 0 ] && no_traceback || OK=0
    check "both signatures return empty outputs" test "$(grep -c "probabilities (0, 10) classes (0, " "$OUTF")" = 2
    report
}
spawn p_sig_empty
p_sig() {
    local case=$1
    probe "signature-$case-image" python -c "$SIG" "$EXPORT" "$T" "$case"
    CMD="python -c \"\$SIG\" \$T/exports/tiny/1 \$T $case  (serving_default: [ok.png, $case])"
    OUTCOME="exit $RC: $(last_line "$OUTF")"
    [ "$RC" = 0 ] || OK=0
    check "refused" grep -q "^refused in" "$OUTF"
    case $case in
        bomb) check "names image 1 and its 144000000 pixels" grep -q "image 1 of the batch declares 144000000 pixels" "$OUTF"
              check "within 5 s and 300 MB" python -c "
import re, sys
m = re.search(r'refused in ([0-9.]+) s, peak memory \+([0-9]+) MB', open(sys.argv[1]).read())
sys.exit(not (m and float(m.group(1)) < 5 and int(m.group(2)) < 300))" "$OUTF" ;;
        garbage) check "names image 1" grep -q "image 1 of the batch is not an image" "$OUTF" ;;
        truncated) check "the decoder's reason" grep -q "Invalid PNG data" "$OUTF" ;;
    esac
    report
}
for case in bomb garbage truncated; do spawn p_sig "$case"; done
spawn refused predict-no-server "Cannot reach TF Serving" \
    $PY predict --server http://127.0.0.1:9 --model tiny --timeout 5 "$T/ok.png"
spawn refused predict-missing-image "nowhere\.png" \
    $PY predict --server http://127.0.0.1:9 --model tiny --timeout 5 "$T/nowhere.png"
barrier

# The stand-in server (in the background; killed at the end).
head -c 60 "$T/ok.png" >"$T/broken.png"
python - "$EXPORT" "$T/server_url" >"$LOG/fake_server.log" 2>&1 <<'EOF' &
import sys, time
import tensorflow as tf
from tests.export_test import FakeTFServing
with FakeTFServing({"tiny": {1: tf.saved_model.load(sys.argv[1])}}) as server:
    open(sys.argv[2] + ".tmp", "w").write(server.url)
    __import__("os").rename(sys.argv[2] + ".tmp", sys.argv[2])
    while True:
        time.sleep(1)
EOF
SERVER_PID=$!
if wait_for 120 test -s "$T/server_url"; then URL=$(cat "$T/server_url"); else URL=http://127.0.0.1:9; fi
p_predict() {  # p_predict NAME REGEX IMAGES...
    local name=$1 regex=$2
    shift 2
    probe "$name" $PY predict --server "$URL" --model tiny "$@"
    CMD=$(show python main.py predict --server '$URL' --model tiny "$@")
    if [ "$regex" = ok ]; then expect_success; else expect_refusal "$regex"; fi
    report
}
spawn p_predict predict-good-image ok "$T/ok.png" "$T/ok.png"
spawn p_predict predict-broken-image-named "refused '\\\$T/broken\.png' \(image 2 of the 3 sent.*Invalid PNG data" \
    "$T/ok.png" "$T/ok.png" "$T/broken.png"
spawn p_predict predict-bomb-image-named "refused '\\\$T/bomb\.png' \(image 1 of the 2 sent.*declares 144000000 pixels" \
    "$T/ok.png" "$T/bomb.png"
spawn p_predict predict-non-image-file "refused '\\\$T/ckpt/notes\.txt' \(image 0 of the 1 sent|notes\.txt" \
    "$T/ckpt/notes.txt"
barrier
kill -9 "$SERVER_PID" 2>/dev/null
wait "$SERVER_PID" 2>/dev/null

# --- kill -9 during pretrain, then the same command resumes ------------------------------------

PRE=($PY pretrain --dataset mnist --arch resnet20 --width 0.25 --epochs 4 --train-images 2000
     --batch-size 64 --eval-every 4 --set data.test_images=200 --out "$T/pre")
NAME=pretrain-kill-9-then-resume
"${PRE[@]}" >"$LOG/$NAME.killed.out" 2>"$LOG/$NAME.killed.err" &
PID=$!
epochs_done() { [ "$(csv_rows "$T/pre/history.csv")" -ge 1 ]; }
if wait_for 240 epochs_done; then
    kill -9 "$PID" 2>/dev/null
    wait "$PID" 2>/dev/null
    AT_KILL=$(csv_rows "$T/pre/history.csv")
else
    kill -9 "$PID" 2>/dev/null
    AT_KILL=0   # never reached epoch 1
fi
# A copy of the killed run, moved elsewhere, with an emptied metadata file (issue item 2).
cp -r "$T/pre" "$T/pre_moved"
probe "$NAME" "${PRE[@]}"
CMD="$(show "${PRE[@]}")  # kill -9 after epoch 1, then the same command"
expect_success
check "killed after $AT_KILL of 4 epochs" test "$AT_KILL" -ge 1 -a "$AT_KILL" -lt 4
check "rerun trained only epochs $((AT_KILL + 1))-4" test "$(json_field "$OUTF" 'r["epochs_this_session"]' 2>/dev/null)" = "$((4 - AT_KILL))"
check "history.csv has epochs 1-4 once each" python -c '
import csv, sys; sys.exit([int(r["epoch"]) for r in csv.DictReader(open(sys.argv[1]))] != [1, 2, 3, 4])' "$T/pre/history.csv"
report

probe pretrain-out-trailing-slash "${PRE[@]:0:${#PRE[@]}-1}" "$T/pre/"
expect_success "already holds this finished run"
report

: >"$T/pre_moved/checkpoint/training_metadata.json"
probe pretrain-moved-run-empty-metadata "${PRE[@]:0:${#PRE[@]}-1}" "$T/pre_moved"
CMD="$(show "${PRE[@]:0:${#PRE[@]}-1}" "$T/pre_moved")  # a copy of the killed run, training_metadata.json emptied"
expect_refusal "cannot be resumed: .*training_metadata\.json is empty or corrupt"
report

# --- kill -9 during a sweep, then the same command completes it --------------------------------

SW=$T/sweep_kill
SWEEP=($PY sweep --config tiny --results "$SW" --max-runs 2)
NAME=sweep-kill-9-then-rerun
"${SWEEP[@]}" >"$LOG/$NAME.killed.out" 2>"$LOG/$NAME.killed.err" &
PID=$!
KILLED_KEY=""
if wait_for 240 compgen -G "$SW/runs/.claims/*.json"; then
    sleep 2   # inside the first run
    kill -9 "$PID" 2>/dev/null
    wait "$PID" 2>/dev/null
    KILLED_KEY=$(python -c 'import json, glob, sys; print(json.load(open(glob.glob(sys.argv[1])[0]))["run_key"])' "$SW/runs/.claims/*.json")
else
    kill -9 "$PID" 2>/dev/null
fi
ROWS_AT_KILL=$(csv_rows "$SW/results.csv")
probe "$NAME" "${SWEEP[@]}"
CMD="$(show "${SWEEP[@]}")  # kill -9 during run 1, then the same command"
expect_success
check "killed in run 1 (${ROWS_AT_KILL} rows, claim left)" test -n "$KILLED_KEY" -a "$ROWS_AT_KILL" = 0
check "claim taken over" grep -q "taking over the claim of a stopped process" "$ERRF"
check "2 rows, 2 run_keys" test "$(csv_rows "$SW/results.csv")/$(csv_unique_keys "$SW/results.csv")" = 2/2
check "killed cell finished" grep -qF "$KILLED_KEY," "$SW/results.csv"
check "no claims left" no_files_in "$SW/runs/.claims"
report

probe sweep-rerun-skips-finished "${SWEEP[@]}"
expect_success
check "ran 2 new cells, 4 rows, 4 run_keys" test "$(json_field "$OUTF" 'r["finished_before"], r["ran"]' 2>/dev/null)/$(csv_rows "$SW/results.csv")/$(csv_unique_keys "$SW/results.csv")" = "2 2/4/4"
report

# --- 3 concurrent sweeps on one results directory ----------------------------------------------

SC=$T/sweep_concurrent
NAME=sweep-3-concurrent
PIDS=()
for i in 1 2 3; do
    timeout "$STEP_TIMEOUT" $PY sweep --config tiny --results "$SC" --max-runs 2 \
        >"$LOG/$NAME.$i.out" 2>"$LOG/$NAME.$i.err" &
    PIDS+=($!)
done
CODES=""
for pid in "${PIDS[@]}"; do wait "$pid"; CODES+="$? "; done
CMD="3 x { $PY sweep --config tiny --results \$T/sweep_concurrent --max-runs 2 & }"
OK=1
NOTES=""
ROWS=$(csv_rows "$SC/results.csv")
KEYS=$(csv_unique_keys "$SC/results.csv" 2>/dev/null)
OUTCOME="exit codes ${CODES% }: $ROWS rows, $KEYS run_keys"
[ "$CODES" = "0 0 0 " ] || OK=0
OUTF=$LOG/$NAME.1.out ERRF=$LOG/$NAME.1.err
for i in 1 2 3; do
    grep -q Traceback "$LOG/$NAME.$i.err" && { OK=0; NOTES+="; Traceback in $i"; }
done
check "6 rows, each cell once" test "$ROWS/$KEYS" = 6/6
check "each process ran 2" test "$(for i in 1 2 3; do json_field "$LOG/$NAME.$i.out" 'r["ran"]'; done | tr '\n' ' ')" = "2 2 2 "
check "no claims left" no_files_in "$SC/runs/.claims"
report

# --- kill -9 during tune, then the same command resumes the search ------------------------------

TUNE_ARGS=(--target "$T/img/ok" --source "$T/src" --train-images 20 --tuner random --max-trials 5
           --max-epochs 3 --seed 0)
NAME=tune-kill-9-then-resume
$PY tune "${TUNE_ARGS[@]}" --dir "$T/tune" >"$LOG/$NAME.killed.out" 2>"$LOG/$NAME.killed.err" &
PID=$!
completed() { grep -l '"status": "COMPLETED"' "$1"/search/trial_*/trial.json 2>/dev/null | wc -l; }
trial_done() { [ "$(completed "$T/tune")" -ge 1 ]; }
if wait_for 240 trial_done; then
    kill -9 "$PID" 2>/dev/null
    wait "$PID" 2>/dev/null
fi
DONE_AT_KILL=$(completed "$T/tune")
probe "$NAME" $PY tune "${TUNE_ARGS[@]}" --dir "$T/tune"
CMD="$(show $PY tune "${TUNE_ARGS[@]}" --dir "$T/tune")  # kill -9 after trial 1, then the same command"
expect_success
check "killed after $DONE_AT_KILL of 5 trials" test "$DONE_AT_KILL" -ge 1 -a "$DONE_AT_KILL" -lt 5
check "5 trials in all" test "$(json_field "$OUTF" 'r["trials"]' 2>/dev/null)" = 5
check "rerun ran only the $((5 - DONE_AT_KILL)) left" test "$(json_field "$OUTF" 'len(r["trials_run_here"])' 2>/dev/null)" = "$((5 - DONE_AT_KILL))"
report

probe tune-uninterrupted-same-seed $PY tune "${TUNE_ARGS[@]}" --dir "$T/tune_whole"
CMD="$(show $PY tune "${TUNE_ARGS[@]}" --dir "$T/tune_whole")  # compared with the resumed search"
expect_success
check "same trials and scores as the resumed search" python -c '
import glob, json, sys
def trials(d):
    out = {}
    for f in glob.glob(d + "/search/trial_*/trial.json"):
        t = json.load(open(f))
        out[t["trial_id"]] = (t["hyperparameters"]["values"], t["status"], t["score"])
    return out
a, b = trials(sys.argv[1]), trials(sys.argv[2])
sys.exit(not (len(a) == 5 and a == b))' "$T/tune" "$T/tune_whole"
report

probe tune-unfrozen-choices-without-0 $PY tune --target "$T/img/ok" --source "$T/src" --train-images 20 \
    --tuner random --max-trials 2 --max-epochs 1 --unfrozen-choices 3,4 --dir "$T/tune34"
expect_success
check "searched only 3 and 4" python -c '
import json, sys; r = json.loads(open(sys.argv[1]).read().splitlines()[-1]); sys.exit(r["best_hyperparameters"]["unfrozen_blocks"] not in (3, 4))' "$OUTF"
report

# --- round two: results never mixed or lost, locks, SIGTERM, OS errors, resume files, feature
# folders, serving limits, a misbehaving server, convert (probes_round2_*.sh) --------------------

barrier
fi  # round one

if [[ " ${ROUNDS:-1 2} " == *" 2 "* ]]; then
for ROUND2 in sweeps cli io sources; do
    # shellcheck source=/dev/null
    source "$REPO/results/reliability/probes_round2_$ROUND2.sh"
done
for P2 in $ROUND2_SWEEPS_PROBES $ROUND2_CLI_PROBES $ROUND2_IO_PROBES $ROUND2_SOURCES_PROBES; do
    [[ "$P2" =~ ${ONLY:-.} ]] || continue
    "$P2"   # one at a time: several start background processes or time a kill
done
fi  # round two

# --- summary -----------------------------------------------------------------------------------

barrier
WALL=$((SECONDS - START))
PASSES=$(grep -c '^PASS' "$LOG/report.txt")
FAILS=$(grep -c '^FAIL' "$LOG/report.txt")
FAILED=$(grep '^FAIL' "$LOG/report.txt" | cut -d '|' -f 2 | tr -d ' ' | tr '\n' ' ')
echo "summary: $PASSES PASS, $FAILS FAIL of $((PASSES + FAILS)) probes in ${WALL} s ($((WALL / 60)) min $((WALL % 60)) s)${FAILED:+; failed: ${FAILED% }}"
[ "$FAILS" = 0 ]
