# Round-two reliability probes of resume files, feature folders, the serving limits, the
# predict client and convert (issue 33, items 5, 6, 8, 13 and 14), as functions in the style
# of probe.sh: source this file from probe.sh after its helpers and fixtures ($T/src,
# $T/img/ok, $T/ok.png, $T/ckpt/ok.pth), then run each function of ROUND2_IO_PROBES (with
# `spawn`, or directly). The p2_features_* probes time a kill: run them between barriers.

# --- item 5: resume files ----------------------------------------------------------------------

# p2_edited_checkpoint OUT CASE: a finished 2-epoch transfer run in OUT (4 images, head only),
# then its checkpoint's metadata edited: CASE negative_epoch (epoch -3) or no_curve
p2_edited_checkpoint() {
    $PY transfer --target "$T/img/ok" --source "$T/src" --train-images 4 --epochs 2 \
        --batch-size 4 --out "$1" >"$LOG/p2-checkpoint-$2.log" 2>&1
    python - "$1/transfer_checkpoint.npz" "$2" <<'EOF' >>"$LOG/p2-checkpoint-$2.log" 2>&1
import json, sys
import numpy as np
with np.load(sys.argv[1]) as archive:
    arrays = {name: archive[name] for name in archive.files}
meta = json.loads(str(arrays["meta"]))
if sys.argv[2] == "negative_epoch":
    meta["epoch"] = -3
else:
    del meta["curve"]
np.savez(sys.argv[1], **{**arrays, "meta": np.asarray(json.dumps(meta))})
EOF
}

p2_resume_negative_epoch() {
    local D=$T/p2_resume_epoch
    p2_edited_checkpoint "$D" negative_epoch
    probe resume-checkpoint-epoch-negative $PY transfer --resume "$D" --epochs 4
    CMD="$(show $PY transfer --resume "$D" --epochs 4)  # its transfer_checkpoint.npz edited to epoch -3"
    expect_refusal "transfer_checkpoint\.npz is corrupt: its field 'epoch' is -3, not a whole number 0 to 2; remove it and run without --resume"
    check "history.csv kept its 2 rows" test "$(csv_rows "$D/history.csv")" = 2
    report
}

p2_resume_no_curve() {
    local D=$T/p2_resume_curve
    p2_edited_checkpoint "$D" no_curve
    refused resume-checkpoint-without-curve "transfer_checkpoint\.npz is corrupt: its field 'curve' is missing" \
        $PY transfer --resume "$D"
}

# --- item 6: feature folders left by a killed run -------------------------------------------------

# p2_feature_folders TMP: the feature folders of runs under TMP (one per process)
p2_feature_folders() { compgen -G "$1/tftransfer-scratch-*/features-*"; }

# p2_killed_feature_run TMP SIGNAL: starts a long transfer run keeping its features on disk
# (--feature-cache-memory 0) with TMPDIR=TMP, sends SIGNAL once its first feature file exists,
# waits for it to end; prints "<exit code> <its feature folder>"
p2_killed_feature_run() {
    local tmp=$1 signal=$2 pid folder="" code
    mkdir -p "$tmp"
    TMPDIR=$tmp $PY transfer --target "$T/img/ok" --source "$T/src" --epochs 300 --batch-size 4 \
        --feature-cache-memory 0 --out "$tmp-run" >"$LOG/p2-features-$signal.out" 2>"$LOG/p2-features-$signal.err" &
    pid=$!
    if wait_for 240 compgen -G "$tmp/tftransfer-scratch-*/features-*/*.f32"; then
        folder=$(p2_feature_folders "$tmp" | head -n 1)
        kill -"$signal" "$pid" 2>/dev/null
    else
        kill -9 "$pid" 2>/dev/null
    fi
    wait "$pid" 2>/dev/null
    code=$?
    echo "$code $folder"
}

p2_features_kill_9() {
    local tmp=$T/p2_tmp_kill killed
    killed=$(p2_killed_feature_run "$tmp" KILL)
    probe features-folder-after-kill-9 env TMPDIR="$tmp" $PY transfer --target "$T/img/ok" \
        --source "$T/src" --train-images 4 --epochs 1 --batch-size 4 --feature-cache-memory 0 \
        --out "$T/p2_kill_next"
    CMD="$(show env TMPDIR="$tmp" $PY transfer --target "$T/img/ok" --source "$T/src" --train-images 4 --epochs 1 --batch-size 4 --feature-cache-memory 0 --out "$T/p2_kill_next")  # after kill -9 of a run whose features were on disk"
    expect_success "removed 1 feature folder\(s\) of ended runs"
    check "the killed run had a feature folder (${killed#* })" test -n "${killed#* }" -a "${killed%% *}" = 137
    check "that folder removed by the next run" test ! -e "${killed#* }"
    check "no feature folder left" test -z "$(p2_feature_folders "$tmp")"
    report
}

