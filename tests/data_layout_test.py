"""Which features and splits of a TFDS dataset are read (issue 23, item 8): builders without
supervised keys, named keys, named splits, robust-models-transfer's names, and the errors."""

import tempfile

import tensorflow as tf
import tensorflow_datasets as tfds

from tests import tfds_builders  # noqa: F401  (registers the tiny builders)
from tftransfer import data
from tftransfer.data import catalog, tfds_schema
from tftransfer.errors import UserError


class LayoutTest(tf.test.TestCase):

    def setUp(self):
        super().setUp()
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        self.tmp = directory.name

    def test_dtd_and_sun397_read_their_image_and_label_features(self):
        # Neither declares supervised keys; both were refused as "not supervised".
        for name in ("dtd", "sun397"):
            builder = tfds.builder(name, data_dir=self.tmp)
            self.assertIsNone(builder.info.supervised_keys)
            self.assertEqual(tfds_schema.feature_keys(builder, name), ("image", "label"))

    def test_no_supervised_keys_and_only_a_validation_split_load(self):
        target = data.load("tftransfer_tiny_textures", data_dir=self.tmp)
        self.assertEqual((len(target.train), len(target.test)), (9, 6))  # test = validation
        self.assertEqual(target.num_classes, 3)

    def test_splits_can_be_named_and_sliced(self):
        target = data.load("tftransfer_tiny_textures", data_dir=self.tmp,
                           train_split="train[:6]", test_split="train[6:]")
        self.assertEqual((len(target.train), len(target.test)), (6, 3))

    def test_a_bad_split_names_the_available_ones(self):
        with self.assertRaisesRegex(UserError, r"--test-split 'test': dataset "
                                    r"'tftransfer_tiny_textures' has no split 'test'; its "
                                    r"splits are train, validation"):
            data.load("tftransfer_tiny_textures", data_dir=self.tmp, test_split="test")
        with self.assertRaisesRegex(UserError, "both 'train'"):
            data.load("tftransfer_tiny_textures", data_dir=self.tmp, test_split="train")

    def test_ambiguous_keys_must_be_named_and_named_keys_are_checked(self):
        with self.assertRaisesRegex(UserError, r"2 image features \(photo, mask\).*--image-key"):
            data.load("tftransfer_two_images", data_dir=self.tmp)
        with self.assertRaisesRegex(UserError, r"--label-key 'photo' is not a class-label"
                                    r".*features are species, breed"):
            data.load("tftransfer_two_images", data_dir=self.tmp, image_key="photo",
                      label_key="photo")
        target = data.load("tftransfer_two_images", data_dir=self.tmp, image_key="photo",
                           label_key="breed")
        self.assertEqual(target.num_classes, 4)
        self.assertEqual(target.train.fixed_shape, (8, 8, 3))

    def test_robust_models_transfer_names_reach_tfds(self):
        self.assertEqual(catalog.tfds_name("flowers"), "oxford_flowers102")
        self.assertEqual(catalog.tfds_name("SUN397"), "sun397")
        self.assertEqual(catalog.tfds_name("oxford_iiit_pet"), "oxford_iiit_pet")
        registered = set(tfds.list_builders())
        self.assertTrue(set(catalog.TRANSFER_DATASETS.values()) <= registered)
        with self.assertRaisesRegex(UserError, "'aircraft' .* is not in TensorFlow Datasets"):
            data.load("aircraft", data_dir=self.tmp)
        with tfds.testing.mock_data(num_examples=4):
            self.assertEqual(data.load("flowers").name, "oxford_flowers102")

    def test_split_and_key_flags_are_refused_for_a_folder(self):
        with self.assertRaisesRegex(UserError, "--train-split apply to TFDS datasets only"):
            data.load(self.tmp, train_split="train")


if __name__ == "__main__":
    tf.test.main()
