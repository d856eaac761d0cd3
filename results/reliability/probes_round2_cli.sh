# Reliability probes of issue 33, items 3, 4, 7 and 12: locks on a run and a search directory,
# SIGTERM, and one sentence for every OS error. Functions only, in the style of probe.sh: source
# this file from probe.sh after its helpers and fixtures ($T/src, $T/img/ok, $PY, probe,
# refused, check, spawn, barrier, wait_for, ...), then run each name of ROUND2_CLI_PROBES,
# e.g. `for p in $ROUND2_CLI_PROBES; do spawn "$p"; done; barrier`. Each writes only under
# $T/r2cli/<probe>/; the concurrency and SIGTERM probes start their own background process
# and wait for it, so they may run side by side with the others.

R2=$T/r2cli
TRANSFER_TINY=(--target "$T/img/ok" --source "$T/src" --train-images 20)

has_rows() { [ "$(csv_rows "$1")" -ge 1 ]; }

last_stderr_line_is() {  # last_stderr_line_is FILE REGEX: the last non-blank stderr line matches
    last_line "$1" 100000 | grep -Eq -- "$2"
}

# Item 3: two transfer runs (seeds 0 and 1) into one --out at once: one runs, the other is
# refused while it runs, and the directory holds the run that ran.
p2_transfer_out_locked() {
    local d=$R2/transfer_out_locked seed pids=() codes=""
    mkdir -p "$d"
    for seed in 0 1; do
        timeout "$STEP_TIMEOUT" $PY transfer "${TRANSFER_TINY[@]}" --epochs 300 --seed "$seed" \
            --out "$d/run" >"$d/s$seed.out" 2>"$d/s$seed.err" &
        pids+=($!)
    done
    for seed in 0 1; do wait "${pids[$seed]}"; codes+="$? "; done
    NAME=transfer-out-two-runs-at-once
    CMD="2 x { $PY transfer $(show "${TRANSFER_TINY[*]}") --epochs 300 --seed S --out \$T/r2cli/transfer_out_locked/run & }  (S = 0, 1)"
    OK=1 NOTES=""
    local winner loser
    case "$codes" in
        "0 2 ") winner=0 loser=1 ;;
        "2 0 ") winner=1 loser=0 ;;
        *) winner=0 loser=1 OK=0 ;;
    esac
    OUTF=$d/s$loser.out ERRF=$d/s$loser.err
    OUTCOME="exit codes ${codes% } (seed 0, seed 1); seed $loser: $(last_line "$ERRF")"
    for seed in 0 1; do grep -q Traceback "$d/s$seed.err" && { OK=0; NOTES+="; Traceback in seed $seed"; }; done
    check "the refused run's one sentence: in use by the other (pid, host)" last_stderr_line_is "$ERRF" \
        "^error: --out .*/run is in use by another run \(pid [0-9]+ on .*\); wait for it to end, or choose another --out\.$"
    check "metrics.json and the printed run_dir hold the seed-$winner run" python -c '
import json, sys
metrics = json.load(open(sys.argv[1]))
printed = json.loads(open(sys.argv[2]).read().splitlines()[-1])
sys.exit(not (metrics["seed"] == printed["seed"] == int(sys.argv[3])))' "$d/run/metrics.json" "$d/s$winner.out" "$winner"
    report
}

# Item 4: two searches on one --dir at once: the second is refused, pointing to the
# distributed mode, and the first finishes its trials.
p2_tune_dir_locked() {
    local d=$R2/tune_dir_locked
    local args=("${TRANSFER_TINY[@]}" --tuner random --max-trials 3 --max-epochs 2 --seed 0 --dir "$d/search")
    mkdir -p "$d"
    $PY tune "${args[@]}" >"$d/first.out" 2>"$d/first.err" &
    local first=$!
    wait_for 600 grep -q "^tune: random search" "$d/first.err"
    probe tune-dir-held-by-another-search $PY tune "${args[@]}"
    CMD="$(show "$PY tune ${args[*]}")  # while the same search runs there"
    expect_refusal "--dir .*/search is in use by another tune \(pid [0-9]+ on .*\); .*keras-tuner's distributed mode \(KERASTUNER_TUNER_ID, KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT"
    wait "$first"
    local first_rc=$?
    check "the first search exits 0 with its 3 trials" test "$first_rc/$(json_field "$d/first.out" 'r["trials"]' 2>/dev/null)" = 0/3
    report
}

# Item 7: SIGTERM (what Slurm and Kubernetes send) once work is saved: exit 143, one line saying
# what was kept and how to go on; that command then finishes the work.

