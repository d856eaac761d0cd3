"""The convert command's progress: each phase named on stderr, nothing added to stdout."""

import argparse
import contextlib
import io
from pathlib import Path

import pytest

pytest.importorskip("torch")

import tensorflow as tf  # noqa: E402

from tests.helpers import (TINY_ARCH, TINY_CLASSES, TINY_SIZE, TINY_WIDTH,  # noqa: E402
                           save_checkpoint)
from tftransfer.models.torch_resnet import make_torch_resnet  # noqa: E402
from tftransfer.commands import convert as convert_command  # noqa: E402


class ConvertProgressTest(tf.test.TestCase):

    def _run(self, verify):
        path = save_checkpoint(make_torch_resnet(TINY_ARCH, TINY_CLASSES, TINY_WIDTH, seed=7),
                               "robustness", self.get_temp_dir())
        out = Path(self.get_temp_dir()) / f"converted-{verify}"
        args = argparse.Namespace(list=False, published=None, checkpoint=str(path),
                                  arch=TINY_ARCH, width=TINY_WIDTH, image_size=TINY_SIZE,
                                  out=str(out), attack=None, eps=None, trust_pickle=False,
                                  verify=verify)
        stdout, stderr = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            convert_command.run(args)
        self.assertEqual(stdout.getvalue(), "")  # stdout is for the JSON result only
        return [line for line in stderr.getvalue().splitlines() if line.startswith("convert: ")]

    def test_phases_in_order(self):
        lines = self._run(verify=True)
        self.assertLen(lines, 5)
        self.assertRegex(lines[0], r"^convert: reading checkpoint .*robust\.pt \(\d+\.\d MiB\)$")
        self.assertRegex(lines[1], rf"^convert: converting \d+ tensors \(robustness layout\) "
                                   rf"to {TINY_ARCH} \(width {TINY_WIDTH:g}, {TINY_SIZE} px\)$")
        self.assertStartsWith(lines[2], "convert: checking the logits against PyTorch")
        self.assertStartsWith(lines[3], "convert: largest logit difference ")
        self.assertStartsWith(lines[4], "convert: saving the model to ")

    def test_no_verify_skips_the_check_phase(self):
        lines = self._run(verify=False)
        self.assertEqual([line.split()[1] for line in lines], ["reading", "converting", "saving"])


if __name__ == "__main__":
    tf.test.main()
