"""Tests of the torchvision-layout ResNets."""

import os

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from tests.helpers import assert_save_and_reload
from tftransfer.models import resnet
from tftransfer.errors import UserError


class ResNetTest(tf.test.TestCase, parameterized.TestCase):

    @parameterized.parameters(("resnet18", 11_689_512), ("resnet50", 25_557_032))
    def test_parameter_counts_match_torchvision(self, arch, expected):
        model = resnet.build(arch, 1000, 224)
        self.assertEqual(resnet.trainable_parameter_count(model), expected)

    def test_layer_names_mirror_torchvision(self):
        names = {layer.name for layer in resnet.build("resnet50", 10, 64).layers}
        for expected in ("conv1", "bn1", "layer1.0.conv1", "layer1.0.bn3",
                         "layer1.0.downsample.0", "layer1.0.downsample.1", "layer4.2.conv3",
                         "fc", "normalize"):
            self.assertIn(expected, names)
        # v1.5: the stride of a downsampling bottleneck sits on the 3x3 convolution.
        model = resnet.build("resnet50", 10, 64)
        self.assertEqual(model.get_layer("layer2.0.conv2").strides, (2, 2))
        self.assertEqual(model.get_layer("layer2.0.conv1").strides, (1, 1))
        self.assertFalse(model.get_layer("conv1").use_bias)
        self.assertAllClose(model.get_layer("bn1").epsilon, 1e-5)

    @parameterized.parameters(("resnet18", 64, False), ("resnet20", 32, True),
                              ("resnet34", 32, True))
    def test_output_shape_and_blocks(self, arch, size, small):
        model = resnet.build(arch, 7, size, small_inputs=small, width=0.25)
        out = model(np.random.rand(2, size, size, 3).astype("float32"))
        self.assertEqual(out.shape, (2, 7))
        expected_blocks = {"resnet18": 8, "resnet20": 9, "resnet34": 16}[arch]
        self.assertLen(resnet.residual_block_names(model), expected_blocks)

    def test_small_inputs_stem_has_no_maxpool(self):
        names = {layer.name for layer in resnet.build("resnet18", 10, 32, small_inputs=True).layers}
        self.assertNotIn("maxpool", names)
        self.assertEqual(resnet.build("resnet18", 10, 32, small_inputs=True)
                         .get_layer("conv1").kernel_size, (3, 3))

    def test_width_scales_channels(self):
        model = resnet.build("resnet20", 10, 32, width=2.0)
        self.assertEqual(model.get_layer("layer3.2.conv2").filters, 128)

    def test_normalization_is_inside_the_model(self):
        model = resnet.build("resnet20", 10, 32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
        x = np.full((1, 32, 32, 3), 0.75, "float32")
        self.assertAllClose(model.get_layer("normalize")(x), np.ones((1, 32, 32, 3)))

    def test_save_and_reload_gives_same_outputs(self):
        model = resnet.build("resnet20", 10, 32, mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.4))
        x = np.random.default_rng(0).random((3, 32, 32, 3)).astype("float32")
        reloaded = assert_save_and_reload(self, model, x, os.path.join(self.get_temp_dir(), "m"))
        self.assertAllClose(reloaded.get_layer("normalize").get_config()["std"], [0.2, 0.3, 0.4])

    def test_mixed_precision_logits_are_float32(self):
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
        try:
            model = resnet.build("resnet20", 10, 32)
            self.assertEqual(model(np.zeros((1, 32, 32, 3), "float32")).dtype, tf.float32)
        finally:
            keras.mixed_precision.set_global_policy("float32")

    def test_bad_arguments_raise_user_errors(self):
        with self.assertRaisesRegex(UserError, "Unknown architecture 'resnet19'"):
            resnet.build("resnet19", 10, 32)
        with self.assertRaisesRegex(UserError, "num_classes"):
            resnet.build("resnet20", 1, 32)
