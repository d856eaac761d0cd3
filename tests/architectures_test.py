"""Tests of the architecture registry: every entry follows the protocol that fine-tuning,
tuning, conversion and config rely on."""

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from tftransfer import config
from tftransfer.models import architectures
from tftransfer import convert
from tftransfer.models import resnet
from tftransfer.tuning import search_space
from tftransfer import finetune
from tftransfer.errors import UserError

# Small enough to build every architecture quickly (resnet101 has 33 blocks).
TINY = {"width": 0.125, "small_inputs": True}


def build(name):
    return architectures.build(name, 3, 32, **TINY)


def producer(tensor):
    """The layer whose output ``tensor`` is."""
    return tensor._keras_history.operation


def layer_names(model):
    return {layer.name for layer in model.layers}


class EveryArchitectureTest(tf.test.TestCase, parameterized.TestCase):

    @parameterized.parameters(*architectures.NAMES)
    def test_builds_a_classifier_named_after_itself(self, name):
        model = build(name)
        record = architectures.get(name)
        self.assertEqual(model.name, name)
        self.assertIs(architectures.for_model(model), record)
        self.assertIn("normalize", layer_names(model))
        head = model.layers[-1]
        self.assertEqual(head.name, record.head_layer)
        self.assertIsInstance(head, keras.layers.Dense)
        self.assertIs(producer(head.input), model.get_layer(record.feature_layer))
        out = model(np.random.default_rng(0).random((2, 32, 32, 3)).astype("float32"))
        self.assertEqual((out.shape, out.dtype), ((2, 3), tf.float32))

    @parameterized.parameters(*architectures.NAMES)
    def test_blocks_are_named_in_forward_order(self, name):
        model = build(name)
        blocks = architectures.get(name).block_names
        self.assertLen(set(blocks), len(blocks))
        first_seen = []
        for layer in model.layers:
            owner = next((b for b in blocks if layer.name.startswith(f"{b}.")), None)
            if owner and owner not in first_seen:
                first_seen.append(owner)
        self.assertEqual(first_seen, list(blocks))
        # Each block takes the previous block's output: the names follow the data flow.
        for previous, block in zip(blocks, blocks[1:]):
            source = producer(architectures.block_input(model, block))
            self.assertTrue(source.name.startswith(f"{previous}."), (block, source.name))
        self.assertEqual([b for s in architectures.get(name).stages for b in s.blocks],
                         list(blocks))

    @parameterized.parameters(*architectures.NAMES)
    def test_freezing_and_the_boundary_agree_with_the_registry(self, name):
        record = architectures.get(name)
        blocks = record.block_names
        with_weights = {layer.name for layer in build(name).layers if layer.trainable_weights}
        for n in sorted({0, 1, len(record.stages[-1].blocks)}):
            model = finetune.attach_head(build(name), 4, "glorot", seed=0)
            unfrozen = finetune.freeze(model, n, "inference")
            self.assertEqual(unfrozen, list(blocks[len(blocks) - n:]) if n else [])
            self.assertEqual(finetune.unfrozen_block_names(model, n), unfrozen)
            boundary = finetune.feature_boundary(model, unfrozen)
            trunk = layer_names(keras.Model(model.inputs, boundary))
            above = layer_names(keras.Model(boundary, model.outputs)) - {"image"}
            in_unfrozen = {layer.name for layer in model.layers
                           if architectures.in_blocks(layer.name, unfrozen)}
            # The trunk holds every frozen block and nothing of the unfrozen ones; what is
            # trained on its output holds the unfrozen blocks and the head.
            self.assertFalse(trunk & in_unfrozen)
            self.assertTrue(in_unfrozen <= above)
            self.assertIn(record.head_layer, above)
            if not n:
                self.assertIs(producer(boundary), model.get_layer(record.feature_layer))
            trainable = {layer.name for layer in model.layers if layer.trainable_weights}
            expected = in_unfrozen | {record.head_layer} | (set(record.top_layers) if n else set())
            self.assertEqual(trainable, expected & with_weights)

    @parameterized.parameters(*architectures.NAMES)
    def test_tuning_offers_the_registered_stages(self, name):
        record = architectures.get(name)
        sizes = [len(stage.blocks) for stage in record.stages]
        stage_ends = {sum(sizes[i:]) for i in range(1, len(sizes))}  # all but every block
        self.assertEqual(search_space.unfrozen_block_choices(build(name)),
                         sorted({0, 1} | stage_ends) + [-1])


class RegistryTest(tf.test.TestCase):

    def test_config_and_convert_take_their_choices_from_the_registry(self):
        self.assertEqual(config.ARCHITECTURES, architectures.NAMES)
        self.assertEqual(set(convert.ARCHITECTURES),
                         {n for n in architectures.NAMES if architectures.get(n).torchvision})
        self.assertEqual(set(resnet.ARCHITECTURES),
                         {n for n in architectures.NAMES if n.startswith("resnet")})
        config.ModelConfig(arch=architectures.NAMES[-1])
        with self.assertRaisesRegex(UserError, "arch must be one of .*resnet20"):
            config.ModelConfig(arch="vgg16")
        with self.assertRaisesRegex(UserError, "Unknown architecture 'vgg16'"):
            architectures.build("vgg16", 3, 32)

    def test_a_fine_tuned_model_keeps_its_architecture(self):
        model = build("resnet20")
        tuned = finetune.attach_head(finetune.attach_head(model, 4, "glorot"), 5, "glorot")
        self.assertEqual(tuned.name, "resnet20_finetuned_finetuned")
        self.assertIs(architectures.for_model(tuned), architectures.get("resnet20"))
        self.assertLen(finetune.unfrozen_block_names(tuned, -1), 9)

    def test_a_model_of_another_library_with_a_registered_name_has_no_blocks(self):
        # keras.applications.ResNet50 is also called "resnet50", with other layer names.
        inputs = keras.Input((8, 8, 3))
        x = keras.layers.Conv2D(4, 3, name="conv2_block1_1_conv")(inputs)
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        model = keras.Model(inputs, keras.layers.Dense(3, name="predictions")(x), name="resnet50")
        self.assertIsNone(architectures.for_model(model))
        self.assertEqual(search_space.unfrozen_block_choices(model), [0, -1])
        tuned = finetune.attach_head(model, 4, "glorot")
        self.assertEqual(finetune.freeze(tuned, 0, "inference"), [])
        self.assertEqual([layer.name for layer in tuned.layers if layer.trainable_weights],
                         ["fc"])
        with self.assertRaisesRegex(UserError, "more than the 0 residual blocks"):
            finetune.freeze(tuned, 1, "inference")
