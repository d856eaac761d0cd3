#!/usr/bin/env bash
# Why the paper's last-stage gain is missing (results/why-no-gain/README.md): one grid per
# candidate cause (pipelines/grids/why-no-gain-*.toml), each into results/why-no-gain/<cause>/,
# resumable (finished runs are skipped; a killed run is taken over), then the reports.
#   bash results/why-no-gain/run.sh                      # every grid, then the reports
#   GRIDS="baseline head-scale" bash results/why-no-gain/run.sh
#   STAGES=report bash results/why-no-gain/run.sh        # only the reports, from the CSVs
#   RESULTS_ROOT=/elsewhere/results bash ...             # rows there (a pinned git worktree)
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA_DIR="${TFDS_DATA_DIR:-../shared/tfds}"
GRIDS="${GRIDS:-baseline head-scale upsample source-quality depth}"
STAGES="${STAGES:-grid report}"
OUT="${RESULTS_ROOT:-results}/why-no-gain"
status=0
if [[ " $STAGES " == *" grid "* ]]; then
  for cause in $GRIDS; do
    python main.py sweep --config "why-no-gain-$cause" --results "$OUT/$cause" \
      --data-dir "$DATA_DIR" --no-download | tail -1 \
      || { code=$?; (( code == 1 )) || exit "$code"; status=1; }
  done
fi
if [[ " $STAGES " == *" report "* ]]; then
  for cause in $GRIDS; do
    [[ -f "$OUT/$cause/results.csv" ]] && python main.py report --results "$OUT/$cause" | tail -1
  done
fi
(( status == 0 )) || echo "why-no-gain: some runs failed (errors above); re-run to retry." >&2
exit "$status"
