"""Tests of run directories: a transfer run never leaves its files beside another run's."""

import errno
import dataclasses
import json
import os
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import tensorflow as tf

from tests.helpers import run_cli
from tests.helpers import make_image_folder, make_source
from tftransfer.finetune import rundir
from tftransfer import finetune, runs
from tftransfer.config import DataConfig, OptimConfig, TransferConfig, to_dict
from tftransfer.errors import UserError


class RunDirTestCase(tf.test.TestCase):

    def setUp(self):
        super().setUp()
        self.tmp = Path(self.get_temp_dir())
        self.out = self.tmp / "run"

    def config(self, **kwargs):
        defaults = dict(target="mnist", source="src", out=str(self.out), epochs=3)
        defaults.update(kwargs)
        return TransferConfig(**defaults)

    def record(self, cfg, metrics=True, config=True):
        """Writes the record files of a run of ``cfg`` into ``self.out``."""
        self.out.mkdir(parents=True, exist_ok=True)
        if config:
            (self.out / "config.json").write_text(json.dumps(
                {"kind": "transfer", "resolved_config": to_dict(cfg)}))
            (self.out / "model.keras").write_bytes(b"model")
        (self.out / "history.csv").write_text("epoch,loss\n1,0.5\n")
        if metrics:
            (self.out / "metrics.json").write_text(json.dumps(
                {"target": cfg.target, "source": cfg.source, "seed": cfg.seed,
                 "epochs": cfg.epochs, "unfrozen_blocks": cfg.unfrozen_blocks,
                 "train_images": 60000, "learning_rate": cfg.optim.learning_rate}))


class CheckRunDirTest(RunDirTestCase):

    def test_a_different_finished_run_is_refused_by_name(self):
        self.record(self.config(seed=0))
        with self.assertRaisesRegex(
                UserError, r"holds a finished transfer run of mnist from src \(N=all, blocks 0, "
                           r"seed 0\) that differs from this one in seed \(0 there, 1 here\)"):
            rundir.check_run_dir(self.out, self.config(seed=1), "refuse")
        rundir.check_run_dir(self.out, self.config(seed=1), "replace")  # sweeps, searches

    def test_the_same_run_differing_only_in_where_or_how_is_not_refused(self):
        self.record(self.config(feature_cache="on"))
        rundir.check_run_dir(self.out, self.config(out="elsewhere", feature_cache="off",
                                                   data=DataConfig(data_dir="/data",
                                                                   augment=False)), "refuse")

    def test_an_unfinished_run_is_replaced_and_a_row_only_run_compared(self):
        self.record(self.config(seed=0), metrics=False)
        rundir.check_run_dir(self.out, self.config(seed=1), "refuse")
        self.record(self.config(seed=0), config=False)  # a sweep run without its model
        (self.out / "config.json").unlink()
        (self.out / "model.keras").unlink()
        rundir.check_run_dir(self.out, self.config(seed=0), "refuse")
        with self.assertRaisesRegex(UserError, r"learning_rate \(0.1 there, 0.01 here\)"):
            rundir.check_run_dir(self.out, self.config(optim=OptimConfig(learning_rate=0.01)),
                                 "refuse")

    def test_what_is_not_a_transfer_run_is_never_replaced(self):
        self.out.mkdir()
        (self.out / "config.json").write_text(json.dumps(
            {"kind": "pretrain", "arch": "resnet20", "dataset": "cifar10"}))
        for existing in ("replace", "refuse"):
            with self.assertRaisesRegex(UserError, "holds a pretrain model \\(arch resnet20, "
                                                   "dataset cifar10\\), not a transfer run"):
                rundir.check_run_dir(self.out, self.config(), existing)
        (self.out / "config.json").unlink()
        (self.out / "run_config.json").write_text("{}")  # a pretrain run still training
        with self.assertRaisesRegex(UserError, "holds a pretrain run, not a transfer run"):
            rundir.check_run_dir(self.out, self.config(), "replace")
        (self.out / "run_config.json").unlink()
        (self.out / "config.json").write_text("{trunc")
        with self.assertRaisesRegex(UserError, "holds a config.json that cannot be read"):
            rundir.check_run_dir(self.out, self.config(), "replace")
        (self.out / "config.json").unlink()
        (self.out / "model.keras").write_bytes(b"someone's model")
        with self.assertRaisesRegex(UserError, "holds a model.keras without a config.json"):
            rundir.check_run_dir(self.out, self.config(), "refuse")
        self.out.rename(self.tmp / "moved")
        self.out.write_text("a file")
        with self.assertRaisesRegex(UserError, "is a file, not a run directory"):
            rundir.check_run_dir(self.out, self.config(), "replace")


class ResumePointTest(RunDirTestCase):

    def test_a_checkpoint_from_before_a_new_field_resumes_with_its_default(self):
        cfg = self.config(unfrozen_blocks=1, head_warmup_epochs=1)
        old = to_dict(dataclasses.replace(cfg, head_warmup_epochs=0))
        for section, name in ((old, "head_warmup_epochs"), (old, "unfrozen_lr_scale"),
                              (old["data"], "strict_images")):
            del section[name]  # written before these fields existed
        state = SimpleNamespace(config=old, epoch=1, extended_from=[])
        with mock.patch.object(rundir.checkpoints, "load", return_value=state):
            strict = dataclasses.replace(cfg.data, strict_images=True)
            point = rundir.resume_point(self.out, dataclasses.replace(
                cfg, head_warmup_epochs=0, data=strict))
            self.assertIs(point.checkpoint, state)  # strict_images is not the run's identity
            with self.assertRaisesRegex(UserError, r"head_warmup_epochs \(0 there, 1 here\)"):
                rundir.resume_point(self.out, cfg)


