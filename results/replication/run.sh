#!/usr/bin/env bash
# Issue 8: the replication sweep (pipelines/grids/replication.toml) and its report, resumable.
# Runs the cells of the sources listed in SOURCES (default: those of the four that are trained,
# see pipelines/train_sources.sh), then writes report/ and the table beside the paper's.
#   bash results/replication/run.sh
#   SOURCES="cifar10-resnet20-natural cifar10-resnet20-l2-eps0.5" bash results/replication/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA_DIR="${TFDS_DATA_DIR:-../shared/tfds}"
OUT=results/replication
if [[ -z "${SOURCES:-}" ]]; then
  for name in natural l2-eps0.5 l2-eps0.25 l2-eps1.0; do
    # pretrain writes model.keras only when its last epoch is done
    if [[ -f "saved_models/cifar10-resnet20-$name/model.keras" ]]; then
      SOURCES+=" cifar10-resnet20-$name"
    fi
  done
fi
echo "replication sweep: sources: ${SOURCES# }" >&2
# shellcheck disable=SC2086  # SOURCES is a list of names
status=0
python main.py sweep --config replication --results "$OUT" --sources $SOURCES \
  --data-dir "$DATA_DIR" --no-download | tail -1 || status=$?
if (( status == 1 )); then  # some runs failed: report the finished ones, re-run to retry
  echo "replication sweep: some runs failed (errors above); reporting the finished runs." >&2
elif (( status != 0 )); then
  exit "$status"
fi
python main.py report --results "$OUT" --analysis paper-table answers | tail -1
