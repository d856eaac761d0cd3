#!/usr/bin/env bash
# The photo path on one GPU (issue 23): ResNet-50 at 224 px, float32 against mixed_float16, for
# the three costs of bench/photo_step.py: the frozen trunk's features (head-only fine-tuning and
# the feature cache), a training step with layer4 + head unfrozen, and a PGD-3 (L2 eps 3)
# adversarial training step. Prints one table (images/s and the mixed/float32 ratio).
#
# Budget: at most 8 minutes on one GPU (random weights and images: no data set, no download).
# BATCH (default 128) and STEPS (default 20) can be set in the environment.
# Without a GPU it prints why it skips and exits 0 (bench/photo_step.py runs on a CPU too).
#
#   bash bench/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"

# What was installed and what it finds: the TensorFlow package(s) (tensorflow-cpu and
# tensorflow side by side is a broken install), the CUDA/cuDNN it was built with, the devices.
"$PYTHON" - <<'PY' >&2 || echo "gpu_check: TensorFlow does not import with $PYTHON" >&2
import importlib.metadata as metadata, os
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import tensorflow as tf
installed = []
for name in ("tensorflow", "tensorflow-cpu"):
    try:
        installed.append(f"{name} {metadata.version(name)}")
    except metadata.PackageNotFoundError:
        pass
build = tf.sysconfig.get_build_info()
print(f"gpu_check: packages: {', '.join(installed)}; CUDA build: {build.get('is_cuda_build')} "
      f"(CUDA {build.get('cuda_version', '-')}, cuDNN {build.get('cudnn_version', '-')}); "
      f"devices: {[d.name for d in tf.config.list_physical_devices()]}")
PY

NAME=gpu_check; source bench/gpu_require.sh
echo "gpu_check: $gpus GPU(s); ResNet-50 224 px, float32 vs mixed_float16" >&2
timeout 470 "$PYTHON" bench/photo_step.py --batch "${BATCH:-128}" --steps "${STEPS:-20}" \
  --image-size 224
