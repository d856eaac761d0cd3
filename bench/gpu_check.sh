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
# tensorflow side by side is a broken install: setup.cfg's [cpu] and [gpu] extras), whether it
# was built with CUDA (tensorflow-cpu is not) and with which CUDA/cuDNN, the devices, each
# GPU's compute capability, and the policy `--precision auto` picks here.
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
print(f"gpu_check: TensorFlow {tf.__version__}; tf.test.is_built_with_cuda(): "
      f"{tf.test.is_built_with_cuda()}; build info: {dict(sorted(build.items()))}")
gpus = tf.config.list_physical_devices("GPU")
for gpu in gpus:
    details = tf.config.experimental.get_device_details(gpu)
    print(f"gpu_check: {gpu.name}: {details.get('device_name', '?')}, compute capability "
          f"{details.get('compute_capability', '?')}")
if len(installed) > 1:
    print("gpu_check: WARNING: both tensorflow and tensorflow-cpu are installed (one "
          "overwrites the other's files): pip uninstall -y tensorflow-cpu, then pip install "
          "--force-reinstall \"tensorflow[and-cuda]==2.21.*\"")
if not gpus and tf.test.is_built_with_cuda():
    print("gpu_check: a CUDA build that sees no GPU: check nvidia-smi, the driver and "
          "CUDA_VISIBLE_DEVICES")
print(f"gpu_check: --precision auto picks {'mixed_float16' if gpus else 'float32'} here")
PY

NAME=gpu_check; source bench/gpu_require.sh
echo "gpu_check: $gpus GPU(s); ResNet-50 224 px, float32 vs mixed_float16" >&2
timeout 470 "$PYTHON" bench/photo_step.py --batch "${BATCH:-128}" --steps "${STEPS:-20}" \
  --image-size 224
