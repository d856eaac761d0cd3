"""The behavioural check of converted ImageNet models (issue 36, item 5): a random ResNet under
a published name is refused in one sentence, one trained on the photos' classes is accepted, and
the listings say which models passed."""

import contextlib
import dataclasses
import json
import os
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import tensorflow as tf  # noqa: E402

from tests.helpers import TINY_ARCH, TINY_SIZE, TINY_WIDTH, run_cli  # noqa: E402
from tftransfer.errors import UserError  # noqa: E402
from tftransfer.models.torch_resnet import (IMAGENET_MEAN, IMAGENET_STD,  # noqa: E402
                                            make_torch_resnet)
from tftransfer.sources import behaviour, hub, published, saving  # noqa: E402
from tftransfer.sources.registry import Source  # noqa: E402

NAME = "tiny-imagenet-test"


@contextlib.contextmanager
def one_torch_thread():
    """Tiny tensors on a busy machine: PyTorch's thread pool costs 50x more than it saves."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@one_torch_thread()
def random_resnet(seed=0):
    """A tiny torchvision-layout ResNet with ImageNet's 1000 classes and random weights."""
    return make_torch_resnet(TINY_ARCH, behaviour.IMAGENET_CLASSES, TINY_WIDTH, seed)


def augmented_crops(per_photo=24, seed=0):
    """Random crops (60-100% of the shorter side, anywhere) and mirror images of the check's
    photos at TINY_SIZE, labelled with the first class of each photo's group."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for photo in behaviour.PHOTOS:
        pixels = behaviour.photo_pixels(photo)
        for _ in range(per_photo):
            image = behaviour.crop(pixels, TINY_SIZE, rng.uniform(0.6, 1.0),
                                   tuple(rng.uniform(0.0, 1.0, 2)))
            images.append(image[:, ::-1] if rng.random() < 0.5 else image)
            labels.append(next(iter(photo.classes)))  # the class the photo shows
    return np.stack(images), np.asarray(labels)


@one_torch_thread()
def trained_on_the_photos(steps=60):
    """``random_resnet`` whose last layer is trained (Adam, full batch) on augmented crops
    of the three photos: it recognises them as a trained ImageNet model would."""
    model = random_resnet()
    images, labels = augmented_crops()
    x = (torch.from_numpy(images).permute(0, 3, 1, 2) - torch.tensor(IMAGENET_MEAN)[:, None, None]
         ) / torch.tensor(IMAGENET_STD)[:, None, None]
    trunk = torch.nn.Sequential(*list(model.children())[:-1], torch.nn.Flatten())
    with torch.no_grad():
        features = trunk(x)
    optimizer = torch.optim.Adam(model.fc.parameters(), lr=0.05)
    targets = torch.from_numpy(labels)
    for _ in range(steps):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model.fc(features), targets)
        loss.backward()
        optimizer.step()
    return model


class BehaviourCheckTest(tf.test.TestCase):
    """Conversions of tiny 1000-class checkpoints under a published ImageNet name."""

    def setUp(self):
        super().setUp()
        self.cache = Path(self.get_temp_dir()) / "cache"
        self.enterContext(mock.patch.dict(os.environ, {"TFTRANSFER_CACHE": str(self.cache)}))
        self.enterContext(one_torch_thread())  # the conversion's PyTorch check is tiny too

    def _entry(self, model) -> Source:
        """A published-style ImageNet entry whose 'download' is ``model``'s state dict."""
        path = Path(self.get_temp_dir()) / "weights.pth"
        torch.save(model.state_dict(), path)
        return Source(name=NAME, arch=TINY_ARCH, width=TINY_WIDTH, attack="l2", eps=3.0,
                      eps_label="3", dataset="imagenet", file_name="weights.pth",
                      urls=(path.as_uri(),), origin="test")

    def test_a_random_resnet_is_refused_in_one_sentence_unless_overridden(self):
        entry = self._entry(random_resnet())
        with self.assertRaises(UserError) as raised:
            published.ensure_converted(entry, image_size=TINY_SIZE)
        message = str(raised.exception)
        self.assertIn(f"The converted '{NAME}' does not behave like an ImageNet classifier "
                      f"(it does not recognise the scikit-image photo", message)
        self.assertIn("chelsea (a tabby cat: top 5 ", message)
        self.assertIn("records no published sha256", message)
        self.assertIn(f"python main.py convert --published {NAME} --skip-behaviour-check",
                      message)
        self.assertNotIn(". ", message.rstrip("."))  # one sentence
        self.assertFalse((published.model_dir(entry) / saving.MODEL_FILE).exists())
        self.assertEqual(published.behaviour_status(entry), "unverified")

        directory = published.ensure_converted(entry, image_size=TINY_SIZE,
                                               skip_behaviour_check=True)
        record = saving.read_config(directory)["behaviour_check"]
        self.assertEqual((record["status"], record["top_k"]), ("failed", 5))
        self.assertEqual(published.behaviour_status(entry), "unverified")

    def test_a_file_with_the_published_sha256_that_fails_blames_the_conversion(self):
        entry = dataclasses.replace(self._entry(random_resnet()), sha256="0" * 64)
        self.assertIn("has the published sha256, so the conversion or the check is at fault",
                      published._suspect(entry, Path("x.pt")))

    def test_a_checkpoint_trained_on_the_photos_classes_is_accepted_and_listed_as_checked(self):
        entry = self._entry(trained_on_the_photos())
        directory = published.ensure_converted(entry, image_size=TINY_SIZE)
        record = saving.read_config(directory)["behaviour_check"]
        self.assertEqual(record["status"], "passed", record)
        self.assertEqual(record["photos"]["coffee"]["top"][0], 967)  # espresso
        with mock.patch.dict(published.REGISTRY, {NAME: entry}):
            self.assertRegex(published.table(), rf"(?m)^{NAME} .* checked$")
            self.assertEqual(hub.describe(entry)["behaviour_check"], "checked")

    def test_the_cli_refuses_with_exit_code_2_and_lists_unverified_models(self):
        entry = self._entry(random_resnet(seed=1))
        with mock.patch.dict(published.REGISTRY, {NAME: entry}):
            code, _, err = run_cli("convert", "--published", NAME)
            self.assertEqual(code, 2)
            self.assertIn("does not behave like an ImageNet classifier", err)
            code, out, _ = run_cli("convert", "--published", NAME, "--skip-behaviour-check")
            self.assertEqual((code, json.loads(out.splitlines()[-1])["behaviour_check"]),
                             (0, "unverified"))
            code, out, _ = run_cli("sources")
        row = next(line for line in out.splitlines() if line.startswith(NAME))
        self.assertRegex(row, r"cached +unverified$")

    def test_a_model_without_imagenet_classes_fails(self):
        model = tf.keras.Sequential([tf.keras.Input((8, 8, 3)), tf.keras.layers.Flatten(),
                                     tf.keras.layers.Dense(10)])
        record = behaviour.run(model)
        self.assertEqual(record["status"], "failed")
        self.assertEqual(behaviour.failure_clause(record),
                         "it has 10 classes, not ImageNet's 1000")


class PhotosTest(tf.test.TestCase):

    def test_the_groups_are_imagenet_classes_and_the_photos_ship_with_scikit_image(self):
        seen = set()
        for photo in behaviour.PHOTOS:
            self.assertTrue(all(0 <= c < behaviour.IMAGENET_CLASSES for c in photo.classes))
            self.assertFalse(seen & set(photo.classes))  # disjoint: no class fits two photos
            seen |= set(photo.classes)
        images = behaviour.photos(24)
        self.assertEqual(images.shape, (3, 24, 24, 3))
        self.assertBetween(float(images.min()), 0.0, 1.0)
        self.assertBetween(float(images.max()), 0.0, 1.0)

    def test_the_robustness_files_say_that_no_checksum_is_public(self):
        for name in ("robust-resnet50-l2-eps3", "robust-resnet50-linf-eps4",
                     "robust-resnet50-linf-eps8"):
            entry = published.get(name)
            self.assertIsNone(entry.sha256)
            self.assertTrue(entry.checksum_note.startswith("no public checksum"))
        for entry in published.REGISTRY.values():
            self.assertTrue(entry.sha256 or entry.checksum_note, entry.name)


if __name__ == "__main__":
    tf.test.main()
