"""Tests for tftransfer.convert.checkpoint, tftransfer.sources.published and the convert command.

The reference is a random-weight PyTorch ResNet with torchvision's module
structure (written here with torch.nn; no torchvision, no network), saved in the
robustness-library, robust-models-transfer and plain torchvision layouts.
"""

import argparse
import contextlib
import dataclasses
import io
import json
import os
import sys
import urllib.error
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import tensorflow as tf  # noqa: E402
from absl.testing import parameterized  # noqa: E402

from tests.helpers import (ROBUST_MEAN, ROBUST_STD, TINY_ARCH, TINY_CLASSES,  # noqa: E402
                           TINY_SIZE, TINY_WIDTH, save_checkpoint)
from tftransfer import convert
from tftransfer.sources import hub
from tftransfer.sources import published
from tftransfer.sources import saving
from tftransfer.sources import registry as sources
from tftransfer.commands import convert as convert_command  # noqa: E402
from tftransfer.errors import UserError  # noqa: E402
from tftransfer.models.torch_resnet import (  # noqa: E402
    AttackerModel, make_torch_resnet)

nn = torch.nn
IMAGE_SIZE = 64


def torch_logits(model, images, mean, std):
    """PyTorch's logits for NHWC [0, 1] images, normalizing as the checkpoint says."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2)
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        return model(x).numpy()


def random_images(num=2, size=IMAGE_SIZE, seed=1):
    return np.random.default_rng(seed).uniform(0, 1, (num, size, size, 3)).astype(np.float32)


# --- conversion matches PyTorch -------------------------------------------------------------

class ConvertLogitsTest(tf.test.TestCase, parameterized.TestCase):
    """Keras logits of converted checkpoints against the PyTorch modules'."""

    # arch -> (num_classes, width): ResNet-18 at half width also covers --width.
    SPECS = {"resnet50": (1000, 1.0), "resnet18": (10, 0.5)}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.torch_models = {arch: make_torch_resnet(arch, classes, width, seed=3)
                            for arch, (classes, width) in cls.SPECS.items()}
        cls.images = random_images()

    @parameterized.product(arch=["resnet50", "resnet18"], fmt=list(convert.FORMATS))
    def test_logits_match_pytorch(self, arch, fmt):
        num_classes, width = self.SPECS[arch]
        torch_model = self.torch_models[arch]
        path = save_checkpoint(torch_model, fmt, self.get_temp_dir())

        checkpoint = convert.read_checkpoint(path)
        model = convert.build_keras_model(checkpoint, arch, width, IMAGE_SIZE)

        self.assertEqual(checkpoint.format, fmt)
        self.assertEqual(convert.infer_num_classes(checkpoint), num_classes)
        mean, std = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)) if fmt == "torchvision" \
            else (ROBUST_MEAN, ROBUST_STD)
        self.assertAllClose(model.get_layer("normalize").mean.numpy(), mean)
        self.assertAllClose(model.get_layer("normalize").std.numpy(), std)
        expected = torch_logits(torch_model, self.images, mean, std)
        actual = model(self.images, training=False).numpy()
        max_abs_diff = float(np.max(np.abs(actual - expected)))
        print(f"\n{arch} {fmt}: max abs logit diff {max_abs_diff:.2e} "
              f"(logit scale {np.abs(expected).max():.2f})", file=sys.stderr)
        # Not a degenerate comparison: the logits depend on the image.
        self.assertGreater(np.abs(expected[0] - expected[1]).max(), 0.1)
        self.assertLessEqual(max_abs_diff, 1e-4)
        # The functional reference used by --verify agrees with the nn.Module too.
        self.assertAllClose(convert.reference_logits(checkpoint, self.images), expected,
                            atol=1e-5, rtol=0)


# --- small checkpoints for error handling, the command and the registry ---------------------



def tiny_state_dict(seed=5):
    return make_torch_resnet(TINY_ARCH, TINY_CLASSES, TINY_WIDTH, seed).state_dict()