# sigterm_probe NAME DIR KEPT READY...: starts the command in the array CMD_ARGS in the
# background, sends it SIGTERM once READY succeeds and starts a probe judged on exit 143, no
# traceback and a last stderr line matching KEPT (after "terminated (SIGTERM); ").
sigterm_probe() {
    local kept=$3 pid
    NAME=$1 OK=1 NOTES=""
    OUTF=$2/killed.out ERRF=$2/killed.err
    shift 3
    "${CMD_ARGS[@]}" >"$OUTF" 2>"$ERRF" &
    pid=$!
    wait_for 600 "$@"
    kill -TERM "$pid"
    wait "$pid"
    RC=$?
    OUTCOME="exit $RC: $(last_line "$ERRF")"
    [ "$RC" = 143 ] || OK=0
    no_traceback || { OK=0; NOTES+="; Traceback"; }
    check "one line: what was kept, how to go on" last_stderr_line_is "$ERRF" \
        "^terminated \(SIGTERM\); $kept$"
}

claimed_a_second_ago() { compgen -G "$1/runs/.claims/*.json" >/dev/null && sleep 1; }

p2_sigterm_transfer() {
    local d=$R2/sigterm_transfer
    mkdir -p "$d"
    CMD_ARGS=($PY transfer "${TRANSFER_TINY[@]}" --epochs 200 --out "$d/run")
    sigterm_probe sigterm-transfer-then-resume "$d" \
        "the checkpoint of its last finished epoch \(if any\) is kept in .*/run, and the same command with --resume continues from it\." \
        test -e "$d/run/transfer_checkpoint.npz"
    CMD="$(show "${CMD_ARGS[*]}")  # kill -TERM after the first checkpoint, then the same command with --resume"
    timeout "$STEP_TIMEOUT" "${CMD_ARGS[@]}" --resume >"$d/resumed.out" 2>"$d/resumed.err"
    local resumed=$?
    check "--resume continues after the saved epoch and exits 0" test "$resumed" = 0 -a -n "$(grep -o 'resumed after epoch [1-9][0-9]*' "$d/resumed.err")"
    check "the resumed run is finished (200 epochs)" python -c '
import json, sys; sys.exit(json.load(open(sys.argv[1]))["epochs"] != 200)' "$d/run/metrics.json"
    report
}

p2_sigterm_pretrain() {
    local d=$R2/sigterm_pretrain
    mkdir -p "$d"
    CMD_ARGS=($PY pretrain --dataset mnist --arch resnet20 --width 0.25 --epochs 2
              --train-images 1000 --batch-size 64 --eval-every 2 --set data.test_images=200
              --out "$d/pre")
    sigterm_probe sigterm-pretrain-then-resume "$d" \
        "the checkpoint of its last finished epoch \(if any\) is kept in .*/pre, and the same command resumes it\." \
        has_rows "$d/pre/history.csv"
    CMD="$(show "${CMD_ARGS[*]}")  # kill -TERM after epoch 1, then the same command"
    timeout "$STEP_TIMEOUT" "${CMD_ARGS[@]}" >"$d/resumed.out" 2>"$d/resumed.err"
    local resumed=$?
    check "the same command trains only epoch 2 and exits 0" test "$resumed/$(json_field "$d/resumed.out" 'r["epochs_this_session"]' 2>/dev/null)" = 0/1
    report
}

p2_sigterm_sweep() {
    local d=$R2/sigterm_sweep
    mkdir -p "$d"
    CMD_ARGS=($PY sweep --config tiny --results "$d/results" --max-runs 2)
    sigterm_probe sigterm-sweep-then-rerun "$d" \
        "the rows of finished runs are kept in .*/results, the running cell's claim is released, and the same command runs the cells left\." \
        claimed_a_second_ago "$d/results"
    CMD="$(show "${CMD_ARGS[*]}")  # kill -TERM during run 1, then the same command"
    check "no claim left" no_files_in "$d/results/runs/.claims"
    timeout "$STEP_TIMEOUT" "${CMD_ARGS[@]}" >"$d/rerun.out" 2>"$d/rerun.err"
    local rerun=$?
    check "the same command runs 2 cells, 2 rows" test "$rerun/$(csv_rows "$d/results/results.csv")" = 0/2
    check "no claim to take over" bash -c "! grep -q 'taking over the claim' '$d/rerun.err'"
    report
}

# Item 12: a full disk at the finished run's model save (a real ENOSPC: the temporary model
# file is a link to /dev/full). The result is still printed; --resume saves it afterwards.
p2_disk_full_at_save() {
    local d=$R2/disk_full
    mkdir -p "$d/run"
    ln -sf /dev/full "$d/run/.tmp-model.keras"
    probe disk-full-at-model-save $PY transfer "${TRANSFER_TINY[@]}" --epochs 1 --out "$d/run"
    CMD="$(show "$PY transfer ${TRANSFER_TINY[*]} --epochs 1 --out $d/run")  # run/.tmp-model.keras -> /dev/full"
    expect_refusal "^error: No space left on device: .*/run \(while saving the finished run's model and metrics.json\); its result is the last line of standard output, and the same command with --resume saves it\.$"
    check "the result printed (strict JSON with test_accuracy)" json_field "$OUTF" 'r["test_accuracy"]'
    rm -f "$d/run/.tmp-model.keras"
    timeout "$STEP_TIMEOUT" $PY transfer "${TRANSFER_TINY[@]}" --epochs 1 --out "$d/run" --resume \
        >"$d/resumed.out" 2>"$d/resumed.err"
    check "--resume then saves model.keras and metrics.json" test -s "$d/run/model.keras" -a -s "$d/run/metrics.json"
    report
}