p2_features_sigterm() {
    local tmp=$T/p2_tmp_term killed
    killed=$(p2_killed_feature_run "$tmp" TERM)
    NAME=features-folder-after-sigterm
    CMD="TMPDIR=\$T/p2_tmp_term $PY transfer --target \$T/img/ok --source \$T/src --epochs 300 --batch-size 4 --feature-cache-memory 0 --out \$T/p2_tmp_term-run  # SIGTERM once a feature file exists"
    OK=1
    NOTES=""
    ERRF=$LOG/p2-features-TERM.err
    OUTF=$LOG/p2-features-TERM.out
    RC=${killed%% *}
    OUTCOME="exit $RC: $(last_line "$ERRF")"
    check "exit 143" test "$RC" = 143
    check "the run had a feature folder" test -n "${killed#* }"
    check "its folder removed on the way out" test ! -e "${killed#* }"
    no_traceback || { OK=0; NOTES+="; Traceback"; }
    report
}

# --- item 8: the serving limits count the resize too ---------------------------------------------

P2_EXPORT=$T/p2_exports/strip/1
p2_export_aspect_limit() {
    probe export-records-aspect-limit $PY export --model "$T/src" --name strip --base "$T/p2_exports"
    expect_success
    check "result and metadata record max_aspect_ratio 100" test "$(json_field "$OUTF" 'r["max_aspect_ratio"]' 2>/dev/null)/$(python -c 'import json, sys; print(json.load(open(sys.argv[1]))["max_aspect_ratio"])' "$P2_EXPORT/assets.extra/tftransfer.json" 2>/dev/null)" = 100/100
    report
}

# Runs one signature of $P2_EXPORT on a thin strip; prints how it was refused, with time and
# memory, or "accepted"
P2_STRIP='
import resource, struct, sys, time
import tensorflow as tf
def bmp(width, height):  # a black 24-bit BMP (PNG decoders refuse rows of over 1M pixels)
    row = (3 * width + 3) // 4 * 4
    return (b"BM" + struct.pack("<IHHI", 54 + row * height, 0, 0, 54)
            + struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, row * height, 2835, 2835, 0, 0)
            + bytes(row * height))
signatures = tf.saved_model.load(sys.argv[1]).signatures
case = sys.argv[2]
if case == "bytes":  # the issue: a 2,500,000 x 16 BMP (120 MB), exactly at the 40 MP cap
    name, inputs = "serving_default", dict(image_bytes=tf.constant([bmp(2_500_000, 16)]))
    signatures[name](image_bytes=tf.constant([bmp(32, 32)]))  # warm-up
else:  # float images of that shape (the shape alone is checked)
    name, inputs = "predict_images", dict(images=tf.zeros([0, 16, 2_500_000, 3]))
    signatures[name](images=tf.zeros([1, 32, 32, 3]))
memory, start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, time.monotonic()
try:
    signatures[name](**inputs)
    print("accepted")
except tf.errors.InvalidArgumentError as error:
    line = next(l for l in error.message.splitlines() if "pixels" in l)
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - memory
    print(f"refused in {time.monotonic() - start:.1f} s, peak memory +{grown:.0f} MB: "
          f"{line.strip()[:170]}")
'
p2_signature_thin_strip() {
    local case=$1
    probe "signature-thin-strip-$case" python -c "$P2_STRIP" "$P2_EXPORT" "$case"
    CMD="python -c \"\$P2_STRIP\" \$T/p2_exports/strip/1 $case  ($( [ "$case" = bytes ] && echo "serving_default: a 2500000x16 BMP" || echo "predict_images: zeros [0, 16, 2500000, 3]"))"
    OUTCOME="exit $RC: $(last_line "$OUTF")"
    [ "$RC" = 0 ] || OK=0
    check "refused naming 2500000x16 and the ratio 100" grep -q "2500000x16 pixels, whose long side is more than 100 times its short side" "$OUTF"
    check "within 10 s and 600 MB (the export's budget for one image)" python -c "
import re, sys
m = re.search(r'refused in ([0-9.]+) s, peak memory \+([0-9]+) MB', open(sys.argv[1]).read())
sys.exit(not (m and float(m.group(1)) < 10 and int(m.group(2)) < 600))" "$OUTF"
    report
}
p2_serving_thin_strips() {  # the export, then both signatures on it
    p2_export_aspect_limit
    p2_signature_thin_strip bytes
    p2_signature_thin_strip floats
}

