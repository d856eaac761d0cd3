"""The data flags of ``transfer`` and their config fields (issue 23): --augment presets,
--resize / --crop-fraction, --image-key / --label-key, --train-split / --test-split; old
configs load with the defaults that reproduce them."""

import inspect
import json

import tensorflow as tf

from tests.helpers import REPO
from tftransfer import cli, data
from tftransfer.commands.transfer import config_from_args
from tftransfer.config import (AUGMENT_POLICIES, RESIZE_MODES, DataConfig, PretrainConfig,
                               TransferConfig, apply_overrides, from_dict, to_dict)
from tftransfer.errors import UserError


def _config(*flags):
    return config_from_args(cli.build_parser().parse_args(["transfer", "--target", "mnist",
                                                           *flags]))


class FlagsTest(tf.test.TestCase):

    def test_augment_presets_set_the_recorded_policy(self):
        expected = {(): (False, "pad_crop_flip"), ("--augment",): (True, "pad_crop_flip"),
                    ("--augment", "none"): (False, "pad_crop_flip"),
                    ("--augment", "cifar"): (True, "pad_crop_flip"),
                    ("--augment", "paper"): (True, "utrera2021"),
                    ("--augment", "imagenet"): (True, "imagenet")}
        for flags, (augment, policy) in expected.items():
            cfg = _config(*flags)
            self.assertEqual((cfg.data.augment, cfg.data.augment_policy), (augment, policy), flags)
        self.assertEqual(set(AUGMENT_POLICIES), set(data.AUGMENT_POLICIES.values()) |
                         {"pad_crop_flip"})

    def test_keys_splits_and_preprocessing_reach_the_config_and_the_loader(self):
        cfg = _config("--image-key", "photo", "--label-key", "breed", "--train-split",
                      "train[:80%]", "--test-split", "validation", "--resize", "squash",
                      "--crop-fraction", "0.875")
        options = cfg.data.load_options()
        self.assertEqual(options, {"test_fraction": 0.2, "image_key": "photo",
                                   "label_key": "breed", "train_split": "train[:80%]",
                                   "test_split": "validation", "resize": "squash",
                                   "crop_fraction": 0.875, "downsample": None})
        self.assertLessEqual(set(options), set(inspect.signature(data.load).parameters))
        self.assertEqual(RESIZE_MODES, data.RESIZE_MODES)
        with self.assertRaisesRegex(UserError, "resize must be one of center_crop, squash"):
            _config("--set", "data.resize=stretch")
        with self.assertRaisesRegex(UserError, r"crop_fraction must be in \(0, 1\]"):
            DataConfig(crop_fraction=0.0)
        cfg = apply_overrides(TransferConfig(target="dtd"), ["data.test_split=validation"])
        self.assertEqual(cfg.data.test_split, "validation")

    def test_old_configs_load_with_todays_defaults(self):
        # Committed source models' configs predate these fields.
        for path in sorted((REPO / "saved_models").glob("*/config.json")):
            resolved = json.loads(path.read_text())["resolved_config"]
            cfg = from_dict(PretrainConfig, resolved)
            self.assertEqual((cfg.data.resize, cfg.data.crop_fraction), ("center_crop", 1.0))
            self.assertIsNone(cfg.data.test_split)
        old = to_dict(TransferConfig(target="mnist"))
        for key in ("resize", "crop_fraction", "image_key", "label_key", "train_split",
                    "test_split"):
            del old["data"][key]
        old["data"]["augment_policy"] = "utrera2021"
        self.assertEqual(from_dict(TransferConfig, old).data.augment_policy, "utrera2021")


if __name__ == "__main__":
    tf.test.main()


class RunCacheLoadOptionsTest(tf.test.TestCase):
    """A transfer run's target is loaded with its split flags (the run cache passes them)."""

    def test_test_split_flag_reaches_the_loaded_target(self):
        import os

        from tftransfer.finetune.run_cache import RunCache

        data_dir = os.environ.get("TFDS_DATA_DIR") or str(REPO.parent / "shared" / "tfds")
        if not os.path.isdir(os.path.join(data_dir, "mnist")):
            self.skipTest(f"no prepared mnist in {data_dir}")
        cfg = _config("--test-split", "test[:10%]", "--data-dir", data_dir, "--no-download")
        full = RunCache().target(_config("--data-dir", data_dir, "--no-download"))
        part = RunCache().target(cfg)
        self.assertEqual(len(part.test.labels) * 10, len(full.test.labels))