# A read-only results folder: a read-only bind mount in a private mount namespace
# (`unshare -rm`, no privileges needed where user namespaces are on), else chmod a-w.
p2_readonly_results() {
    local d=$R2/readonly
    mkdir -p "$d/results"
    local sweep="$PY sweep --config tiny --results $d/results --max-runs 1"
    if unshare -rm true 2>/dev/null; then
        probe read-only-results-folder unshare -rm sh -c "mount -o bind,ro '$d/results' '$d/results' && exec $sweep"
        CMD="$(show "unshare -rm sh -c \"mount -o bind,ro $d/results $d/results && exec $sweep\"")"
    else
        chmod a-w "$d/results"
        probe read-only-results-folder $sweep
    fi
    expect_refusal "^error: (Read-only file system|Permission denied): .*/results/runs$"
    check "nothing written" no_files_in "$d/results"
    report
}

p2_results_is_a_file() {
    local d=$R2/results_file
    mkdir -p "$d"
    : >"$d/results.csv"
    refused results-is-a-file "^error: --results .*/results\.csv is a file, not a results folder; give the folder the sweep writes its results\.csv to\.$" \
        $PY sweep --config tiny --results "$d/results.csv" --max-runs 1
}

p2_target_root() {
    local start=$SECONDS
    probe target-filesystem-root $PY transfer --target / --source "$T/src" --train-images 20 \
        --epochs 1 --out "$R2/target_root/run"
    expect_refusal "^error: Image folder '/' has class sub-folders that are other file systems \('/.*\), so it is not a folder of images"
    check "refused in $((SECONDS - start)) s, under 120 s (no walk of the tree)" test $((SECONDS - start)) -lt 120
    report
}

p2_results_non_utf8() {
    local d=$R2/non_utf8
    mkdir -p "$d/results"
    printf 'run_key,test_accuracy\nmnist|a|n20|b0|s0|e1,0.5\nmnist|a|n20|b0|s1|e1,0.\xff\n' >"$d/results/results.csv"
    cp "$d/results/results.csv" "$d/before.csv"
    refused results-csv-non-utf8-byte "^error: Line 3 of .*/results\.csv is not UTF-8 text \(byte 0xff\); fix or remove that line\.$" \
        $PY sweep --config tiny --results "$d/results" --max-runs 1
}

p2_results_extra_fields() {
    local d=$R2/extra_fields
    mkdir -p "$d/results"
    printf 'run_key,test_accuracy\nmnist|a|n20|b0|s0|e1,0.5,surplus\n' >"$d/results/results.csv"
    cp "$d/results/results.csv" "$d/before.csv"
    probe results-row-with-extra-fields $PY sweep --config tiny --results "$d/results" --max-runs 1
    expect_refusal "^error: Line 2 of .*/results\.csv has 3 fields, more than the 2 columns of its header; fix or remove that line\.$"
    check "results.csv unchanged (no nameless column)" cmp -s "$d/results/results.csv" "$d/before.csv"
    report
}

p2_sources_broken_pipe() {
    local d=$R2/broken_pipe
    mkdir -p "$d"
    probe sources-into-head-c-1 bash -c "$PY sources 2>'$d/head.err' | head -c 1 >/dev/null; exit \${PIPESTATUS[0]}"
    CMD="$PY sources | head -c 1; $PY sources | true"
    OUTCOME="exit $RC, stderr $(wc -c <"$d/head.err") bytes"
    check "| head -c 1: exit 141 (0 when head read after the last write), nothing on stderr" \
        test \( "$RC" = 141 -o "$RC" = 0 \) -a ! -s "$d/head.err"
    # `true` reads nothing and is gone before the first write: the broken pipe is certain.
    bash -c "$PY sources 2>'$d/true.err' | true; exit \${PIPESTATUS[0]}"
    local rc=$?
    OUTCOME+="; | true: exit $rc, stderr $(wc -c <"$d/true.err") bytes"
    check "| true: exit 141, nothing on stderr" test "$rc" = 141 -a ! -s "$d/true.err"
    report
}

ROUND2_CLI_PROBES="p2_transfer_out_locked p2_tune_dir_locked p2_sigterm_transfer p2_sigterm_pretrain p2_sigterm_sweep p2_disk_full_at_save p2_readonly_results p2_results_is_a_file p2_target_root p2_results_non_utf8 p2_results_extra_fields p2_sources_broken_pipe"
