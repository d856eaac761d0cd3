"""Test-session setup: two logical CPU devices (for MirroredStrategy tests) and quiet TF."""

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Tests run sweeps and pretraining from whatever the checkout holds; the refusal of uncommitted
# code is tested on its own (tests/runs_test.py).
os.environ.setdefault("TFTRANSFER_ALLOW_DIRTY", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tensorflow as tf  # noqa: E402

# Logical devices must be configured before TensorFlow initializes its runtime.
_cpus = tf.config.list_physical_devices("CPU")
try:
    tf.config.set_logical_device_configuration(
        _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
except RuntimeError:
    pass  # already initialized by an earlier import; strategy tests then skip

REPO = Path(__file__).resolve().parent.parent
SHARED_TFDS = REPO.parent / "shared" / "tfds"


def pytest_collection_modifyitems(items):
    """Drops ``tf.test.TestCase.test_session``: a deprecated context manager that pytest collects
    as a test of every class and reports as skipped, so that a skip in the summary means
    something."""
    items[:] = [item for item in items if item.name != "test_session"]
