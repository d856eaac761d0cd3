"""Tests of the input pipeline: TFDS, image folders, subsets, preprocessing, errors."""

import contextlib
import io
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from tests.helpers import SHARED_TFDS, make_image_folder
from tftransfer import data
from tftransfer.errors import UserError


class SubsetTest(tf.test.TestCase):

    def setUp(self):
        super().setUp()
        rng = np.random.default_rng(1)
        # Unbalanced classes: 0 is ten times as frequent as 4.
        self.labels = rng.choice(5, size=3000, p=[0.5, 0.2, 0.15, 0.1, 0.05])

    def test_count_determinism_and_nesting(self):
        a = data.select_subset(self.labels, 200, seed=3)
        self.assertLen(a, 200)
        self.assertLen(np.unique(a), 200)
        self.assertAllEqual(a, data.select_subset(self.labels, 200, seed=3))
        self.assertFalse(np.array_equal(a, data.select_subset(self.labels, 200, seed=4)))
        bigger = data.select_subset(self.labels, 400, seed=3)
        self.assertTrue(set(a) <= set(bigger))

    def test_stratified_and_every_class_present(self):
        small = data.select_subset(self.labels, 5, seed=0)
        self.assertCountEqual(self.labels[small], range(5))
        chosen = self.labels[data.select_subset(self.labels, 1000, seed=0)]
        expected = np.bincount(self.labels) / len(self.labels) * 1000
        self.assertAllClose(np.bincount(chosen), expected, atol=2)

    def test_too_few_or_too_many_images_is_a_clear_error(self):
        with self.assertRaisesRegex(UserError, "fewer than the 5 classes"):
            data.select_subset(self.labels, 4, seed=0)
        with self.assertRaisesRegex(UserError, "more than the 3000"):
            data.select_subset(self.labels, 3001, seed=0)

    def test_validation_split_is_disjoint_stratified_and_from_training(self):
        train = data.select_subset(self.labels, 500, seed=0)
        fit, val = data.split_validation(self.labels, train, 0.2, seed=0)
        self.assertEmpty(set(fit) & set(val))
        self.assertCountEqual(np.concatenate([fit, val]), train)
        self.assertAllClose(len(val), 100, atol=3)
        self.assertCountEqual(np.unique(self.labels[val]), range(5))


class PreprocessTest(tf.test.TestCase):

    def test_grayscale_is_repeated_and_resized_into_unit_range(self):
        gray = tf.constant((np.arange(28 * 28) % 256).astype(np.uint8).reshape(28, 28, 1))
        out = data.to_model_input(gray, 32)
        self.assertEqual(out.shape, (32, 32, 3))
        self.assertEqual(out.dtype, tf.float32)
        self.assertAllClose(out[..., 0], out[..., 2])
        self.assertBetween(float(tf.reduce_min(out)), 0.0, 1.0)
        self.assertBetween(float(tf.reduce_max(out)), 0.0, 1.0)

    def test_subset_arrays_keep_the_index_order_across_batches(self):
        # Ten 4x4 grayscale images, each filled with its own index (x 20): easy to recognize.
        images = (np.arange(10, dtype=np.uint8) * 20)[:, None, None, None] * np.ones(
            (1, 4, 4, 1), np.uint8)
        labels = np.arange(10, dtype=np.int32) % 3
        image_set = data.ImageSet(labels, data.array_reader(images, labels), (4, 4, 1))
        order = np.array([7, 2, 9, 0, 5])
        x, y = data.subset_arrays(image_set, order, 8, batch_size=2)  # 3 batches, the last short
        self.assertIsInstance(x, np.ndarray)
        self.assertEqual((x.shape, x.dtype), ((5, 8, 8, 3), np.float32))
        self.assertAllClose(x[:, 0, 0, 0], order * 20 / 255)
        self.assertAllEqual(y, labels[order])

    def test_augment_keeps_shape_and_range(self):
        image = tf.random.uniform((32, 32, 3))
        out = data.augment(image, flip=True, color_jitter=True)
        self.assertEqual(out.shape, (32, 32, 3))
        self.assertAllInRange(out, 0.0, 1.0)