class ConvertErrorsTest(tf.test.TestCase):
    """Bad checkpoints stop with one UserError naming the key, shape or file."""

    def _convert_state(self, state, name="bad.pth"):
        path = Path(self.get_temp_dir()) / name
        torch.save(state, path)
        checkpoint = convert.read_checkpoint(path)
        return convert.build_keras_model(checkpoint, TINY_ARCH, TINY_WIDTH, TINY_SIZE)

    def test_missing_key_is_named(self):
        state = tiny_state_dict()
        del state["layer3.1.bn2.running_var"]
        with self.assertRaisesRegex(UserError, r"missing the key 'layer3\.1\.bn2\.running_var'"):
            self._convert_state(state)

    def test_unexpected_key_is_named(self):
        state = tiny_state_dict()
        state["layer5.0.conv1.weight"] = torch.zeros(1, 1, 3, 3)
        with self.assertRaisesRegex(UserError, r"unexpected key 'layer5\.0\.conv1\.weight'"):
            self._convert_state(state)

    def test_unexpected_robustness_key_is_named(self):
        state = nn.DataParallel(AttackerModel(
            make_torch_resnet(TINY_ARCH, TINY_CLASSES, TINY_WIDTH, 5), ROBUST_MEAN,
            ROBUST_STD)).state_dict()
        state["module.extra.weight"] = torch.zeros(3)
        with self.assertRaisesRegex(UserError, r"unexpected key 'extra\.weight'"):
            self._convert_state({"model": state}, name="bad.pt")

    def test_wrong_shape_is_named(self):
        state = tiny_state_dict()
        state["layer2.0.conv1.weight"] = torch.zeros(16, 8, 5, 5)
        with self.assertRaisesRegex(
                UserError, r"'layer2\.0\.conv1\.weight' has shape \(16, 8, 5, 5\) but resnet18 "
                           r"\(width 0\.125\) expects \(16, 8, 3, 3\)"):
            self._convert_state(state)

    def test_bad_values_are_named_while_reading(self):
        """An int64 tensor was truncated to float32 silently; an infinite weight or a
        negative running variance surfaced only as "disagrees with PyTorch"."""
        def damaged(key, change):
            state = tiny_state_dict()
            state[key] = change(state[key])
            return state

        def with_value(index, value):
            def change(tensor):
                tensor = tensor.clone()
                tensor[index] = value
                return tensor
            return change

        cases = (
            ("fc.bias", lambda t: t.to(torch.int64), r"'fc\.bias' holds int64 values, not "
                                                     r"floating point"),
            ("layer1.0.conv1.weight", with_value((0, 1, 2, 0), float("inf")),
             r"'layer1\.0\.conv1\.weight' holds 1 NaN or infinite value\(s\) \(the first at "
             r"index \[0, 1, 2, 0\]: inf\)"),
            ("layer2.0.bn1.running_var", with_value(3, -0.5),
             r"'layer2\.0\.bn1\.running_var' holds 1 negative running variance\(s\) \(the "
             r"smallest -0\.5\)"),
            ("fc.weight", lambda t: with_value((1, 2), 1e300)(t.double()),
             r"'fc\.weight' holds values beyond float32's range \(up to 1e\+300\)"))
        for key, change, message in cases:
            with self.subTest(key):
                with self.assertRaisesRegex(UserError, rf"bad\.pth': tensor {message}.*; it "
                                                       rf"cannot be converted\.$"):
                    self._convert_state(damaged(key, change))

    def test_wrong_arch_is_reported_as_keys(self):
        path = Path(self.get_temp_dir()) / "r18.pth"
        torch.save(tiny_state_dict(), path)
        with self.assertRaisesRegex(UserError, r"missing the key 'layer1\.2\.conv1\.weight'.*"
                                               r"resnet34.*--arch"):
            convert.build_keras_model(convert.read_checkpoint(path), "resnet34", TINY_WIDTH,
                                      TINY_SIZE)

    def test_non_checkpoint_file_is_named(self):
        path = Path(self.get_temp_dir()) / "notes.txt"
        path.write_text("this is not a checkpoint\n")
        with self.assertRaisesRegex(UserError, r"notes\.txt' is not a PyTorch checkpoint"):
            convert.read_checkpoint(path)

    def test_missing_file_is_named(self):
        with self.assertRaisesRegex(UserError, r"nowhere\.pt' does not exist"):
            convert.read_checkpoint(Path(self.get_temp_dir()) / "nowhere.pt")

    def test_non_state_dict_is_reported(self):
        path = Path(self.get_temp_dir()) / "list.pth"
        torch.save([torch.zeros(2)], path)
        with self.assertRaisesRegex(UserError, r"list\.pth' holds a list, not a state dict"):
            convert.read_checkpoint(path)

    def test_pickled_objects_need_trust_pickle(self):
        path = Path(self.get_temp_dir()) / "old.pt"
        state = tiny_state_dict()
        torch.save({"state_dict": state, "args": argparse.Namespace(arch="resnet18")}, path)
        # The refusal names the refused global and, in the sentence suggesting the flag,
        # that the file's checksum is unverified.
        with self.assertRaisesRegex(UserError, r"old\.pt' cannot be read safely.*argparse\."
                                               r"Namespace.*has not checked its sha256 "
                                               r"\([0-9a-f]{64}\).*--trust-pickle"):
            convert.read_checkpoint(path)

        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr):
            checkpoint = convert.read_checkpoint(path, trust_pickle=True)
        self.assertIn("arbitrary code", stderr.getvalue())
        self.assertEqual(checkpoint.format, "torchvision")  # legacy 'state_dict' entry
        self.assertAllEqual(checkpoint.state["fc.weight"], state["fc.weight"].numpy())

    def test_verify_catches_a_wrong_weight(self):
        path = Path(self.get_temp_dir()) / "ok.pth"
        torch.save(tiny_state_dict(), path)
        checkpoint = convert.read_checkpoint(path)
        model = convert.build_keras_model(checkpoint, TINY_ARCH, TINY_WIDTH, TINY_SIZE)
        self.assertLessEqual(convert.verify(model, checkpoint, TINY_SIZE), 1e-4)
        kernel = model.get_layer("layer3.0.conv2").kernel
        kernel.assign(kernel.numpy()[::-1])  # a spatially flipped kernel: a typical slip
        with self.assertRaisesRegex(UserError, "disagrees with PyTorch"):
            convert.verify(model, checkpoint, TINY_SIZE)

    def test_missing_torch_names_the_extra(self):
        with mock.patch.dict(sys.modules, {"torch": None}):  # None makes `import torch` fail
            with self.assertRaisesRegex(UserError, r'pip install -e "\.\[torch\]"'):
                convert.import_torch()


