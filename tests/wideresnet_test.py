"""Tests of the WideResNet (WRN-16-4): the architecture, checked against a PyTorch
reference, and its path through the toolkit via the registry: pretrain, save and reload,
transfer with block-level freezing and the feature cache, tuning's stage choices."""

import shutil
import tempfile
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import tftransfer
from tests.helpers import assert_save_and_reload, make_image_folder
from tftransfer import cli
from tftransfer.models import architectures
from tftransfer.sources import saving
from tftransfer.tuning import search_space
from tftransfer.training import pretrain as training
from tftransfer import finetune
from tftransfer.config import DataConfig, ModelConfig, OptimConfig, PretrainConfig, TransferConfig

ARCH = "wrn16_4"
WIDTHS = (16, 64, 128, 256)  # stem, then the three stages (16k, 32k, 64k with k = 4)


def parameter_count(widths, blocks_per_stage, num_classes):
    """WRN parameters from the paper's description: bias-free convolutions, BatchNorm
    scale and offset, a 1x1 shortcut where the width changes, the classifier."""
    count, channels = 3 * 3 * 3 * widths[0], widths[0]
    for width in widths[1:]:
        for _ in range(blocks_per_stage):
            count += 2 * channels + 9 * channels * width + 2 * width + 9 * width * width
            count += channels * width if channels != width else 0
            channels = width
    return count + 2 * channels + channels * num_classes + num_classes


def randomize(model, seed=0):
    """Random weights, BatchNorm statistics included (so no BatchNorm is an identity)."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        shape = tuple(variable.shape)
        if "variance" in variable.path:
            variable.assign(rng.uniform(0.5, 1.5, shape).astype("float32"))
        elif variable.path.endswith(("mean", "std")) and "normalize" in variable.path:
            continue
        else:
            variable.assign(rng.normal(0, 0.2, shape).astype("float32"))
    return model


def torch_reference_logits(model, images):
    """The logits of Zagoruyko & Komodakis' WideResNet (as in their and RobustBench's
    PyTorch code) with ``model``'s weights, in plain torch functional ops."""
    torch = pytest.importorskip("torch")
    functional = torch.nn.functional
    weights = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kernel = np.transpose(layer.kernel.numpy(), (3, 2, 0, 1))  # -> (out, in, h, w)
            weights[layer.name] = torch.from_numpy(np.ascontiguousarray(kernel))
        elif isinstance(layer, keras.layers.BatchNormalization):
            weights[layer.name] = [torch.from_numpy(v.numpy()) for v in (
                layer.moving_mean, layer.moving_variance, layer.gamma, layer.beta)]

    def bn_relu(x, name):
        return functional.relu(functional.batch_norm(x, *weights[name], eps=1e-5))

    def block(x, prefix, stride):
        activated = bn_relu(x, f"{prefix}.bn1")
        y = functional.conv2d(activated, weights[f"{prefix}.conv1"], stride=stride, padding=1)
        y = functional.conv2d(bn_relu(y, f"{prefix}.bn2"), weights[f"{prefix}.conv2"], padding=1)
        shortcut = weights.get(f"{prefix}.downsample.0")
        return y + (x if shortcut is None else functional.conv2d(activated, shortcut, stride=stride))

    normalize = model.get_layer("normalize")
    x = torch.from_numpy(images).permute(0, 3, 1, 2)
    x = (x - torch.from_numpy(normalize.mean.numpy()).view(1, 3, 1, 1)) \
        / torch.from_numpy(normalize.std.numpy()).view(1, 3, 1, 1)
    x = functional.conv2d(x, weights["conv1"], padding=1)
    for stage in (1, 2, 3):
        for index in (0, 1):
            x = block(x, f"layer{stage}.{index}", 2 if index == 0 and stage > 1 else 1)
    x = bn_relu(x, "bn1").mean(dim=(2, 3))
    fc = model.get_layer("fc")
    return functional.linear(x, torch.from_numpy(fc.kernel.numpy().T),
                             torch.from_numpy(fc.bias.numpy())).numpy()


