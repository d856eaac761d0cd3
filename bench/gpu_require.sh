# Sourced by the bench/gpu_*.sh scripts: sets $gpus to the number of GPUs TensorFlow sees with
# $PYTHON, or prints why the script skips and exits 0 (no TensorFlow, or no GPU).
#   NAME=gpu_check; source bench/gpu_require.sh
gpus="$("$PYTHON" -c "import os; os.environ['TF_CPP_MIN_LOG_LEVEL'] = '3'
import tensorflow as tf; print(len(tf.config.list_physical_devices('GPU')))" 2>/dev/null || echo error)"
if [ "$gpus" = "error" ]; then
  echo "$NAME: skipped: TensorFlow does not import with $PYTHON (install the project first)."
  exit 0
fi
if [ "$gpus" = "0" ]; then
  echo "$NAME: skipped: TensorFlow sees no GPU here (no CUDA device, or a CPU-only" \
       "TensorFlow build); this benchmark needs one GPU."
  exit 0
fi