class ConvertCommandTest(tf.test.TestCase):
    """The convert command writes a model directory that load_model reads."""

    def _args(self, **overrides):
        values = dict(list=False, published=None, checkpoint=None, arch=TINY_ARCH,
                      width=TINY_WIDTH, image_size=TINY_SIZE, out=None, attack=None, eps=None,
                      trust_pickle=False, verify=True)
        values.update(overrides)
        return argparse.Namespace(**values)

    def test_checkpoint_to_model_dir(self):
        import tftransfer

        torch_model = make_torch_resnet(TINY_ARCH, TINY_CLASSES, TINY_WIDTH, seed=7)
        path = save_checkpoint(torch_model, "robustness", self.get_temp_dir())
        out = Path(self.get_temp_dir()) / "converted"

        result = convert_command.run(self._args(checkpoint=str(path), out=str(out),
                                                attack="l2", eps=3.0))

        self.assertEqual(result["out"], str(out))
        self.assertEqual((result["arch"], result["num_classes"], result["format"]),
                         (TINY_ARCH, TINY_CLASSES, "robustness"))
        self.assertLessEqual(result["max_abs_diff"], 1e-4)
        json.dumps(result)  # the CLI prints it as JSON
        config = json.loads((out / "config.json").read_text())
        self.assertEqual(config["source"]["sha256"], convert.file_sha256(path))
        self.assertEqual(config["source"]["epoch"], 90)
        self.assertEqual((config["attack"], config["eps"], config["image_size"]), ("l2", 3.0, 32))
        self.assertLen(config["class_names"], TINY_CLASSES)
        images = random_images(size=TINY_SIZE)
        reloaded = tftransfer.load_model(out)
        self.assertAllClose(reloaded(images, training=False),
                            torch_logits(torch_model, images, ROBUST_MEAN, ROBUST_STD),
                            atol=1e-4, rtol=0)

    def test_checkpoint_needs_out(self):
        with self.assertRaisesRegex(UserError, "--out"):
            convert_command.run(self._args(checkpoint="x.pt"))

    def test_list_prints_the_registry(self):
        stdout = io.StringIO()
        with contextlib.redirect_stdout(stdout):
            result = convert_command.run(self._args(list=True))
        self.assertIn("robust-resnet50-l2-eps3", stdout.getvalue())
        self.assertIn("resnet50-natural", result["published"])

    def test_unknown_published_name(self):
        with self.assertRaisesRegex(UserError, r"No published model called 'nope'.*"
                                               r"robust-resnet50-l2-eps3"):
            convert_command.run(self._args(published="nope"))


