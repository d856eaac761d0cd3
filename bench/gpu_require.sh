# Sourced by the bench/gpu_*.sh scripts: sets $gpus to the number of GPUs TensorFlow sees with
# $PYTHON, or prints why the script skips and exits 0 (no TensorFlow, or no GPU).
# ALLOW_CPU=1 runs the script on the CPU instead of skipping (a check of its commands at toy
# scale, as tests/gpu_scripts_test.py does; its times say nothing about a GPU).
#   NAME=gpu_check; source bench/gpu_require.sh
gpus="$("$PYTHON" -c "import os; os.environ['TF_CPP_MIN_LOG_LEVEL'] = '3'
import tensorflow as tf; print(len(tf.config.list_physical_devices('GPU')))" 2>/dev/null || echo error)"
if [ "$gpus" = "error" ]; then
  echo "$NAME: skipped: TensorFlow does not import with $PYTHON (install the project first)."
  exit 0
fi
if [ "$gpus" = "0" ] && [ "${ALLOW_CPU:-0}" = "1" ]; then
  echo "$NAME: no GPU: running on the CPU (ALLOW_CPU=1), a check of the commands only." >&2
elif [ "$gpus" = "0" ]; then
  echo "$NAME: skipped: TensorFlow sees no GPU here (no CUDA device, or a CPU-only" \
       "TensorFlow build); this benchmark needs one GPU."
  exit 0
fi