class TfdsTest(tf.test.TestCase):

    def test_mnist_offline_counts_ranges_and_channels(self):
        target = data.load("mnist", data_dir=str(SHARED_TFDS), download=False)
        self.assertEqual((len(target.train), len(target.test)), (60000, 10000))
        self.assertEqual(target.num_classes, 10)
        self.assertFalse(target.flip)  # mirrored digits are other digits
        idx = data.select_subset(target.train.labels, 50, seed=0)
        images, labels = next(iter(data.pipeline(target.train, idx, 32, 50, training=True)))
        self.assertEqual(images.shape, (50, 32, 32, 3))
        self.assertAllInRange(images, 0.0, 1.0)
        self.assertAllEqual(np.sort(labels.numpy()), np.sort(target.train.labels[idx]))

    def test_unknown_dataset_suggests_close_names(self):
        with self.assertRaisesRegex(UserError, "Unknown dataset 'mnsit'.*'mnist'"):
            data.load("mnsit", data_dir=str(SHARED_TFDS))

    def test_a_tfds_config_name_is_not_taken_for_a_folder(self):
        # "name/config" reaches TFDS (not "Image folder ... does not exist").
        with tempfile.TemporaryDirectory() as tmp:
            with self.assertRaisesRegex(UserError, "'imagenet_resized/32x32' is not prepared in"):
                data.load("imagenet_resized/32x32", data_dir=tmp, download=False)
            with self.assertRaisesRegex(UserError, "no such config or version as 'mnist/color'.*BuilderConfig color not found"):
                data.load("mnist/color", data_dir=tmp, download=False)
        with self.assertRaisesRegex(UserError, "Unknown dataset 'no_such/images'.*nor a folder"):
            data.load("no_such/images", data_dir=str(SHARED_TFDS), download=False)
        with self.assertRaisesRegex(UserError, "Image folder .* does not exist"):
            data.load("./no_such/images")

    def test_missing_offline_dataset_says_where_it_looked(self):
        with tempfile.TemporaryDirectory() as tmp:
            with self.assertRaisesRegex(UserError, f"not prepared in {tmp}.*--data-dir"):
                data.load("cifar10", data_dir=tmp, download=False)

    def test_variable_size_flowers_with_mock_data(self):
        with tfds.testing.mock_data(num_examples=12):
            target = data.load("oxford_flowers102")
            self.assertEqual(target.num_classes, 102)
            self.assertIsNone(target.train.fixed_shape)
            images, _ = next(iter(data.pipeline(target.train, None, 40, 12)))
        self.assertEqual(images.shape, (12, 40, 40, 3))

    def test_streaming_reader_keeps_the_requested_order(self):
        with tfds.testing.mock_data(num_examples=12):
            target = data.load("oxford_flowers102")
            order = np.array([7, 2, 9, 0])
            labels = [int(y) for _, y in target.train.read(order)]
        self.assertEqual(labels, target.train.labels[order].tolist())

    def test_prepared_datasets_lists_shared_folder(self):
        names = {d["name"] for d in data.prepared_datasets(str(SHARED_TFDS))}
        self.assertTrue({"mnist", "fashion_mnist", "cifar10"} <= names)


