# Round-two reliability probes of the sweep code (issue 33, items 1, 2 and 11), as functions in
# the style of probe.sh: source this file from probe.sh after its helpers and fixtures ($T/src,
# $T/img/ok), then run each function of ROUND2_SWEEPS_PROBES (with `spawn`, or directly).

# p2_write_grid FILE NAME TARGET [TOML LINES...]: a one-cell grid (source $T/src, N 4, head
# only, seed 0, 1 epoch) with the extra lines given
p2_write_grid() {
    local file=$1 name=$2 target=$3
    shift 3
    mkdir -p "$(dirname "$file")"
    {
        printf 'name = "%s"\nsources = ["%s"]\ntargets = ["%s"]\n' "$name" "$T/src" "$target"
        printf 'train_images = [4]\nunfrozen_blocks = [0]\nseeds = [0]\nepochs = 1\n'
        printf 'recipe = ["data.batch_size=4"]\n'
        local line
        for line in "$@"; do printf '%s\n' "$line"; done
    } >"$file"
}

p2_cell_dir_name() {  # p2_cell_dir_name GRID: the run directory name of the grid's first cell
    python -c 'import sys
from tftransfer.sweeps.grid_files import load_grid
from tftransfer.sweeps.cells import cells
print(cells(load_grid(sys.argv[1]))[0].file_name)' "$1" 2>>"$LOG/p2-fixtures.err"
}

# Item 1: the grid's recipe and test_images change, its keys do not: the rerun is refused.
p2_sweep_rerun_other_settings() {
    local G=$T/p2grids
    p2_write_grid "$G/mixed.toml" p2-mixed "$T/img/ok"
    p2_write_grid "$G/mixed2.toml" p2-mixed "$T/img/ok" "test_images = 6"
    sed -i 's/^recipe = .*/recipe = ["data.batch_size=4", "optim.learning_rate=0.0001"]/' "$G/mixed2.toml"
    $PY sweep --grid "$G/mixed.toml" --results "$T/p2_mixed" >"$LOG/p2-mixed-first.out" 2>&1
    local first=$?
    probe sweep-rerun-other-settings $PY sweep --grid "$G/mixed2.toml" --results "$T/p2_mixed"
    CMD="$(show $PY sweep --grid "$G/mixed2.toml" --results "$T/p2_mixed")  # after the same grid without the recipe and test_images lines"
    expect_refusal "run with other settings .*differs in data\.test_images \(None there, 6 here\), optim\.learning_rate \(0\.1 there, 0\.0001 here\)"
    check "first run exit 0, 1 row with a config_hash" test "$first/$(csv_rows "$T/p2_mixed/results.csv")/$(python -c 'import csv, sys; print(bool(next(csv.DictReader(open(sys.argv[1])))["config_hash"]))' "$T/p2_mixed/results.csv" 2>/dev/null)" = 0/1/True
    check "still 1 row" test "$(csv_rows "$T/p2_mixed/results.csv")" = 1
    report
}

# Item 1: report refuses a cell whose rows were made with different settings.
p2_report_mixed_cell() {
    mkdir -p "$T/p2_report"
    python -c 'import csv, sys
from tests.helpers import make_row
rows = [dict(make_row("natural", s, a), config_hash=h)
        for s, a, h in ((0, 0.535, "1a2b3c4d5e6f"), (1, 0.060, "9f8e7d6c5b4a"))]
with open(sys.argv[1], "w", newline="") as f:
    w = csv.DictWriter(f, list(rows[0]))
    w.writeheader()
    w.writerows(rows)' "$T/p2_report/results.csv" 2>>"$LOG/p2-fixtures.err"
    refused report-cell-of-two-settings "the runs of the cell .* were made with different settings \(config_hash 1a2b3c4d5e6f, 9f8e7d6c5b4a" \
        $PY report --results "$T/p2_report"
}

# Item 2: runs/<cell> is a link to a finished run elsewhere; that run must stay as it was.
p2_sweep_symlinked_run_dir() {
    local G=$T/p2grids V=$T/p2_victim before
    p2_write_grid "$G/link.toml" p2-link "$T/img/ok"
    cp -r "$T/src" "$V"
    printf '{"test_accuracy": 0.9, "run_dir": "%s"}\n' "$V" >"$V/metrics.json"
    before=$(cd "$V" && md5sum * | md5sum)
    mkdir -p "$T/p2_link/runs"
    ln -s "$V" "$T/p2_link/runs/$(p2_cell_dir_name "$G/link.toml")"
    probe sweep-run-dir-symlink $PY sweep --grid "$G/link.toml" --results "$T/p2_link" --max-runs 1
    CMD="$(show $PY sweep --grid "$G/link.toml" --results "$T/p2_link" --max-runs 1)  # runs/<cell> -> a finished run elsewhere"
    expect_refusal "is a symbolic link or resolves outside .*p2_link"
    check "the linked run unchanged" test "$(cd "$V" && md5sum * | md5sum)" = "$before"
    check "no results.csv" test ! -e "$T/p2_link/results.csv"
    report
}

