"""stderr of the command line carries the tool's own progress, not TensorFlow's start-up
logging (unless --verbose or TF_CPP_MIN_LOG_LEVEL asks for it)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import tensorflow as tf

from tests.helpers import REPO, make_image_folder, make_source
from tftransfer import tflog

START_UP_MARKERS = ("oneDNN custom operations", "absl::InitializeLog", "cpu_feature_guard")


def main_py(*argv, env=None):
    """Runs ``python main.py ARGV`` in a fresh process; returns (code, stdout, stderr)."""
    done = subprocess.run([sys.executable, str(REPO / "main.py"), *map(str, argv)],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    return done.returncode, done.stdout, done.stderr


def environment_without_log_level():
    env = dict(os.environ)
    env.pop(tflog.LOG_LEVEL_VARIABLE, None)
    return env


class StartUpLoggingTest(tf.test.TestCase):

    def test_a_plain_transfer_shows_only_its_own_progress(self):
        tmp = Path(self.get_temp_dir())
        source = make_source(tmp / "source")
        folder = make_image_folder(tmp / "images", classes=("a", "b"), per_class=6, split=True)
        code, out, err = main_py("transfer", "--target", folder, "--source", source,
                                 "--epochs", "1", "--batch-size", "4", "--out", tmp / "run",
                                 env=environment_without_log_level())
        self.assertEqual(code, 0, err)
        self.assertEqual(json.loads(out.strip().splitlines()[-1])["epochs"], 1)
        self.assertIn("transfer: ", err)
        for marker in START_UP_MARKERS:
            self.assertNotIn(marker, err)

    def test_verbose_brings_tensorflow_logging_back(self):
        code, _, err = main_py("datasets", "--verbose", env=environment_without_log_level())
        self.assertEqual(code, 0, err)
        self.assertIn("oneDNN custom operations", err)

    def test_the_filter_keeps_errors_and_the_tools_own_lines(self):
        text = ("WARNING: All log messages before absl::InitializeLog() is called are written "
                "to STDERR\n"
                "I0000 00:00:1796121818.037019    2541 port.cc:153] oneDNN custom operations "
                "are on.\n"
                "E0000 00:00:1796121818.037019    2541 cuda.cc:1] a real error\n"
                "transfer: progress\n")
        self.assertEqual(tflog.filtered(text),
                         "E0000 00:00:1796121818.037019    2541 cuda.cc:1] a real error\n"
                         "transfer: progress\n")