class FolderTest(tf.test.TestCase):

    def test_the_root_folder_is_refused_before_its_files_are_listed(self):
        mounts = [p for p in Path("/").iterdir()
                  if p.is_dir() and p.stat().st_dev != Path("/").stat().st_dev]
        if not mounts:
            self.skipTest("no other file system is mounted under /")
        with mock.patch.object(Path, "rglob", side_effect=AssertionError("walked the tree")):
            with self.assertRaisesRegex(UserError, r"^Image folder '/' has class sub-folders "
                                                   r"that are other file systems \('/"):
                data.load_folder("/")

    def test_train_test_layout(self):
        with tempfile.TemporaryDirectory() as tmp:
            make_image_folder(tmp, classes=("a", "b", "c"), per_class=4, split=True)
            target = data.load(tmp)
            self.assertEqual(target.class_names, ("a", "b", "c"))
            self.assertEqual((len(target.train), len(target.test)), (12, 6))
            images, labels = next(iter(data.pipeline(target.test, None, 16, 64)))
        self.assertEqual(images.shape, (6, 16, 16, 3))
        self.assertCountEqual(labels.numpy(), [0, 0, 1, 1, 2, 2])

    def test_class_folders_hold_out_a_stratified_seeded_test_fraction(self):
        with tempfile.TemporaryDirectory() as tmp:
            make_image_folder(tmp, per_class=10, fmt="jpg", mode="L")
            a = data.load(tmp, test_fraction=0.3, seed=1)
            b = data.load(tmp, test_fraction=0.3, seed=1)
            self.assertAllEqual(a.test.labels, b.test.labels)
            self.assertEqual(np.bincount(a.test.labels).tolist(), [3, 3])
            self.assertLen(a.train, 14)
            images, _ = next(iter(data.pipeline(a.train, None, 8, 64)))
        self.assertEqual(images.shape[-1], 3)  # grayscale JPEGs come out RGB

    def test_folder_errors_are_clear(self):
        with tempfile.TemporaryDirectory() as tmp:
            make_image_folder(tmp, classes=("only",))
            with self.assertRaisesRegex(UserError, "1 class sub-folder"):
                data.load(tmp)
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "a").mkdir()
            (Path(tmp) / "b").mkdir()
            with self.assertRaisesRegex(UserError, "no readable images"):
                data.load(tmp)

    def test_unreadable_images_are_skipped_with_a_count(self):
        with tempfile.TemporaryDirectory() as tmp:
            make_image_folder(tmp, per_class=5)
            (Path(tmp) / "cat" / "broken.png").write_bytes(b"not an image")
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                target = data.load(tmp, test_fraction=0.2)
        self.assertEqual(len(target.train) + len(target.test), 10)
        self.assertIn("skipped 1 unreadable image", err.getvalue())

    def test_truncated_jpeg_is_skipped_not_a_crash_later(self):
        with tempfile.TemporaryDirectory() as tmp:
            make_image_folder(tmp, per_class=5, fmt="jpg")
            whole = (Path(tmp) / "cat" / "0.jpg").read_bytes()
            (Path(tmp) / "cat" / "cut.jpg").write_bytes(whole[: len(whole) // 2])
            with contextlib.redirect_stderr(io.StringIO()):
                target = data.load(tmp, test_fraction=0.2)
            list(data.pipeline(target.train, None, 8, 4))  # decodes every kept image
        self.assertEqual(len(target.train) + len(target.test), 10)

    def test_a_class_folder_without_readable_images_is_refused_by_name(self):
        # Skipping its files would leave a head output that never sees a training image.
        for split in (True, False):
            with tempfile.TemporaryDirectory() as tmp:
                make_image_folder(tmp, classes=("a", "b", "c"), per_class=4, split=split)
                folder = Path(tmp) / ("train" if split else "") / "c"
                for file in folder.iterdir():
                    file.write_bytes(b"not an image")
                with contextlib.redirect_stderr(io.StringIO()):
                    with self.assertRaisesRegex(UserError, f"'{folder}' have no readable images"):
                        data.load(tmp)

    def test_a_test_class_missing_from_train_is_refused_by_name(self):
        with tempfile.TemporaryDirectory() as tmp:
            make_image_folder(tmp, classes=("a", "b"), per_class=4, split=True)
            make_image_folder(Path(tmp) / "extra", classes=("zebra",), per_class=2)
            (Path(tmp) / "extra" / "zebra").rename(Path(tmp) / "test" / "zebra")
            with self.assertRaisesRegex(UserError, "test' has class folder.*'zebra'.*train"):
                data.load(tmp)

    def test_a_file_pil_reads_but_tensorflow_cannot_decode_is_skipped(self):
        # The readability check uses the decoder that trains: a 1-bit BMP opens in PIL but
        # tf.io.decode_image refuses it, which used to fail the run in the middle of fit().
        from PIL import Image

        with tempfile.TemporaryDirectory() as tmp:
            make_image_folder(tmp, per_class=5)
            bmp = Path(tmp) / "cat" / "one_bit.bmp"
            Image.fromarray(np.eye(16, dtype=bool)).convert("1").save(bmp)
            with Image.open(bmp) as image:
                image.load()  # PIL is happy with it
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                target = data.load(tmp, test_fraction=0.2)
            for image_set in (target.train, target.test):
                list(data.pipeline(image_set, None, 8, 4))  # decodes every kept image
        self.assertEqual(len(target.train) + len(target.test), 10)
        self.assertIn(f"skipped 1 unreadable image file(s) in {tmp} (first: {bmp})",
                      err.getvalue())

    def test_train_and_val_folders_are_a_split(self):
        with tempfile.TemporaryDirectory() as tmp:
            make_image_folder(tmp, per_class=4, split=True)
            (Path(tmp) / "test").rename(Path(tmp) / "val")
            target = data.load(tmp)
        self.assertEqual(target.class_names, ("cat", "dog"))
