"""Tests of the fine-tuning recipe."""

import dataclasses
import json
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from absl.testing import parameterized

import tftransfer
from tests.helpers import make_image_folder, make_source
from tftransfer.training import optim
from tftransfer.models import resnet
from tftransfer.sources import saving
from tftransfer import finetune
from tftransfer.sources import loading as source_loading
from tftransfer.training.callbacks import StopOnNaN
from tftransfer.config import DataConfig, OptimConfig, TransferConfig
from tftransfer.errors import UserError


class TransferTestCase(tf.test.TestCase):

    def setUp(self):
        super().setUp()
        self.tmp = Path(self.get_temp_dir())
        self.source = make_source(self.tmp / "source")
        self.folder = make_image_folder(self.tmp / "images", classes=("a", "b", "c"),
                                        per_class=12, split=True)

    def config(self, **kwargs):
        data = DataConfig(dataset=str(self.folder), batch_size=8, augment=False)
        defaults = dict(target=str(self.folder), source=str(self.source), data=data, epochs=3,
                        out=str(self.tmp / "run"), optim=OptimConfig(learning_rate=0.05),
                        head_init="glorot")
        defaults.update(kwargs)
        return TransferConfig(**defaults)


class HeadAndFreezingTest(TransferTestCase, parameterized.TestCase):

    def test_head_is_replaced_with_target_classes(self):
        source = tftransfer.load_model(self.source)
        model = finetune.attach_head(source, 5, "normal")
        self.assertEqual(model.output.shape[-1], 5)
        self.assertEqual(model.layers[-1].name, "fc")
        self.assertIsNot(model.layers[-1], source.layers[-1])
        self.assertAllClose(np.std(model.layers[-1].kernel.numpy()), 1.0, atol=0.15)

    def test_head_std_scales_the_same_draw(self):
        source = tftransfer.load_model(self.source)
        unit = finetune.attach_head(source, 5, "normal", seed=3).get_layer("fc").kernel.numpy()
        wide = finetune.attach_head(source, 5, "normal", seed=3, head_std=5.0)
        self.assertAllClose(wide.get_layer("fc").kernel.numpy(), 5.0 * unit, rtol=1e-5)

    def test_head_std_must_be_positive_and_for_the_normal_head(self):
        with self.assertRaisesRegex(UserError, "head_std must be positive"):
            TransferConfig(target="mnist", head_std=0.0)
        with self.assertRaisesRegex(UserError, "normal head's scale"):
            TransferConfig(target="mnist", head_init="glorot", head_std=2.0)

    @parameterized.parameters((0, []), (1, ["layer3.2"]), (3, ["layer3.0", "layer3.1", "layer3.2"]))
    def test_trainable_layers_for_each_n(self, n, blocks):
        model = finetune.attach_head(tftransfer.load_model(self.source), 3, "glorot")
        self.assertEqual(finetune.freeze(model, n, "inference"), blocks)
        trainable = {layer.name.split(".")[0] + ("." + layer.name.split(".")[1]
                     if layer.name.startswith("layer") else "")
                     for layer in model.layers if layer.trainable_weights}
        self.assertEqual(trainable, set(blocks) | {"fc"})
        self.assertFalse(model.get_layer("bn1").trainable)  # frozen BN: inference mode

    def test_minus_one_unfreezes_everything(self):
        model = finetune.attach_head(tftransfer.load_model(self.source), 3, "glorot")
        finetune.freeze(model, -1, "inference")
        self.assertEqual(len(model.trainable_weights), len(resnet.build(
            "resnet20", 3, 32, width=0.25).trainable_weights))

    def test_frozen_bn_train_mode_updates_statistics_but_not_scale(self):
        model = finetune.attach_head(tftransfer.load_model(self.source), 3, "glorot")
        finetune.freeze(model, 0, "train")
        bn = model.get_layer("layer1.0.bn1")
        self.assertFalse(any(v is bn.gamma for v in model.trainable_weights))
        self.assertTrue(bn.trainable)
        before = bn.moving_mean.numpy().copy()
        model(np.random.rand(4, 32, 32, 3).astype("float32"), training=True)
        self.assertNotAllClose(bn.moving_mean.numpy(), before)

    def test_bad_inputs_give_clear_errors(self):
        model = tftransfer.load_model(self.source)
        with self.assertRaisesRegex(UserError, "more than the 9 residual blocks"):
            finetune.freeze(finetune.attach_head(model, 3, "glorot"), 10, "inference")
        with self.assertRaisesRegex(UserError, "at least 2"):
            finetune.attach_head(model, 1, "glorot")
        not_classifier = keras.Sequential([keras.Input((32, 32, 3)),
                                           keras.layers.GlobalAveragePooling2D()])
        with self.assertRaisesRegex(UserError, "does not end in a Dense classifier"):
            finetune.attach_head(not_classifier, 3, "glorot")
        one_class = make_image_folder(self.tmp / "one", classes=("only",))
        with self.assertRaisesRegex(UserError, "at least 2"):
            finetune.fine_tune(self.config(target=str(one_class)))


