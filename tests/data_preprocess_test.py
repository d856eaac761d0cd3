"""Evaluation crop geometry and the training augmentation presets (issue 23, item 4)."""

import numpy as np
import tensorflow as tf

from tests.helpers import SHARED_TFDS
from tftransfer import data
from tftransfer.errors import UserError


def _centre_white(height, width):
    """Black image with a white centre square of the shorter side."""
    image = np.zeros((height, width, 3), np.float32)
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    image[top:top + side, left:left + side] = 1.0
    return image


def _right_bright(size=24):
    image = np.zeros((size, size, 3), np.uint8)
    image[:, size // 2:] = 255
    return image


class EvalCropTest(tf.test.TestCase):

    def test_a_square_image_gives_todays_squash_pixels(self):
        image = np.random.default_rng(0).integers(0, 256, (28, 28, 1), dtype=np.uint8)
        cropped = data.to_model_input(image, 32)
        squashed = data.to_model_input(image, 32, data.Preprocessing("squash"))
        self.assertEqual(cropped.shape, (32, 32, 3))
        self.assertAllEqual(cropped, squashed)

    def test_the_centre_crop_keeps_the_aspect_ratio(self):
        for height, width in ((20, 40), (45, 15)):
            image = _centre_white(height, width)
            cropped = data.to_model_input(image, 16).numpy()
            squashed = data.to_model_input(image, 16, data.Preprocessing("squash")).numpy()
            self.assertEqual(cropped.shape, (16, 16, 3))
            self.assertGreater(cropped.mean(), 0.97)         # only the centre square
            self.assertLess(squashed.mean(), 0.7)             # the black sides squeezed in
            self.assertLess(squashed[:, 0].mean() if width > height else squashed[0].mean(), 0.1)

    def test_a_crop_fraction_takes_the_centre_of_a_larger_resize(self):
        image = np.random.default_rng(1).random((32, 32, 3)).astype(np.float32)
        out = data.to_model_input(image, 28, data.Preprocessing(crop_fraction=28 / 32))
        self.assertAllClose(out, image[2:30, 2:30], atol=1e-5)
        with self.assertRaisesRegex(UserError, "crop_fraction must be in"):
            data.Preprocessing(crop_fraction=1.5)
        with self.assertRaisesRegex(UserError, "resize must be one of center_crop, squash"):
            data.Preprocessing("stretch")

    def test_load_gives_every_pipeline_its_preprocessing(self):
        target = data.load("mnist", data_dir=str(SHARED_TFDS), download=False, resize="squash")
        self.assertEqual(target.train.preprocessing.resize, "squash")
        self.assertEqual(target.test.preprocessing.resize, "squash")


def _image_set(images, labels=None):
    images = np.asarray(images)
    labels = np.zeros(len(images), np.int32) if labels is None else labels
    return data.ImageSet(labels, data.array_reader(images, labels), images.shape[1:])


class PresetTest(tf.test.TestCase):

    def _epoch(self, image_set, policy, flip=True, size=16, epochs=1):
        batches = data.training_pipeline(image_set, None, size, 64, seed=3, epochs=epochs,
                                         flip=flip, policy=policy)
        return np.concatenate([x.numpy() for x, _ in batches])

    def test_the_paper_preset_leaves_grayscale_images_alone(self):
        gray = np.random.default_rng(0).integers(0, 256, (6, 16, 16, 1), dtype=np.uint8)
        image_set = _image_set(gray)
        self.assertTrue(image_set.grayscale)
        out = self._epoch(image_set, "utrera2021")
        plain = data.subset_arrays(image_set, np.arange(6), 16)[0]
        self.assertAllClose(np.sort(out.reshape(6, -1), 0), np.sort(plain.reshape(6, -1), 0))
        colour = _image_set(np.repeat(gray, 3, axis=-1))
        self.assertNotAllClose(self._epoch(colour, "utrera2021").mean(), plain.mean())

    def test_without_flip_no_preset_mirrors_an_image(self):
        # The outer quarters: crops shift by at most 4 of 32 px, so unmirrored the left one
        # stays darker (or equal, for a random-resized crop inside one half).
        def quarters(images):
            return images[:, :, :8].mean(axis=(1, 2, 3)), images[:, :, 24:].mean(axis=(1, 2, 3))

        image_set = _image_set(np.stack([_right_bright(32)] * 32))
        for policy in ("pad_crop_flip", "utrera2021", "imagenet"):
            left, right = quarters(self._epoch(image_set, policy, flip=False, size=32, epochs=2))
            self.assertTrue(np.all(right >= left - 1e-6), policy)
            left, right = quarters(self._epoch(image_set, policy, flip=True, size=32, epochs=2))
            self.assertTrue(np.any(left > right + 0.1), policy)

    def test_the_imagenet_preset_crops_the_whole_photo_at_random(self):
        photos = data.ImageSet(np.zeros(2, np.int32), lambda idx: tf.data.Dataset.from_generator(
            lambda: ((np.full((30 + 10 * i, 20, 3), 100, np.uint8), np.int32(0)) for i in idx),
            output_signature=(tf.TensorSpec((None, None, 3), tf.uint8),
                              tf.TensorSpec((), tf.int32))))
        first = self._epoch(photos, "imagenet", epochs=3)
        self.assertEqual(first.shape, (6, 16, 16, 3))
        self.assertAllClose(first, self._epoch(photos, "imagenet", epochs=3))  # seeded
        crop = data.random_resized_crop(tf.reshape(tf.range(40 * 60 * 3, dtype=tf.float32),
                                                   (40, 60, 3)) / 7200.0, 8, tf.constant([1, 2]))
        self.assertEqual(crop.shape, (8, 8, 3))


if __name__ == "__main__":
    tf.test.main()


class DownsampleTest(tf.test.TestCase):
    """The paper's low-resolution targets: down to K px and back up to the input size."""

    def test_downsampling_removes_detail_at_the_input_size(self):
        checkerboard = (np.indices((28, 28)).sum(axis=0) % 2 * 255).astype(np.uint8)[..., None]
        sharp = data.to_model_input(checkerboard, 32).numpy()
        blurred = data.to_model_input(checkerboard, 32, data.Preprocessing(downsample=8)).numpy()
        self.assertEqual(blurred.shape, (32, 32, 3))
        # An 8 px copy of a one-pixel checkerboard is flat grey: the pattern is gone.
        self.assertLess(blurred.std(), 0.05)
        self.assertGreater(sharp.std(), 0.15)

    def test_downsampling_to_the_input_size_changes_nothing(self):
        image = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
        plain = data.to_model_input(image, 32)
        same = data.to_model_input(image, 32, data.Preprocessing(downsample=32))
        self.assertAllClose(plain, same, atol=1e-6)

    def test_a_size_below_two_pixels_is_refused(self):
        with self.assertRaisesRegex(UserError, "downsample must be at least 2"):
            data.Preprocessing(downsample=1)
