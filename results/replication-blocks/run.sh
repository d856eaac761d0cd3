#!/usr/bin/env bash
# Where the robust source's gain goes (results/replication-blocks/README.md): the replication-blocks
# grid (pipelines/grids/replication-blocks.toml: the last 1 or 2 of resnet20's 9 blocks fine-tuned,
# 72 runs), then its report and blocks.md, which joins these runs with the 0- and 3-block runs of
# results/replication (that sweep's results.csv must be there). Resumable: killed? Run it again;
# finished runs are skipped (one CSV row per finished run).
#   bash results/replication-blocks/run.sh                  # the grid, then the report
#   STAGES=report bash results/replication-blocks/run.sh    # only the report, from the CSVs
#   RESULTS_ROOT=/elsewhere/results bash ...   # write the rows there (e.g. running the code of a
#                                              # pinned `git worktree`); blocks.md then reads
#                                              # $RESULTS_ROOT/replication
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA_DIR="${TFDS_DATA_DIR:-../shared/tfds}"
STAGES="${STAGES:-grid report}"
RESULTS_ROOT="${RESULTS_ROOT:-results}"
OUT="$RESULTS_ROOT/replication-blocks"
status=0

if [[ " $STAGES " == *" grid "* ]]; then
  # exit code 1 (some runs failed) is reported, not fatal: the report still runs
  python main.py sweep --config replication-blocks --results "$OUT" --data-dir "$DATA_DIR" \
    --no-download | tail -1 || { code=$?; (( code == 1 )) || exit "$code"; status=1; }
fi
if [[ " $STAGES " == *" report "* ]]; then
  # report/ (tables, summary.md, figures), blocks.md and difference_vs_blocks_<target>.png
  python main.py report --results "$OUT" --analysis blocks | tail -1
fi
(( status == 0 )) || echo "replication-blocks: some runs failed (errors above); re-run to retry." >&2
exit "$status"