class FineTuneRunDirTestCase(RunDirTestCase):
    """A tiny source and image folder for real runs."""

    def setUp(self):
        super().setUp()
        self.source = make_source(self.tmp / "source")
        self.folder = make_image_folder(self.tmp / "images", classes=("a", "b"), per_class=6,
                                        split=True)

    def config(self, **kwargs):
        data = DataConfig(dataset=str(self.folder), batch_size=8, augment=False)
        return super().config(**{"target": str(self.folder), "source": str(self.source),
                                 "data": data, "epochs": 1, **kwargs})


class FineTuneRunDirTest(FineTuneRunDirTestCase):

    def test_a_killed_rerun_of_the_same_run_leaves_none_of_the_old_files(self):
        finetune.fine_tune(self.config(), verbose=False)
        self.assertTrue((self.out / "metrics.json").exists())
        with mock.patch("tftransfer.finetune.run.train", side_effect=KeyboardInterrupt):
            with self.assertRaises(KeyboardInterrupt):  # as if killed while training
                finetune.fine_tune(self.config(), verbose=False)
        self.assertEqual(sorted(p.name for p in self.out.iterdir()
                                if p.name != rundir.LOCK_FILE), [])

    def test_a_source_model_is_not_overwritten(self):
        before = (self.source / "model.keras").read_bytes()
        with self.assertRaisesRegex(UserError, "holds a model \\(arch resnet20\\), not a "
                                               "transfer run"):
            finetune.fine_tune(self.config(out=str(self.source)), verbose=False)
        self.assertEqual((self.source / "model.keras").read_bytes(), before)

    def test_the_transfer_command_refuses_a_dir_holding_another_seed(self):
        args = ["transfer", "--target", self.folder, "--source", self.source, "--epochs", "1",
                "--batch-size", "8", "--out", self.out]
        self.assertEqual(run_cli(*args, "--seed", "0")[0], 0)
        metrics = (self.out / "metrics.json").read_text()
        code, out, err = run_cli(*args, "--seed", "1")
        self.assertEqual((code, out), (2, ""))
        self.assertRegex(err, r"^error: --out .*run holds a finished transfer run of .*images "
                              r"from .*source \(N=all, blocks 0, seed 0\) that differs from this "
                              r"one in seed \(0 there, 1 here\); choose another --out, or "
                              r"delete .* to replace it\.\n$")
        self.assertEqual((self.out / "metrics.json").read_text(), metrics)  # kept as it was
        code, out, _ = run_cli(*args, "--seed", "0")  # the same run: replaced
        self.assertEqual(code, 0)
        self.assertEqual(json.loads(out.splitlines()[-1])["seed"], 0)

    def test_help_says_how_transfer_resumes_and_restarts_a_killed_run(self):
        code, out, _ = run_cli("transfer", "--help")
        self.assertEqual(code, 0)
        text = " ".join(out.split())
        self.assertIn("--resume continues a killed run where it stopped", text)
        self.assertIn("Without --resume the same command restarts the run from epoch 0", text)


class RunDirLockTest(FineTuneRunDirTestCase):

    def args(self, *extra):
        return ["transfer", "--target", self.folder, "--source", self.source, "--epochs", "1",
                "--batch-size", "8", "--out", self.out, "--quiet", *extra]

    def locked_by_another(self) -> bool:
        try:
            with rundir.locked(self.out):
                return False
        except UserError:
            return True

    def test_a_run_into_a_directory_another_run_holds_is_refused_at_once(self):
        with rundir.locked(self.out):  # another process's run, as far as flock can tell
            code, out, err = run_cli(*self.args())
        self.assertEqual((code, out), (2, ""))
        self.assertRegex(err, rf"^error: --out .*run is in use by another run \(pid "
                              rf"{os.getpid()} on .*\); wait for it to end, or choose another "
                              rf"--out\.\n$")
        self.assertEqual([p.name for p in self.out.iterdir()], [rundir.LOCK_FILE])

    def test_the_lock_is_held_from_the_check_to_the_last_write(self):
        held, write_json, check = [], runs.write_json, rundir.check_run_dir

        def checked(*args, **kwargs):
            held.append(("check", self.locked_by_another()))
            return check(*args, **kwargs)

        def written(path, obj):
            if Path(path).name == "metrics.json":
                held.append(("metrics.json", self.locked_by_another()))
            return write_json(path, obj)
        with mock.patch("tftransfer.finetune.run.check_run_dir", side_effect=checked), \
                mock.patch.object(runs, "write_json", side_effect=written):
            self.assertEqual(run_cli(*self.args())[0], 0)
        self.assertEqual(held, [("check", True), ("metrics.json", True)])
        self.assertFalse(self.locked_by_another())  # released when the run ends

    def test_a_full_disk_at_the_last_save_still_prints_the_result(self):
        full = OSError(errno.ENOSPC, "No space left on device")
        with mock.patch("tftransfer.sources.saving.save_model_dir", side_effect=full):
            code, out, err = run_cli(*self.args())
        self.assertEqual(code, 2)
        result = json.loads(out.splitlines()[-1])
        self.assertNotIn("metrics", result)  # not written
        self.assertRegex(err, rf"error: No space left on device: {self.out} \(while saving "
                              rf"the finished run's model and metrics.json\); its result is "
                              rf"the last line of standard output, and the same command with "
                              rf"--resume saves it\.\n$")
        self.assertFalse((self.out / "metrics.json").exists())
        code, out, _ = run_cli(*self.args("--resume"))
        self.assertEqual(code, 0)
        self.assertEqual(json.loads(out.splitlines()[-1])["test_accuracy"],
                         result["test_accuracy"])
        self.assertTrue((self.out / "model.keras").exists())
