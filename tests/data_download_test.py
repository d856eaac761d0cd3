"""A real TFDS ``download_and_prepare`` through ``data.load``, offline, and the one sentence a
failed one stops with (issue 23, item 1)."""

import tempfile
from pathlib import Path

import numpy as np
import tensorflow as tf

from tests import tfds_builders
from tftransfer import data
from tftransfer.data import download_errors
from tftransfer.errors import UserError


class DownloadAndPrepareTest(tf.test.TestCase):

    def test_a_dataset_is_built_from_local_files_and_loaded(self):
        # Fails where tensorflow-datasets cannot build a dataset (4.9.10 without
        # importlib_resources: "No module named 'importlib_resources'").
        with tempfile.TemporaryDirectory() as tmp:
            tfds_builders.TftransferTinyPhotos.source_dir = tfds_builders.write_photos(
                Path(tmp) / "files")
            target = data.load("tftransfer_tiny_photos", data_dir=str(Path(tmp) / "tfds"))
            self.assertTrue((Path(tmp) / "tfds" / "tftransfer_tiny_photos" / "1.0.0" /
                             "dataset_info.json").exists())
            self.assertEqual((len(target.train), len(target.test)), (6, 4))
            self.assertEqual(target.class_names, ("dark", "bright"))
            images, labels = next(iter(data.pipeline(target.train, None, 16, 6)))
        self.assertEqual(images.shape, (6, 16, 16, 3))
        # The pixels are the files' pixels: class 1 is brighter.
        brightness = images.numpy().mean(axis=(1, 2, 3))
        labels = labels.numpy()
        self.assertAllClose(brightness[labels == 0], np.full(3, 60 / 255), atol=1e-3)
        self.assertAllClose(brightness[labels == 1], np.full(3, 180 / 255), atol=1e-3)

    def _failure(self, name):
        with tempfile.TemporaryDirectory() as tmp:
            with self.assertRaises(UserError) as raised:
                data.load(name, data_dir=tmp)
        return str(raised.exception), tmp

    def test_a_missing_module_is_named_with_its_install_command(self):
        message, _ = self._failure("tftransfer_needs_module")
        self.assertIn("needs the Python module 'tftransfer_absent_module'", message)
        self.assertIn("pip install tftransfer_absent_module", message)
        self.assertNotIn("offline", message)

    def test_no_dns_says_the_host_name_could_not_be_resolved(self):
        message, _ = self._failure("tftransfer_no_dns")
        self.assertRegex(message, "host name could not be resolved.*no network or no DNS")

    def test_a_manual_download_says_where_to_put_the_files(self):
        message, tmp = self._failure("tftransfer_manual_only")
        self.assertIn("cannot be downloaded automatically", message)
        self.assertIn(str(Path(tmp) / "downloads" / "manual"), message)

    def test_other_causes_are_recognised_through_the_chain(self):
        wrapped = RuntimeError("Failed to construct dataset")
        wrapped.__context__ = PermissionError(13, "Permission denied")
        self.assertIn("no permission to write in /d",
                      download_errors.explain(wrapped, "x", "/d"))
        self.assertIn("network connection failed",
                      download_errors.explain(TimeoutError("read timed out"), "x", "/d"))
        self.assertEqual(download_errors.explain(ValueError("odd\nmore"), "x", "/d"),
                         "Could not download and prepare 'x' into /d (ValueError: odd).")


if __name__ == "__main__":
    tf.test.main()
