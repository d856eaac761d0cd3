"""Tests of config validation: non-finite numbers and seeds are refused with one sentence."""

import math

import tensorflow as tf
from absl.testing import parameterized

from tftransfer.training import runtime
from tftransfer.config import (AttackConfig, CellOverride, DataConfig, InfluenceConfig,
                               ModelConfig, OptimConfig, PretrainConfig, SaliencyConfig,
                               SweepConfig, TransferConfig, apply_overrides,
                               recorded_load_options, to_dict)
from tftransfer.errors import UserError

# Every float field of every config dataclass, with a kind of config that uses it.
FLOAT_FIELDS = [
    (DataConfig, {}, "test_fraction"),
    (AttackConfig, {"kind": "l2"}, "eps"),
    (AttackConfig, {"kind": "none"}, "eps"),
    (AttackConfig, {"kind": "l2"}, "step_size"),
    (OptimConfig, {}, "learning_rate"),
    (OptimConfig, {}, "momentum"),
    (OptimConfig, {}, "weight_decay"),
    (OptimConfig, {}, "label_smoothing"),
    (ModelConfig, {}, "width"),
    (PretrainConfig, {"out": "x"}, "adversarial_fraction"),
    (SaliencyConfig, {"models": ("m",), "dataset": "mnist", "out": "x.png"}, "noise"),
    (InfluenceConfig, {"run_dirs": ("r",), "out": "x"}, "damping"),
]
SEEDS = [(-1,), (2 ** 32,), (99999999999,), (1.5,), (True,)]


def _sweep(**fields):
    defaults = dict(name="s", sources=("a",), targets=("mnist",), train_images=(10,),
                    unfrozen_blocks=(0,), seeds=(0,), epochs=1)
    defaults.update(fields)
    return SweepConfig(**defaults)


class NonFiniteTest(tf.test.TestCase, parameterized.TestCase):

    @parameterized.parameters(*[(cls, kwargs, name, value) for cls, kwargs, name in FLOAT_FIELDS
                                for value in (math.inf, -math.inf, math.nan)])
    def test_every_float_field_refuses_non_finite_values(self, cls, kwargs, name, value):
        with self.assertRaisesRegex(UserError, f"^{name} must be a finite number, got "
                                               f"{value}.$"):
            cls(**kwargs, **{name: value})

    def test_a_set_override_to_inf_is_refused_and_finite_values_pass(self):
        self.assertEqual(OptimConfig(learning_rate=1e-3).learning_rate, 1e-3)
        self.assertIsNone(AttackConfig(kind="l2", step_size=None).step_size)
        with self.assertRaisesRegex(UserError, "learning_rate must be a finite number, got inf"):
            apply_overrides(TransferConfig(target="mnist"), ["optim.learning_rate=inf"])
        with self.assertRaisesRegex(UserError, "eps must be a finite number, got nan"):
            apply_overrides(PretrainConfig(out="x"), ["attack.eps=nan"])


class SeedTest(tf.test.TestCase, parameterized.TestCase):

    @parameterized.parameters(*SEEDS)
    def test_run_configs_refuse_seeds_numpy_cannot_take(self, seed):
        message = f"seed must be a whole number from 0 to 4294967295, got {seed!r}"
        with self.assertRaisesRegex(UserError, message):
            TransferConfig(target="mnist", seed=seed)
        with self.assertRaisesRegex(UserError, message):
            PretrainConfig(out="x", seed=seed)
        with self.assertRaisesRegex(UserError, message):
            runtime.set_seed(seed)

    @parameterized.parameters(*SEEDS)
    def test_sweeps_refuse_such_seeds_too(self, seed):
        with self.assertRaisesRegex(UserError, "sweep 's': each of seeds must be a whole"):
            _sweep(seeds=(0, seed))
        with self.assertRaisesRegex(UserError, "cell override: each of seeds must be a whole"):
            CellOverride(train_images=(10,), seeds=(seed,))

    def test_the_whole_range_is_accepted_and_no_more(self):
        for seed in (0, 2 ** 32 - 1):
            self.assertEqual(TransferConfig(target="mnist", seed=seed).seed, seed)
            self.assertEqual(_sweep(seeds=(seed,)).seeds, (seed,))
            runtime.set_seed(seed)
        runtime.set_seed(0)
        with self.assertRaisesRegex(UserError, "got 4294967296"):
            runtime.set_seed(2 ** 32)


class RecordedLoadOptionsTest(tf.test.TestCase):
    """The data.load options of a run's config.json (evaluate, saliency, influence, export)."""

    def run_config(self):
        cfg = TransferConfig(target="dtd", data=DataConfig(
            augment=False, image_key="img", label_key="lab", test_split="validation",
            resize="squash", crop_fraction=0.875, test_fraction=0.3))
        return {"kind": "transfer", "resolved_config": to_dict(cfg)}

    def test_the_runs_own_dataset_gets_every_option(self):
        options = recorded_load_options(self.run_config(), "dtd")
        self.assertEqual(options, DataConfig(
            image_key="img", label_key="lab", test_split="validation", resize="squash",
            crop_fraction=0.875, test_fraction=0.3).load_options())
        self.assertEqual(recorded_load_options(self.run_config()), options)

    def test_another_dataset_gets_the_preprocessing_and_test_fraction_only(self):
        self.assertEqual(recorded_load_options(self.run_config(), "mnist"),
                         {"resize": "squash", "crop_fraction": 0.875, "test_fraction": 0.3,
                          "downsample": None})

    def test_a_config_without_a_data_section_gives_no_options(self):
        self.assertEqual(recorded_load_options({"kind": "converted"}, "mnist"), {})
        self.assertEqual(recorded_load_options(None), {})
