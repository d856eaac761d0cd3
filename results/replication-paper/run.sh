#!/usr/bin/env bash
# Issue 25: the paper's own fine-tuning protocol (pipelines/grids/replication-paper*.toml), resumable.
# 1. the ablation (one difference at a time, last stage, N = 100 and 400): 4 x 40 runs into
#    results/replication-paper-ablation/<change>/;
# 2. the grid replication-paper (the utrera2021 preset, 104 runs, smallest N first) into
#    results/replication-paper/;
# 3. the reports. Killed? Run it again: finished runs are skipped (one CSV row per finished run).
#   bash results/replication-paper/run.sh            # everything
#   STAGES=grid bash results/replication-paper/run.sh   # only the grid (or: ablation, report)
#   RESULTS_ROOT=/elsewhere/results bash ...   # write the rows there (e.g. running the code of a
#                                              # pinned `git worktree` while main moves on)
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA_DIR="${TFDS_DATA_DIR:-../shared/tfds}"
STAGES="${STAGES:-ablation grid report}"
RESULTS_ROOT="${RESULTS_ROOT:-results}"
OUT="$RESULTS_ROOT/replication-paper"
ABLATION="$RESULTS_ROOT/replication-paper-ablation"
status=0

sweep() {  # sweep CONFIG RESULTS_DIR: exit code 1 (some runs failed) is reported, not fatal
  python main.py sweep --config "$1" --results "$2" --data-dir "$DATA_DIR" --no-download \
    | tail -1 || { local code=$?; (( code == 1 )) || exit "$code"; status=1; }
}

if [[ " $STAGES " == *" ablation "* ]]; then
  for change in bn norm epochs subset; do
    sweep "replication-paper-ablation-$change" "$ABLATION/$change"
  done
fi
if [[ " $STAGES " == *" grid "* ]]; then
  sweep replication-paper "$OUT"
fi
if [[ " $STAGES " == *" report "* ]]; then
  for change in bn norm epochs subset; do
    [[ -f "$ABLATION/$change/results.csv" ]] && python main.py report --results "$ABLATION/$change" | tail -1
  done
  # The grid's report; the table beside the paper's (paper_table.md), the replication's
  # questions (a)-(d) under this protocol (answers.md) and the ablation table (ablation.md).
  python main.py report --results "$OUT" --analysis paper-table answers ablation | tail -1
fi
(( status == 0 )) || echo "replication-paper: some runs failed (errors above); re-run to retry." >&2
exit "$status"
