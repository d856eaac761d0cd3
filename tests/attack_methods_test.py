"""Tests of the attack-method registry and of AttackConfig's norm/method split, including
the old single-field configs of the committed model directories."""

import argparse
import json
from pathlib import Path

import tensorflow as tf

from tftransfer.config import attack_methods
from tftransfer.adversarial import attacks
from tftransfer.commands import common
from tftransfer.config import AttackConfig, PretrainConfig, apply_overrides, from_dict, to_dict
from tftransfer.errors import UserError

SAVED_MODELS = Path(__file__).resolve().parent.parent / "saved_models"


def _committed_configs():
    return [json.loads(path.read_text()) for path in sorted(SAVED_MODELS.glob("*/config.json"))]


class RegistryTest(tf.test.TestCase):

    def test_lists_the_methods_and_every_attack_has_an_implementation(self):
        self.assertEqual(tuple(attack_methods.METHODS), ("pgd", "fgsm_rs", "free"))
        evaluable = {m.name for m in attack_methods.METHODS.values() if m.for_evaluation}
        self.assertEqual(set(attacks.implemented_methods()), evaluable)

    def test_an_unknown_method_is_one_sentence_naming_the_known_ones(self):
        with self.assertRaises(UserError) as raised:
            AttackConfig(norm="l2", method="bim")
        message = str(raised.exception)
        self.assertEqual(message.count(". "), 0, message)
        self.assertTrue(message.endswith("."), message)
        for name in ("'bim'", "pgd", "fgsm_rs", "free"):
            self.assertIn(name, message)

    def test_free_is_a_training_method_not_an_attack(self):
        with self.assertRaisesRegex(UserError, "training method"):
            attacks.implementation(AttackConfig(norm="linf", eps=0.1, method="free"))

    def test_default_step_sizes_are_the_methods(self):
        self.assertAlmostEqual(AttackConfig(norm="l2", eps=0.5, steps=5).resolved_step_size, 0.25)
        self.assertAlmostEqual(
            AttackConfig(norm="l2", eps=0.4, method="fgsm_rs").resolved_step_size, 0.5)
        self.assertAlmostEqual(
            AttackConfig(norm="linf", eps=0.1, method="free").resolved_step_size, 0.1)


class OldConfigsTest(tf.test.TestCase):

    def test_kind_still_means_pgd_in_that_norm(self):
        old = AttackConfig(kind="l2", eps=0.5, steps=3)
        self.assertEqual(old, AttackConfig(norm="l2", eps=0.5, steps=3, method="pgd"))
        self.assertNotIn("kind", to_dict(old))
        with self.assertRaises(UserError):
            AttackConfig(norm="linf", kind="l2")

    def test_committed_model_directories_load_and_describe_the_same(self):
        configs = _committed_configs()
        self.assertGreaterEqual(len(configs), 5)
        old_format = 0
        for config in configs:
            resolved = from_dict(PretrainConfig, config["resolved_config"])
            recorded = config["resolved_config"]["attack"]
            if "kind" in recorded:  # written before norm and method were separate fields
                old_format += 1
                self.assertEqual(resolved.attack.norm, recorded["kind"])
                self.assertEqual(resolved.attack.method, "pgd")
            else:
                self.assertEqual((resolved.attack.norm, resolved.attack.method),
                                 (recorded["norm"], recorded["method"]))
            # The result-row columns are as recorded, so committed rows are unchanged.
            self.assertEqual(resolved.attack.describe(), config["attack"])
            self.assertEqual(AttackConfig.from_record(config["attack"]).describe(),
                             config["attack"])
        self.assertGreaterEqual(old_format, 5)  # the replication's sources still load

    def test_new_methods_describe_themselves(self):
        row = AttackConfig(norm="linf", eps=0.1, method="fgsm_rs").describe()
        self.assertEqual(row, {"attack": "linf", "eps": 0.1, "attack_method": "fgsm_rs",
                               "attack_step_size": 0.125})
        self.assertEqual(AttackConfig.from_record(row).method, "fgsm_rs")

    def test_set_overrides_reach_norm_and_method(self):
        cfg = apply_overrides(PretrainConfig(out="x", epochs=8),
                              ["attack.norm=linf", "attack.method=free"])
        self.assertEqual((cfg.attack.norm, cfg.attack.method), ("linf", "free"))


class CommandLineTest(tf.test.TestCase):

    def parse(self, *argv):
        parser = argparse.ArgumentParser()
        common.add_attack_arguments(parser, default_steps=7)
        return common.attack_config(parser.parse_args(argv))

    def test_attack_flag_is_the_norm_and_pgd_the_default_method(self):
        self.assertEqual(self.parse("--attack", "l2", "--eps", "0.5"),
                         AttackConfig(norm="l2", eps=0.5, steps=7))

    def test_attack_method_and_fractional_eps(self):
        attack = self.parse("--attack", "linf", "--eps", "8/255", "--attack-method", "fgsm_rs")
        self.assertEqual(attack.method, "fgsm_rs")
        self.assertAlmostEqual(attack.eps, 8 / 255)


class FreeTrainingConfigTest(tf.test.TestCase):

    def test_epochs_are_epoch_equivalents_split_into_passes(self):
        free = AttackConfig(norm="l2", eps=0.5, method="free")
        self.assertEqual(PretrainConfig(out="x", epochs=12, attack=free, free_replays=4).passes, 3)
        self.assertEqual(PretrainConfig(out="x", epochs=12).passes, 12)
        with self.assertRaisesRegex(UserError, "multiple of free_replays"):
            PretrainConfig(out="x", epochs=10, attack=free, free_replays=4)

    def test_early_stop_needs_an_attack(self):
        with self.assertRaisesRegex(UserError, "needs an attack"):
            PretrainConfig(out="x", early_stop=True)