class ArchitectureTest(tf.test.TestCase):

    def test_parameter_count_and_widths_are_wrn_16_4(self):
        model = architectures.build(ARCH, 10, 32)
        self.assertEqual(tftransfer.models.resnet.trainable_parameter_count(model),
                         parameter_count(WIDTHS, 2, 10))
        self.assertEqual(parameter_count(WIDTHS, 2, 10), 2_748_890)
        self.assertEqual([model.get_layer(f"layer{s}.1.conv2").filters for s in (1, 2, 3)],
                         list(WIDTHS[1:]))
        self.assertEqual(model.get_layer("layer2.0.conv1").strides, (2, 2))
        names = {layer.name for layer in model.layers}
        # A 1x1 shortcut only where the width changes, and no BatchNorm on it (pre-activation).
        self.assertTrue({"layer1.0.downsample.0", "layer2.0.downsample.0"} <= names)
        self.assertNotIn("layer1.1.downsample.0", names)
        self.assertFalse(any(name.endswith("downsample.1") for name in names))

    def test_matches_the_pytorch_reference(self):
        model = randomize(architectures.build(ARCH, 5, 32, width=0.25,
                                              mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3)))
        images = np.random.default_rng(1).random((2, 32, 32, 3)).astype("float32")
        expected = torch_reference_logits(model, images)
        self.assertAllClose(model(images, training=False), expected, atol=1e-4, rtol=1e-4)

    def test_save_and_reload_through_the_registry(self):
        model = randomize(architectures.build(ARCH, 4, 32, width=0.25))
        images = np.random.default_rng(2).random((3, 32, 32, 3)).astype("float32")
        reloaded = assert_save_and_reload(self, model, images, Path(self.get_temp_dir()) / "wrn",
                                          {"arch": ARCH, "image_size": 32}, 1e-5, 1e-5)
        self.assertIs(architectures.for_model(reloaded), architectures.get(ARCH))

    def test_the_cli_accepts_the_architecture(self):
        args = cli.build_parser().parse_args(["pretrain", "--arch", ARCH, "--out", "x"])
        self.assertEqual(args.arch, ARCH)


class PretrainAndTransferTest(tf.test.TestCase):
    """One tiny pretrain run (1 epoch, 32 images), then transfers from it."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tmp = Path(tempfile.mkdtemp())
        cls.folder = make_image_folder(cls.tmp / "images", classes=("a", "b", "c"),
                                       per_class=12, split=True)
        cls.source = cls.tmp / "source"
        cls.pretrained = training.pretrain(PretrainConfig(
            out=str(cls.source), epochs=1,
            data=DataConfig(dataset=str(cls.folder), image_size=32, batch_size=16,
                            train_images=32),
            model=ModelConfig(arch=ARCH, width=0.25)))

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)
        super().tearDownClass()

    def config(self, **kwargs):
        defaults = dict(target=str(self.folder), source=str(self.source), epochs=3,
                        data=DataConfig(dataset=str(self.folder), batch_size=8, augment=False),
                        optim=OptimConfig(learning_rate=0.05), head_init="glorot")
        defaults.update(kwargs)
        return TransferConfig(**defaults)

    def test_pretrain_writes_a_source_model_of_the_architecture(self):
        model = tftransfer.load_model(self.source)
        self.assertEqual(model.name, ARCH)
        self.assertEqual(saving.read_config(self.source)["arch"], ARCH)
        self.assertEqual(architectures.block_names(model),
                         list(architectures.get(ARCH).block_names))
        self.assertEqual(search_space.unfrozen_block_choices(model), [0, 1, 2, 4, -1])

    def test_the_last_stage_and_the_final_batch_norm_fine_tune(self):
        model = finetune.attach_head(tftransfer.load_model(self.source), 3, "glorot")
        self.assertEqual(finetune.freeze(model, 2, "inference"), ["layer3.0", "layer3.1"])
        trainable = {layer.name for layer in model.layers if layer.trainable_weights}
        self.assertEqual({name.split(".")[0] for name in trainable}, {"layer3", "bn1", "fc"})
        self.assertIn("layer3.0.downsample.0", trainable)
        finetune.freeze(model, 0, "inference")
        self.assertEqual({layer.name for layer in model.layers if layer.trainable_weights},
                         {"fc"})

    def test_cached_and_uncached_paths_agree(self):
        images = np.random.default_rng(0).random((6, 32, 32, 3)).astype("float32")
        outputs = {}
        for mode in ("on", "off"):
            out = self.tmp / f"transfer-{mode}"
            row = finetune.fine_tune(self.config(unfrozen_blocks=2, feature_cache=mode,
                                                 out=str(out)), verbose=False)
            self.assertEqual(row["feature_cache"], mode == "on")
            self.assertEqual(saving.read_config(out)["unfrozen_block_names"],
                             ["layer3.0", "layer3.1"])
            outputs[mode] = tftransfer.load_model(out)(images).numpy()
        self.assertAllClose(outputs["on"], outputs["off"], atol=1e-4, rtol=1e-4)
        source = tftransfer.load_model(self.source)(images).numpy()
        self.assertNotAllClose(outputs["on"][:, :3], source[:, :3])  # it did train