class ScheduleTest(tf.test.TestCase):

    def test_step_schedule_divides_by_ten_every_third(self):
        schedule = optim.learning_rate_schedule(OptimConfig(), epochs=9, steps_per_epoch=10)
        self.assertAllClose([float(schedule(s)) for s in (0, 29, 30, 59, 60, 89)],
                            [0.1, 0.1, 0.01, 0.01, 0.001, 0.001])

    def test_cosine_schedule_ends_near_zero(self):
        schedule = optim.learning_rate_schedule(OptimConfig(schedule="cosine"), 4, 10)
        self.assertAllClose(float(schedule(0)), 0.1)
        self.assertLess(float(schedule(39)), 0.001)


class FineTuneTest(TransferTestCase):

    def test_the_threat_model_is_read_from_pretrain_and_convert_configs(self):
        pretrained = {"attack": {"attack": "l2", "eps": 0.5, "attack_steps": 3}}
        converted = {"attack": "l2", "eps": 3.0}  # convert --published robust-resnet50-l2-eps3
        self.assertEqual(source_loading.threat_model(pretrained), ("l2", 0.5))
        self.assertEqual(source_loading.threat_model(converted), ("l2", 3.0))
        self.assertEqual(source_loading.threat_model({"attack": "none", "eps": 0.0}), ("none", 0.0))
        self.assertEqual(source_loading.threat_model({"attack": None, "eps": None}), ("none", 0.0))
        self.assertEqual(source_loading.threat_model({}), ("none", 0.0))

    def test_a_converted_robust_source_is_recorded_as_robust(self):
        config_path = self.source / "config.json"
        config = json.loads(config_path.read_text())
        config.update(attack="linf", eps=4 / 255)  # how convert --published writes it
        config_path.write_text(json.dumps(config))
        identity = source_loading.load_source(str(self.source)).identity
        self.assertEqual((identity["source_attack"], identity["source_eps"]), ("linf", 4 / 255))

    def test_a_diverged_fine_tune_is_an_error_not_a_result(self):
        config = self.config(optim=OptimConfig(learning_rate=1e30), eval_every=1)
        with self.assertRaisesRegex(UserError, "diverged.*NaN at epoch 1"):
            finetune.fine_tune(config)

    def test_weights_broken_by_the_last_step_are_an_error_not_a_result(self):
        # lr 1e39 is a finite Python float but inf in float32: one step (one batch, one epoch)
        # makes the head infinite while the logged loss, computed before it, is finite.
        for mode in ("auto", "off"):  # trained on cached features / end to end
            out = self.tmp / f"inf-{mode}"
            config = self.config(optim=OptimConfig(learning_rate=1e39), epochs=1, out=str(out),
                                 feature_cache=mode, unfrozen_blocks=1)
            with self.assertRaisesRegex(UserError, "^Fine-tuning diverged: the (trained )?"
                                                   "weights (became|are) NaN or infinite"):
                finetune.fine_tune(dataclasses.replace(config, data=dataclasses.replace(
                    config.data, batch_size=64)), verbose=False)
            self.assertFalse((out / "model.keras").exists())
            self.assertFalse((out / "metrics.json").exists())

    def test_the_nan_guard_can_check_the_weights_too(self):
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        model.layers[0].kernel.assign([[np.inf], [0.0]])
        for check_weights, stopped in ((False, False), (True, True)):
            guard = StopOnNaN(check_weights=check_weights)
            guard.set_model(model)
            model.stop_training = False
            guard.on_epoch_end(0, {"loss": 0.5})
            self.assertEqual(model.stop_training, stopped)
            self.assertEqual((guard.bad_epoch, guard.reason),
                             (1, "weights") if stopped else (None, None))

    def test_run_record_and_result_row(self):
        row = finetune.fine_tune(self.config(eval_every=1))
        run = Path(row["run_dir"])
        for name in ("model.keras", "config.json", "history.csv", "metrics.json"):
            self.assertTrue((run / name).exists(), name)
        for key in ("test_accuracy", "target", "source", "train_images", "unfrozen_blocks",
                    "epochs", "seed", "run_dir", "test_accuracy_epoch_3"):
            self.assertIn(key, row)
        self.assertBetween(row["test_accuracy"], 0.0, 1.0)
        model = tftransfer.load_model(run)
        self.assertEqual(model.output.shape[-1], 3)
        self.assertEqual(saving.read_config(run)["class_names"], ["a", "b", "c"])
        self.assertLen(open(run / "history.csv").read().strip().splitlines(), 4)

    def test_learns_an_easy_target_well_above_chance(self):
        row = finetune.fine_tune(self.config(epochs=15, unfrozen_blocks=3))
        self.assertGreater(row["test_accuracy"], 0.6)  # chance is 1/3

    def test_same_seed_same_result(self):
        a = finetune.fine_tune(self.config(unfrozen_blocks=1, out=str(self.tmp / "a")))
        b = finetune.fine_tune(self.config(unfrozen_blocks=1, out=str(self.tmp / "b")))
        self.assertEqual(a["test_accuracy"], b["test_accuracy"])
        self.assertAllClose(tftransfer.load_model(self.tmp / "a").get_layer("fc").kernel,
                            tftransfer.load_model(self.tmp / "b").get_layer("fc").kernel)

    def test_cached_and_uncached_paths_agree(self):
        x = np.random.default_rng(0).random((6, 32, 32, 3)).astype("float32")
        outputs = {}
        for mode in ("on", "off"):
            row = finetune.fine_tune(self.config(unfrozen_blocks=2, feature_cache=mode,
                                                 out=str(self.tmp / mode)))
            self.assertEqual(row["feature_cache"], mode == "on")
            outputs[mode] = tftransfer.load_model(self.tmp / mode)(x).numpy()
        self.assertAllClose(outputs["on"], outputs["off"], atol=1e-4, rtol=1e-4)

    def test_feature_cache_computes_each_image_once_across_runs(self):
        cache = finetune.RunCache()
        row = finetune.fine_tune(self.config(), cache=cache, save_model=False)
        self.assertTrue(row["feature_cache"])
        first = cache.computed
        self.assertEqual(first, row["train_images"] + row["test_images"])
        finetune.fine_tune(self.config(seed=1), cache=cache, save_model=False)
        self.assertEqual(cache.computed, first)  # same images, nothing recomputed
        # A curve on part of the test images takes their features from the test set's.
        finetune.fine_tune(self.config(seed=1, eval_every=1, curve_test_images=6), cache=cache,
                           save_model=False)
        self.assertEqual(cache.computed, first)

    def test_a_reused_network_ends_where_a_new_one_would(self):
        cache = finetune.RunCache()
        source_weights = [w.copy() for w in cache.source(str(self.source)).model.get_weights()]
        for seed in (0, 1):
            reused = finetune.fine_tune(self.config(seed=seed, unfrozen_blocks=1), cache=cache,
                                        save_model=False)
        self.assertEqual(cache.networks_built, 1)
        new = finetune.fine_tune(self.config(seed=1, unfrozen_blocks=1), save_model=False)
        self.assertAllClose(reused["test_loss"], new["test_loss"], atol=1e-5, rtol=1e-5)
        self.assertEqual(reused["test_accuracy"], new["test_accuracy"])
        # Training worked on a copy: the loaded source is untouched for the next network.
        for before, after in zip(source_weights, cache.source(str(self.source)).model.get_weights()):
            self.assertAllEqual(before, after)

    def test_curve_on_part_of_the_test_set_final_accuracy_on_all(self):
        full = finetune.fine_tune(self.config(eval_every=1, out=str(self.tmp / "full")))
        part = finetune.fine_tune(self.config(eval_every=1, curve_test_images=6,
                                              out=str(self.tmp / "part")))
        self.assertEqual(part["curve_test_images"], 6)
        self.assertEqual(full["curve_test_images"], full["test_images"])
        self.assertAllClose(part["test_loss"], full["test_loss"], atol=1e-5, rtol=1e-5)
        self.assertEqual(part["test_accuracy"], full["test_accuracy"])
        correct = part["test_accuracy_epoch_3"] * 6  # the curve is a share of 6 images
        self.assertAlmostEqual(correct, round(correct), places=4)

    def test_other_image_size_rebuilds_the_source(self):
        row = finetune.fine_tune(self.config(data=DataConfig(
            dataset=str(self.folder), batch_size=8, augment=False, image_size=48)))
        self.assertEqual(tftransfer.load_model(row["run_dir"]).inputs[0].shape[1], 48)


class PrecisionTest(TransferTestCase):

    def test_precision_applies_to_a_loaded_float32_source(self):
        try:
            row = finetune.fine_tune(self.config(precision="mixed_bfloat16", epochs=1))
        finally:
            keras.mixed_precision.set_global_policy("float32")
        model = tftransfer.load_model(row["run_dir"])
        self.assertEqual(model.get_layer("layer3.2.conv2").compute_dtype, "bfloat16")
        self.assertEqual(model.get_layer("fc").compute_dtype, "float32")


class FlowersOfflineTest(TransferTestCase):

    def test_oxford_flowers102_end_to_end_with_mock_data(self):
        with tfds.testing.mock_data(num_examples=110):
            cfg = self.config(target="oxford_flowers102", epochs=1, data=DataConfig(
                dataset="oxford_flowers102", batch_size=32, augment=False, train_images=102))
            row = finetune.fine_tune(cfg)
        self.assertEqual(row["train_images"], 102)
        self.assertEqual(tftransfer.load_model(row["run_dir"]).output.shape[-1], 102)