# --- item 13: predict against servers that break HTTP or TF Serving's answers --------------------

# p2_predict_bad NAME KIND REGEX [PREDICT FLAGS...]: predict $T/ok.png against a server on
# 127.0.0.1 that answers as tests/bad_servers.py's REPLIES[KIND] (standard library only)
p2_predict_bad() {
    local name=$1 kind=$2 regex=$3 server began
    shift 3
    python -m tests.bad_servers "$kind" "$T/p2_server_$kind" >"$LOG/p2-server-$kind.log" 2>&1 &
    server=$!
    wait_for 60 test -s "$T/p2_server_$kind"
    began=$SECONDS
    probe "$name" $PY predict --server "$(cat "$T/p2_server_$kind" 2>/dev/null)" --model tiny "$@" "$T/ok.png"
    CMD="$(show $PY predict --server '$URL' --model tiny "$@" "$T/ok.png")  # \$URL: python -m tests.bad_servers $kind"
    expect_refusal "$regex"
    if [ "$kind" = trickle ]; then
        check "ended within 20 s ($((SECONDS - began)) s)" test $((SECONDS - began)) -lt 20
    fi
    kill -9 "$server" 2>/dev/null
    wait "$server" 2>/dev/null
    report
}
p2_predict_closed() {
    p2_predict_bad predict-server-closes-connection close "closed the connection without answering"
}
p2_predict_trickle() {
    p2_predict_bad predict-server-trickles-one-byte trickle "did not answer within 3s \(--timeout, for the whole answer\)" --timeout 3
}
p2_predict_huge() {
    p2_predict_bad predict-server-announces-300MB huge "announced 300,000,000 bytes, more than an answer to this request may have \(3,048,576 bytes\)"
}
p2_predict_nested() {
    p2_predict_bad predict-server-deeply-nested-json nested "JSON nested too deeply to read"
}
p2_predict_bad_predictions() {
    p2_predict_bad predict-server-wrong-predictions bad_predictions "prediction for image 0 whose 'classes' is not a list of whole numbers from 0 to 2: \[0, 7\]"
}
p2_predict_timeout_nan() {
    refused predict-timeout-nan "--timeout must be a finite number of seconds above 0, got nan" \
        $PY predict --server http://127.0.0.1:9 --model tiny --timeout nan "$T/ok.png"
}

# --- item 14: convert names the tensor and its problem -------------------------------------------

p2_convert_bad_tensor() {  # p2_convert_bad_tensor CASE REGEX
    local case=$1 regex=$2
    python - "$T/ckpt/ok.pth" "$T/p2_ckpt_$case.pth" "$case" <<'EOF' >"$LOG/p2-ckpt-$case.log" 2>&1
import sys
import torch
state = torch.load(sys.argv[1])
case = sys.argv[3]
if case == "int64":
    state["fc.bias"] = state["fc.bias"].round().to(torch.int64)
elif case == "inf":
    state["layer3.0.conv2.weight"][1, 2, 0, 0] = float("inf")
else:  # negative running variance
    state["layer2.0.bn1.running_var"][3] = -0.5
torch.save(state, sys.argv[2])
EOF
    probe "convert-$case-tensor" $PY convert --checkpoint "$T/p2_ckpt_$case.pth" --arch resnet18 \
        --width 0.125 --image-size 32 --out "$T/p2_conv_$case"
    expect_refusal "$regex"
    check "no model written" test ! -e "$T/p2_conv_$case/model.keras"
    report
}
p2_convert_int64() {
    p2_convert_bad_tensor int64 "tensor 'fc\.bias' holds int64 values, not floating point ones"
}
p2_convert_inf() {
    p2_convert_bad_tensor inf "tensor 'layer3\.0\.conv2\.weight' holds 1 NaN or infinite value\(s\) \(the first at index \[1, 2, 0, 0\]: inf\)"
}
p2_convert_negative_variance() {
    p2_convert_bad_tensor negvar "tensor 'layer2\.0\.bn1\.running_var' holds 1 negative running variance\(s\) \(the smallest -0\.5\)"
}

ROUND2_IO_PROBES="p2_resume_negative_epoch p2_resume_no_curve p2_features_kill_9 p2_features_sigterm p2_serving_thin_strips p2_predict_closed p2_predict_trickle p2_predict_huge p2_predict_nested p2_predict_bad_predictions p2_predict_timeout_nan p2_convert_int64 p2_convert_inf p2_convert_negative_variance"
