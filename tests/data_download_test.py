"""A real TFDS ``download_and_prepare`` through ``data.load``, offline, and the one sentence a
failed one stops with (issue 23, item 1)."""

import errno
import os
import socket
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np
import tensorflow as tf

from tests import tfds_builders
from tftransfer import data
from tftransfer.data import download_errors
from tftransfer.data import download_guard
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


def _offline(*args, **kwargs):
    raise OSError(errno.ENETUNREACH, "Network is unreachable")


def _fake_tfds_offline(builder, *args, **kwargs):
    """What TFDS 4.9 does offline, minus its 200 s of retries: folders, then an error."""
    root = Path(builder.data_dir_root)
    (root / "downloads" / builder.name).mkdir(parents=True, exist_ok=True)
    (root / builder.name).mkdir(parents=True, exist_ok=True)
    raise ConnectionError("Max retries exceeded with url: /cvdf-datasets/mnist/train.gz")


class OfflineTest(tf.test.TestCase):
    """Offline, a dataset that is not prepared stops at once, in one sentence, and leaves the
    data directory as it was (issue 36, item 6)."""

    def _load_offline(self, data_dir, name="mnist"):
        """``data.load`` with every connection refused; TFDS's own download (if reached) makes
        folders and fails as it does offline. Returns the message and the seconds taken."""
        import tensorflow_datasets as tfds

        start = time.monotonic()
        with mock.patch.object(socket, "create_connection", side_effect=_offline), \
                mock.patch.object(tfds.core.DatasetBuilder, "download_and_prepare",
                                  autospec=True, side_effect=_fake_tfds_offline):
            with self.assertRaises(UserError) as raised:
                data.load(name, data_dir=str(data_dir))
        return str(raised.exception), time.monotonic() - start

    def test_an_unreachable_host_stops_at_once_in_one_sentence_and_writes_nothing(self):
        with tempfile.TemporaryDirectory() as tmp:
            data_dir = Path(tmp) / "tfds"
            message, seconds = self._load_offline(data_dir)
            self.assertFalse(data_dir.exists(), list(data_dir.rglob("*")))
        self.assertLess(seconds, 5.0)
        self.assertIn("Could not download 'mnist': its download server storage.googleapis.com "
                      "cannot be reached from here (Network is unreachable", message)
        self.assertIn("point --data-dir (or TFDS_DATA_DIR) at a copy", message)
        self.assertNotIn(". ", message.rstrip("."))  # one sentence

    def test_existing_files_in_the_data_directory_are_kept(self):
        with tempfile.TemporaryDirectory() as data_dir:
            (Path(data_dir) / "downloads").mkdir()
            (Path(data_dir) / "downloads" / "other.zip").write_bytes(b"x")
            self._load_offline(data_dir)
            self.assertEqual(sorted(p.name for p in Path(data_dir).rglob("*")),
                             ["downloads", "other.zip"])

    def test_a_failed_download_after_the_probe_leaves_no_new_folders(self):
        with tempfile.TemporaryDirectory() as data_dir:
            (Path(data_dir) / "keep").mkdir()
            with mock.patch.object(download_guard, "unreachable", return_value=None):
                message, _ = self._load_offline(data_dir)
            self.assertEqual(os.listdir(data_dir), ["keep"])
        self.assertIn("network connection failed", message)

    def test_a_hanging_name_lookup_is_cut_at_one_second(self):
        def hang(*args, **kwargs):
            time.sleep(5)

        start = time.monotonic()
        with mock.patch.object(socket, "create_connection", side_effect=hang):
            failed = download_guard.unreachable([("example.org", 443)])
        self.assertLess(time.monotonic() - start, 2.0)
        self.assertEqual(failed, ("example.org", "no answer within 1 s"))

    def test_the_hosts_are_those_of_the_recorded_urls_or_their_proxy(self):
        import tensorflow_datasets as tfds

        with tempfile.TemporaryDirectory() as tmp:
            builder = tfds.builder("mnist", data_dir=tmp)
            self.assertEqual(download_guard.download_hosts(builder),
                             [("storage.googleapis.com", 443)])
            with mock.patch.dict(os.environ, {"https_proxy": "http://proxy.local:3128",
                                              "no_proxy": ""}):
                self.assertEqual(download_guard.download_hosts(builder),
                                 [("proxy.local", 3128)])
            tfds_builders.TftransferTinyPhotos.source_dir = Path(tmp)
            local = tfds.builder("tftransfer_tiny_photos", data_dir=tmp)
            self.assertEqual(download_guard.download_hosts(local), [])  # built from files
            with tfds.testing.mock_data(num_examples=2):  # its download is a no-op
                self.assertEqual(download_guard.download_hosts(tfds.builder("mnist")), [])


if __name__ == "__main__":
    tf.test.main()
