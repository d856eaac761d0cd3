"""Tests of tftransfer.sources.saving: which SavedModels load without being trusted, how the
toolkit's own exports load, and corrupt model files.

The hostile SavedModel is written here: a tf.Module whose serving signature calls
``tf.io.write_file``, the op a real attack would use.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import tensorflow as tf

from tests.helpers import run_cli
from tests.helpers import TempRootTestCase, make_source
from tftransfer.serving import export
from tftransfer.sources import saving
from tftransfer.errors import UserError


def write_hostile_saved_model(directory: Path, marker: Path) -> Path:
    """A SavedModel taking float RGB images whose signature writes ``marker`` when run."""

    class Hostile(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.float32,
                                                    name="images")])
        def serve(self, images):
            tf.io.write_file(str(marker), "written by the SavedModel")
            return {"logits": tf.zeros([tf.shape(images)[0], 10])}

    module = Hostile()
    tf.saved_model.save(module, str(directory), signatures={"serving_default": module.serve})
    return directory


class SavedModelTrustTest(TempRootTestCase):
    """A SavedModel loads unasked only when the toolkit wrote it and it computes only."""

    ROOT_PREFIX = "saving_test_"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.run_dir = make_source(cls.root / "model", num_classes=3)
        with contextlib.redirect_stderr(io.StringIO()):
            cls.export_dir = Path(export.export_model(cls.run_dir, "m", base=cls.root / "base")
                                  ["export_dir"])

    def setUp(self):
        super().setUp()
        self.marker = Path(self.get_temp_dir()) / "written.txt"
        self.hostile = write_hostile_saved_model(Path(self.get_temp_dir()) / "hostile",
                                                 self.marker)

    def test_hostile_saved_model_is_refused_naming_the_flag(self):
        with self.assertRaisesRegex(UserError, r"Refusing to load the SavedModel .*hostile.*"
                                               r"not written by `tftransfer export`.*"
                                               r"--trust-saved-model"):
            model = saving.load_model(self.hostile)
            model(np.zeros((1, 32, 32, 3), np.float32))  # what evaluate would do next
        self.assertFalse(self.marker.exists())

    def test_evaluate_refuses_it_with_one_sentence_and_exit_2(self):
        code, _, err = run_cli(*["evaluate", "--model", str(self.hostile), "--dataset", "mnist"])
        self.assertEqual(code, 2)
        self.assertIn("--trust-saved-model", err)
        self.assertNotIn("Traceback", err)
        self.assertFalse(self.marker.exists())

    def test_transfer_from_a_hostile_saved_model_never_loads_it(self):
        # transfer has no trust flag: it refuses any SavedModel before loading it.
        code, _, err = run_cli(*["transfer", "--target", "mnist", "--source", str(self.hostile),
                                "--train-images", "20", "--epochs", "1", "--test-images", "20",
                                "--out", str(Path(self.get_temp_dir()) / "run")])
        self.assertEqual(code, 2, err)
        self.assertIn("cannot be fine-tuned", err)
        self.assertNotIn("--trust-saved-model", err)
        self.assertFalse(self.marker.exists())

    def test_forged_metadata_does_not_make_it_trusted(self):
        # Copying the metadata format (with the right sha256) is easy; the op scan is what
        # keeps the write out.
        metadata = self.hostile / export.METADATA_FILE
        metadata.parent.mkdir(parents=True, exist_ok=True)
        metadata.write_text(json.dumps({"image_size": 32, "saved_model_sha256":
                                        export.saved_model_sha256(self.hostile)}))
        with self.assertRaisesRegex(UserError, r"ops outside .*WriteFile.*--trust-saved-model"):
            saving.load_model(self.hostile)
        self.assertFalse(self.marker.exists())

    def test_the_trust_flag_loads_it(self):
        with contextlib.redirect_stderr(io.StringIO()) as err:
            model = saving.load_model(self.hostile, trust_saved_model=True)
        self.assertIn("--trust-saved-model", err.getvalue())
        self.assertEqual(model(np.zeros((2, 32, 32, 3), np.float32)).shape, (2, 10))
        self.assertTrue(self.marker.exists())  # what the flag's warning is about

    def test_own_export_loads_and_predicts_as_the_keras_model(self):
        model = saving.load_model(self.export_dir)
        keras_model = saving.load_model(self.run_dir)
        self.assertEqual(tuple(model.inputs[0].shape), (None, 32, 32, 3))
        images = np.random.default_rng(0).random((4, 32, 32, 3), dtype=np.float32)
        self.assertAllClose(model(images), keras_model(images), atol=1e-5)

    def test_own_export_through_evaluate_has_its_metadata_as_config(self):
        config = saving.read_config(self.export_dir)
        self.assertEqual((config["arch"], config["image_size"]), ("resnet20", 32))

    def test_a_changed_graph_is_no_longer_trusted(self):
        copy = Path(self.get_temp_dir()) / "copy"
        shutil.copytree(self.export_dir, copy)
        metadata = json.loads((copy / export.METADATA_FILE).read_text())
        metadata["saved_model_sha256"] = "0" * 64
        (copy / export.METADATA_FILE).write_text(json.dumps(metadata))
        with self.assertRaisesRegex(UserError, r"has changed since `tftransfer export`"):
            saving.load_model(copy)

    def test_an_export_cannot_be_fine_tuned_and_says_what_to_use(self):
        with self.assertRaisesRegex(UserError, r"is a SavedModel.*cannot be fine-tuned.*"
                                               r"model\.keras"):
            saving.check_fine_tunable(self.export_dir)
        saving.check_fine_tunable(self.run_dir)  # a Keras model directory is fine
        # Rebuilding it (what fine-tuning starts with) stops with that sentence too.
        with self.assertRaisesRegex(UserError, r"cannot be fine-tuned"):
            saving.load_model(self.export_dir).get_config()

    def test_transfer_from_an_export_is_one_sentence(self):
        code, _, err = run_cli(*["transfer", "--target", "mnist", "--source",
                                str(self.export_dir), "--train-images", "20", "--epochs", "1",
                                "--test-images", "20", "--out",
                                str(Path(self.get_temp_dir()) / "run")])
        self.assertEqual(code, 2, err)
        self.assertIn("cannot be fine-tuned", err)
        self.assertNotIn("Traceback", err)


class CorruptModelFileTest(tf.test.TestCase):
    """A broken model.keras is called corrupt, never "File not found"."""

    def setUp(self):
        super().setUp()
        self.directory = make_source(Path(self.get_temp_dir()) / "model")
        self.model_file = self.directory / saving.MODEL_FILE

    def assert_corrupt(self, detail: str):
        with self.assertRaises(UserError) as raised:
            saving.load_model(self.directory)
        message = str(raised.exception)
        self.assertIn(f"{str(self.model_file)!r} is corrupt", message)
        self.assertIn(detail, message)
        self.assertIn("re-run the command that wrote it", message)
        self.assertNotIn("File not found", message)

    def test_truncated_file(self):
        self.model_file.write_bytes(self.model_file.read_bytes()[:20000])
        self.assert_corrupt("not a complete zip archive")

    def test_empty_file(self):
        self.model_file.write_bytes(b"")
        self.assert_corrupt("empty: 0 bytes")

    def test_damaged_member(self):
        # Flip bytes inside the stored weights: the zip directory is intact, a CRC is not.
        with zipfile.ZipFile(self.model_file) as archive:
            info = archive.getinfo("model.weights.h5")
        raw = bytearray(self.model_file.read_bytes())
        middle = info.header_offset + 100 + info.compress_size // 2
        raw[middle:middle + 64] = bytes(64)
        self.model_file.write_bytes(bytes(raw))
        self.assert_corrupt("'model.weights.h5' of its zip archive is damaged")

    def test_cli_says_corrupt_with_exit_2(self):
        self.model_file.write_bytes(b"")
        code, _, err = run_cli(*["evaluate", "--model", str(self.directory), "--dataset",
                                "mnist"])
        self.assertEqual(code, 2)
        self.assertIn("is corrupt", err)
        self.assertNotIn("Traceback", err)


if __name__ == "__main__":
    tf.test.main()