class PublishedTest(tf.test.TestCase):
    """The registry, its download/convert cache and the sources hook (no network)."""

    def setUp(self):
        super().setUp()
        self.cache = Path(self.get_temp_dir()) / "cache"
        patcher = mock.patch.dict(os.environ, {"TFTRANSFER_CACHE": str(self.cache)})
        patcher.start()
        self.addCleanup(patcher.stop)

    def _local_entry(self, sha256=None):
        """A registry entry whose 'download' is a file:// URL to a tiny checkpoint."""
        source = Path(self.get_temp_dir()) / "tiny.pth"
        torch.save(tiny_state_dict(), source)
        return sources.Source(
            name="tiny-test", file_name="tiny.pth", urls=(source.as_uri(),), arch=TINY_ARCH,
            attack="l2", eps=3.0, eps_label="3",
            sha256=sha256 or convert.file_sha256(source)[:8], origin="test",
            width=TINY_WIDTH)

    def test_registry_contents(self):
        names = published.names()
        self.assertLen(set(names), len(names))
        for name in ("robust-resnet50-l2-eps3", "resnet50-natural", "robust-resnet50-linf-eps4",
                     "robust-resnet50-linf-eps8", "salman-resnet50-l2-eps0.01",
                     "salman-resnet50-l2-eps5", "salman-resnet50-linf-eps0.5",
                     "salman-resnet50-linf-eps8"):
            self.assertIn(name, names)
        entry = published.get("salman-resnet50-linf-eps4")
        self.assertAllClose(entry.eps, 4 / 255)
        self.assertEqual((entry.file_name, entry.metrics["imagenet_top1"]),
                         ("resnet50_linf_eps4.0.ckpt", 63.86))
        self.assertEqual(published.get("salman-resnet50-l2-eps0").attack, "none")
        for entry in published.REGISTRY.values():
            self.assertTrue(all(url.startswith("https://") for url in entry.urls))

    def test_the_hub_knows_published_names(self):
        self.assertIn("robust-resnet50-l2-eps3", hub.names())
        source = hub.get("robust-resnet50-l2-eps3")
        self.assertEqual((source.arch, source.attack, source.eps), ("resnet50", "l2", 3.0))
        self.assertIsNone(hub.get("no-such-source"))

    def test_the_hub_resolves_through_the_cache(self):
        directory = self.cache / "robust-resnet50-l2-eps3"
        directory.mkdir(parents=True)
        (directory / saving.MODEL_FILE).write_bytes(b"")
        (directory / saving.CONFIG_FILE).write_text("{}")
        with mock.patch.object(published, "_download_one", side_effect=AssertionError):
            self.assertEqual(hub.model_dir("robust-resnet50-l2-eps3"), directory)

    def test_offline_names_url_and_place(self):
        entry = published.get("robust-resnet50-l2-eps3")
        with mock.patch("urllib.request.urlopen",
                        side_effect=urllib.error.URLError("no network")):
            with self.assertRaises(UserError) as raised:
                published.resolve("robust-resnet50-l2-eps3")
        message = str(raised.exception)
        self.assertIn(entry.urls[0], message)
        self.assertIn(f"checkpoint file imagenet_l2_3_0.pt (from {entry.urls[0]}) into the "
                      f"cache directory {self.cache / entry.name}/", message)
        self.assertIn(str(self.cache / entry.name / "imagenet_l2_3_0.pt"), message)
        self.assertNotIn(". ", message.rstrip("."))  # one sentence

    def test_download_and_convert_once(self):
        import tftransfer

        entry = self._local_entry()
        directory = published.ensure_converted(entry, image_size=TINY_SIZE)

        self.assertEqual(directory, self.cache / "tiny-test")
        self.assertTrue((directory / "tiny.pth").is_file())
        config = saving.read_config(directory)
        self.assertEqual((config["attack"], config["dataset"]), ("l2", "imagenet"))
        self.assertLessEqual(config["source"]["max_abs_diff_vs_pytorch"], 1e-4)
        self.assertEqual(tftransfer.load_model(directory).output_shape, (None, TINY_CLASSES))
        with mock.patch.object(published, "_download_one", side_effect=AssertionError), \
                mock.patch.object(convert, "convert", side_effect=AssertionError):
            self.assertEqual(published.ensure_converted(entry, image_size=TINY_SIZE), directory)

    def test_checksum_mismatch_is_refused(self):
        entry = self._local_entry(sha256="00000000")
        with self.assertRaisesRegex(UserError, "has sha256 .* but 00000000 is published"):
            published.ensure_converted(entry, image_size=TINY_SIZE)
        self.assertFalse((self.cache / "tiny-test" / "tiny.pth").exists())

    def test_recorded_checksums_name_their_source(self):
        full = [e for e in published.REGISTRY.values() if e.sha256 and len(e.sha256) == 64]
        self.assertLen(full, 26)  # the Salman et al. files whose mirror page shows a sha256
        for entry in published.REGISTRY.values():
            if entry.sha256 is None:
                self.assertIsNone(entry.sha256_source)
                continue
            self.assertRegex(entry.sha256, r"^([0-9a-f]{8}|[0-9a-f]{64})$")
            if len(entry.sha256) == 8:  # torch.hub's convention: the prefix is in the name
                self.assertIn(f"-{entry.sha256}.", entry.file_name)
                self.assertIn("pytorch.org", entry.sha256_source)
            else:
                self.assertTrue(entry.sha256_source.endswith("/" + entry.file_name))
        self.assertEqual(published.get("salman-resnet50-l2-eps3").sha256,
                         "380b14e6f9750bffa1447cf7017f65da4dc5ce71a3dd112f107515dcf7b14d9d")
        self.assertIsNone(published.get("robust-resnet50-l2-eps3").sha256)  # none published

    def test_known_good_full_sha256_passes_and_is_recorded(self):
        source = Path(self.get_temp_dir()) / "tiny.pth"
        torch.save(tiny_state_dict(), source)
        entry = self._local_entry(sha256=convert.file_sha256(source))
        directory = published.ensure_converted(entry, image_size=TINY_SIZE)
        recorded = saving.read_config(directory)["published"]
        self.assertEqual((recorded["sha256"], recorded["sha256_verified"]),
                         (entry.sha256, "full"))

    def test_a_cached_file_with_a_wrong_sha256_is_moved_aside(self):
        entry = self._local_entry(sha256=None)
        entry = dataclasses.replace(entry, sha256=convert.file_sha256(
            Path(entry.urls[0].removeprefix("file://"))))
        cached = published.checkpoint_path(entry)
        cached.parent.mkdir(parents=True)
        cached.write_bytes(b"not the published file")  # put there by hand, or half-written
        with self.assertRaises(UserError) as raised:
            published.download(entry)
        message = str(raised.exception)
        self.assertRegex(message, rf"has sha256 [0-9a-f]{{64}}, but {entry.sha256} is published")
        self.assertIn(f"moved to {cached}.rejected and not loaded", message)
        self.assertNotIn("--trust-pickle", message)
        self.assertFalse(cached.exists())
        self.assertEqual((cached.parent / (cached.name + ".rejected")).read_bytes(),
                         b"not the published file")
        self.assertEqual(convert.file_sha256(published.download(entry)), entry.sha256)

    def test_a_mirror_with_a_wrong_file_is_skipped(self):
        good = self._local_entry(sha256=None)
        good_path = Path(good.urls[0].removeprefix("file://"))
        tampered = Path(self.get_temp_dir()) / "tampered.pth"
        tampered.write_bytes(good_path.read_bytes() + b"extra")
        entry = dataclasses.replace(good, urls=(tampered.as_uri(), good.urls[0]),
                                    sha256=convert.file_sha256(good_path))
        with contextlib.redirect_stderr(io.StringIO()) as err:
            path = published.download(entry)
        self.assertEqual(convert.file_sha256(path), entry.sha256)
        self.assertIn("tampered.pth", err.getvalue())

    def test_trust_pickle_is_suggested_only_with_the_checksum_status(self):
        pickled = Path(self.get_temp_dir()) / "pickled.pt"
        torch.save({"state_dict": tiny_state_dict(), "args": argparse.Namespace(a=1)}, pickled)
        prefix = convert.file_sha256(pickled)[:8]
        for sha256, status in ((None, "records no published sha256 for it"),
                               (prefix, f"matches only the 8-hex-digit sha256 prefix {prefix}")):
            entry = dataclasses.replace(self._local_entry(), name=f"pickled-{sha256}",
                                        file_name="pickled.pt", urls=(pickled.as_uri(),),
                                        sha256=sha256)
            with self.assertRaises(UserError) as raised:
                published.ensure_converted(entry, image_size=TINY_SIZE)
            message = str(raised.exception)
            self.assertIn("--trust-pickle", message)
            self.assertIn(status, message)
            self.assertNotIn(". ", message.rstrip("."))  # one sentence


if __name__ == "__main__":
    tf.test.main()