# Item 2: runs/<cell> is a real folder holding another run: only a run of the same key is replaced.
p2_sweep_other_runs_dir() {
    local G=$T/p2grids D
    p2_write_grid "$G/other.toml" p2-other "$T/img/ok"
    D=$T/p2_other/runs/$(p2_cell_dir_name "$G/other.toml")
    mkdir -p "$D"
    printf '{"test_accuracy": 0.9, "run_dir": "runs/transfer/mnist__x__n100__b0__s0"}\n' >"$D/metrics.json"
    printf 'epoch,test_accuracy\n1,0.9\n' >"$D/history.csv"
    probe sweep-run-dir-of-another-run $PY sweep --grid "$G/other.toml" --results "$T/p2_other" --max-runs 1
    expect_refusal "holds the run of runs/transfer/mnist__x__n100__b0__s0, not a run of .* replaces only its own cell's runs"
    check "its metrics.json and history.csv kept" test -s "$D/metrics.json" -a -s "$D/history.csv"
    report
}

# Item 11: a name with ".." would write outside results/ (here: into $T, were it accepted).
p2_grid_name_dotdot() {
    local G=$T/p2grids up
    up=$(python -c 'import sys; print("../" * (sys.argv[1].count("/") + 8))' "$REPO")
    p2_write_grid "$G/dotdot.toml" "${up%/}${T}/p2_escape" "$T/img/ok"
    probe grid-name-dotdot $PY sweep --grid "$G/dotdot.toml" --max-runs 1
    CMD="$(show $PY sweep --grid "$G/dotdot.toml" --max-runs 1)  # name = \"../../..\$T/p2_escape\""
    expect_refusal "sweep name '.*p2_escape' must be a plain name"
    check "nothing written at \$T/p2_escape" test ! -e "$T/p2_escape"
    report
}

p2_grid_train_images_string() {
    p2_write_grid "$T/p2grids/string.toml" p2-string "$T/img/ok"
    sed -i 's/^train_images = \[4\]$/train_images = ["100"]/' "$T/p2grids/string.toml"
    refused grid-train-images-string "string\.toml': sweep 'p2-string': each of train_images must be a whole number, got '100'\." \
        $PY sweep --grid "$T/p2grids/string.toml" --results "$T/p2_string"
}

p2_grid_train_images_float() {
    p2_write_grid "$T/p2grids/float.toml" p2-float "$T/img/ok"
    sed -i 's/^train_images = \[4\]$/train_images = [100.5]/' "$T/p2grids/float.toml"
    refused grid-train-images-float "each of train_images must be a whole number, got 100\.5\." \
        $PY sweep --grid "$T/p2grids/float.toml" --results "$T/p2_float"
}

# Item 11: a target path of about 300 characters; its run directory and claim names are hashed.
p2_grid_long_target() {
    local deep
    deep=$T/p2_deep/$(printf 'a-rather-long-folder-name-%s/' 1 2 3 4 5 6 7 8 9 10)images
    mkdir -p "$(dirname "$deep")"
    cp -r "$T/img/ok" "$deep"
    p2_write_grid "$T/p2grids/long.toml" p2-long "$deep"
    probe grid-long-target-path $PY sweep --grid "$T/p2grids/long.toml" --results "$T/p2_long"
    CMD="$(show $PY sweep --grid "$T/p2grids/long.toml" --results "$T/p2_long")  # a ${#deep}-character target path"
    expect_success
    check "1 row, ran 1" test "$(csv_rows "$T/p2_long/results.csv")/$(json_field "$OUTF" 'r["ran"]' 2>/dev/null)" = 1/1
    check "run dir name <= 200 bytes" test "$(ls "$T/p2_long/runs" | awk '{ print length($0) }')" -le 200
    report
}

# Item 11: 10^6 cells are refused from the list sizes, before any cell is built.
p2_grid_million_cells() {
    p2_write_grid "$T/p2grids/million.toml" p2-million "$T/img/ok"
    sed -i -e "s/^train_images = \[4\]$/train_images = [$(seq -s ', ' 2 1001)]/" \
        -e "s/^unfrozen_blocks = \[0\]$/unfrozen_blocks = [$(seq -s ', ' 0 9)]/" \
        -e "s/^seeds = \[0\]$/seeds = [$(seq -s ', ' 0 99)]/" "$T/p2grids/million.toml"
    local start=$SECONDS
    probe grid-million-cells $PY sweep --grid "$T/p2grids/million.toml" --results "$T/p2_million"
    expect_refusal "has at least 1,000,000 cells, more than the 100,000 a grid may have"
    check "refused in $((SECONDS - start)) s (< 10 s)" test "$((SECONDS - start))" -lt 10
    check "nothing written" test ! -e "$T/p2_million"
    report
}

ROUND2_SWEEPS_PROBES="p2_sweep_rerun_other_settings p2_report_mixed_cell p2_sweep_symlinked_run_dir p2_sweep_other_runs_dir p2_grid_name_dotdot p2_grid_train_images_string p2_grid_train_images_float p2_grid_long_target p2_grid_million_cells"
