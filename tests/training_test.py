"""Tests of source-model training (``pretrain``): evaluation schedule, divergence, resume."""

import csv
import dataclasses
import json
import math
import shutil
from pathlib import Path
from unittest import mock

import h5py
import keras
import numpy as np
import tensorflow as tf

import tftransfer
from tests.helpers import TempRootTestCase, killed_after_epoch, make_image_folder
from tftransfer.adversarial import early_stop
from tftransfer.training import pretrain as training
from tftransfer.training.callbacks import EPOCH_ATTRIBUTE, AtomicBackup, BackupUnlessNaN, HistoryCSV
from tftransfer.config import AttackConfig, DataConfig, ModelConfig, OptimConfig, PretrainConfig
from tftransfer.errors import UserError


class EvaluationEpochsTest(tf.test.TestCase):

    def test_every_kth_epoch_and_always_the_last(self):
        self.assertEqual(training.evaluation_epochs(30, 7), [7, 14, 21, 28, 30])
        self.assertEqual(training.evaluation_epochs(3, 1), [1, 2, 3])
        self.assertEqual(training.evaluation_epochs(5, 10), [5])

    def test_pretrain_records_the_test_accuracy_of_the_last_epoch(self):
        tmp = Path(self.get_temp_dir())
        folder = make_image_folder(tmp / "images", classes=("a", "b"), per_class=8, split=True)
        config = PretrainConfig(out=str(tmp / "model"), epochs=3, eval_every=2,
                                data=DataConfig(dataset=str(folder), image_size=16, batch_size=8),
                                model=ModelConfig(arch="resnet20", width=0.25))
        training.pretrain(config)
        with open(tmp / "model" / "history.csv") as handle:
            evaluated = [row["epoch"] for row in csv.DictReader(handle) if row["val_accuracy"]]
        self.assertEqual(evaluated, ["2", "3"])


class DivergenceTest(tf.test.TestCase):

    def backup(self, directory):
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        model.compile(optimizer="sgd", loss="mse")
        callback = BackupUnlessNaN(str(directory), double_checkpoint=True)
        callback.set_model(model)
        return callback

    def test_a_nan_epoch_is_not_checkpointed(self):
        directory = Path(self.get_temp_dir()) / "checkpoint"
        callback = self.backup(directory)
        callback.on_epoch_end(0, {"loss": 0.5})
        saved = sorted(path.name for path in directory.iterdir())
        self.assertIn("training_metadata.json", saved)
        before = (directory / "training_metadata.json").read_text()
        callback.on_epoch_end(1, {"loss": math.nan})
        callback.on_epoch_end(1, {"loss": math.inf})
        self.assertEqual((directory / "training_metadata.json").read_text(), before)
        # A finite mean loss but NaN weights (the epoch's last step diverged): not saved either.
        callback.model.weights[0].assign(np.full((2, 1), np.nan, "float32"))
        callback.on_epoch_end(1, {"loss": 0.4})
        self.assertEqual((directory / "training_metadata.json").read_text(), before)

    def test_a_diverged_pretrain_stops_with_a_clear_error_and_is_not_finished(self):
        tmp = Path(self.get_temp_dir())
        folder = make_image_folder(tmp / "images", classes=("a", "b"), per_class=8, split=True)
        config = PretrainConfig(out=str(tmp / "model"), epochs=2,
                                data=DataConfig(dataset=str(folder), image_size=16, batch_size=8),
                                model=ModelConfig(arch="resnet20", width=0.25),
                                optim=OptimConfig(learning_rate=1e30, schedule="cosine"))
        for _ in range(2):  # the re-run diverges again rather than finishing NaN weights
            with self.assertRaisesRegex(UserError, "NaN at epoch 1"):
                training.pretrain(config)
        self.assertFalse((tmp / "model" / "model.keras").exists())


def tiny_model():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(momentum=0.9), loss="mse")
    model.optimizer.build(model.trainable_variables)
    return model


class AtomicBackupTest(tf.test.TestCase):

    def setUp(self):
        super().setUp()
        self.directory = Path(self.get_temp_dir()) / "checkpoint"
        self.weights = self.directory / "latest.weights.h5"
        self.metadata = self.directory / "training_metadata.json"

    def backup(self, model):
        callback = AtomicBackup(str(self.directory), double_checkpoint=True)
        callback.set_model(model)
        return callback

    def test_the_restored_epoch_is_the_one_its_weights_record(self):
        model = tiny_model()
        callback = self.backup(model)
        callback.on_epoch_end(0)
        callback.on_epoch_end(1)
        with h5py.File(self.weights, "r") as handle:
            self.assertEqual(handle.attrs[EPOCH_ATTRIBUTE], 2)
        # Killed between the weights' rename and the metadata's: the metadata lags by one.
        self.metadata.write_text(json.dumps({"epoch": 1, "batch": 0}))
        restored = tiny_model()
        self.assertEqual(self.backup(restored).restore(), 2)
        for a, b in zip(model.weights, restored.weights):
            self.assertAllEqual(a, b)
        # Any other disagreement is refused: the files do not belong together.
        self.metadata.write_text(json.dumps({"epoch": 5, "batch": 0}))
        with self.assertRaisesRegex(UserError, "says epoch 5 but .* holds epoch 2"):
            self.backup(tiny_model()).restore()

    def test_a_write_that_fails_midway_leaves_the_previous_checkpoint_whole(self):
        model = tiny_model()
        callback = self.backup(model)
        callback.on_epoch_end(0)
        before = self.weights.read_bytes()

        def killed_while_writing(filepath, overwrite=True):
            Path(filepath).write_bytes(b"half a file")
            raise KeyboardInterrupt
        with mock.patch.object(model, "save_weights", killed_while_writing):
            with self.assertRaises(KeyboardInterrupt):
                callback.on_epoch_end(1)
        self.assertEqual(self.weights.read_bytes(), before)
        self.assertEqual(sorted(p.name for p in self.directory.iterdir()),
                         ["latest.weights.h5", "latest.weights.h5.bkp",
                          "training_metadata.json", "training_metadata.json.bkp"])
        self.assertEqual(self.backup(tiny_model()).restore(), 1)


class ResumedHistoryTest(tf.test.TestCase):
    """Resume goes through fit()'s public ``initial_epoch``, not Keras' private
    ``model._initial_epoch``: the restored epoch reaches fit() and HistoryCSV that way."""

    def test_the_history_keeps_the_rows_before_the_epoch_fit_resumes_at(self):
        path = Path(self.get_temp_dir()) / "history.csv"
        # A killed run's file: epochs 1-4, of which the checkpoint holds only 1-2.
        path.write_text("epoch,loss\n" + "".join(f"{e},9.0\n" for e in range(1, 5)))
        model = tiny_model()
        x, y = np.zeros((4, 2), "float32"), np.zeros((4, 1), "float32")
        model.fit(x, y, epochs=3, initial_epoch=2, verbose=0, callbacks=[HistoryCSV(path)])
        with open(path) as handle:
            rows = list(csv.DictReader(handle))
        self.assertEqual([row["epoch"] for row in rows], ["1", "2", "3"])
        self.assertEqual([row["loss"] for row in rows[:2]], ["9.0", "9.0"])  # kept as they were
        self.assertNotEqual(rows[2]["loss"], "9.0")  # epoch 3 trained again

    def test_the_backup_leaves_the_start_to_fit(self):
        directory = Path(self.get_temp_dir()) / "checkpoint"
        model = tiny_model()
        backup = AtomicBackup(str(directory), double_checkpoint=True)
        backup.set_model(model)
        backup.on_epoch_end(0)
        backup.on_epoch_end(1)
        resumed = tiny_model()
        backup = AtomicBackup(str(directory), double_checkpoint=True)
        backup.set_model(resumed)
        first = backup.restore()
        history = resumed.fit(np.zeros((4, 2), "float32"), np.zeros((4, 1), "float32"),
                              epochs=4, initial_epoch=first, verbose=0, callbacks=[backup])
        self.assertEqual((first, history.epoch), (2, [2, 3]))
        # Without initial_epoch, fit() starts from 0: the backup no longer sets Keras' state.
        again = resumed.fit(np.zeros((4, 2), "float32"), np.zeros((4, 1), "float32"),
                            epochs=1, verbose=0, callbacks=[backup])
        self.assertEqual(again.epoch, [0])


class ResumeTest(TempRootTestCase):
    """Resuming a 3-epoch pretrain from damaged, moved or re-spelled run directories; each
    test starts from a copy of one run killed after its second epoch."""

    ROOT_PREFIX = "resume_test_"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.folder = make_image_folder(cls.root / "images", classes=("a", "b"), per_class=16,
                                       split=True)
        training.pretrain(cls.config(cls.root / "whole"))
        with killed_after_epoch(2):
            try:
                training.pretrain(cls.config(cls.root / "killed"))
            except KeyboardInterrupt:
                pass

    @classmethod
    def config(cls, out):
        return PretrainConfig(out=str(out), epochs=3, model=ModelConfig(arch="resnet20",
                                                                         width=0.25),
                              data=DataConfig(dataset=str(cls.folder), image_size=16,
                                              batch_size=8))

    def killed_copy(self, name, as_if_run_there=True):
        """A copy of the killed run; by default its recorded --out is the copy's, so that
        only the damage a test adds tells it from a run killed there."""
        out = Path(self.get_temp_dir()) / name
        shutil.copytree(self.root / "killed", out)
        if as_if_run_there:
            recorded = json.loads((out / "run_config.json").read_text())
            (out / "run_config.json").write_text(json.dumps({**recorded, "out": str(out)}))
        return out

    def assert_ends_like_the_uninterrupted_run(self, out, epochs_this_session):
        metrics = training.pretrain(self.config(out))
        out = Path(out)
        self.assertEqual(metrics["epochs_this_session"], epochs_this_session)
        whole = tftransfer.load_model(self.root / "whole")
        resumed = tftransfer.load_model(out)
        for a, b in zip(whole.weights, resumed.weights):
            self.assertAllClose(a, b, atol=1e-5, rtol=1e-5, msg=a.path)
        with open(out / "history.csv") as handle:
            rows = list(csv.DictReader(handle))
        self.assertEqual([row["epoch"] for row in rows], ["1", "2", "3"])
        self.assertTrue(all(float(row["loss"]) > 0 for row in rows))  # no epoch without data

    def test_truncated_latest_weights_resume_from_the_previous_checkpoint(self):
        out = self.killed_copy("truncated")
        weights = out / "checkpoint" / "latest.weights.h5"
        weights.write_bytes(weights.read_bytes()[:weights.stat().st_size // 2])
        self.assertEqual(json.loads((out / "checkpoint" / "training_metadata.json")
                                    .read_text())["epoch"], 2)
        # Epochs 2 and 3 again, from the epoch-1 backup, on their own batches.
        self.assert_ends_like_the_uninterrupted_run(out, epochs_this_session=2)

    def test_unreadable_weights_without_a_backup_are_one_sentence(self):
        out = self.killed_copy("no_backup")
        (out / "checkpoint" / "latest.weights.h5.bkp").unlink()
        weights = out / "checkpoint" / "latest.weights.h5"
        weights.write_bytes(weights.read_bytes()[:100])
        with self.assertRaisesRegex(UserError, r"cannot be resumed: .*latest\.weights\.h5 "
                                               r"\(.*\) cannot be read; .*delete"):
            training.pretrain(self.config(out))

    def test_empty_or_disagreeing_metadata_is_one_sentence(self):
        for name, text, message in (
                ("empty", "", "training_metadata.json is empty or corrupt"),
                ("truncated", '{"epoch": ', "training_metadata.json is empty or corrupt"),
                ("disagreeing", '{"epoch": 0, "batch": 0}', "says epoch 0 but .* epoch 2")):
            with self.subTest(name):
                out = self.killed_copy(name)
                (out / "checkpoint" / "training_metadata.json").write_text(text)
                with self.assertRaisesRegex(UserError, message):
                    training.pretrain(self.config(out))

    def test_every_resume_field_is_checked_and_named(self):
        """A negative or non-integer epoch in the weights file (with no metadata to compare)
        would start fit() before epoch 0; the run's JSON records must be what pretrain
        writes. Each is one sentence naming the file and, where there is one, the field."""
        weights_epochs = (-3, 1.5, "2")
        for value in weights_epochs:
            with self.subTest(epoch=value):
                out = self.killed_copy(f"epoch_{weights_epochs.index(value)}")
                (out / "checkpoint" / "training_metadata.json").unlink()
                with h5py.File(out / "checkpoint" / "latest.weights.h5", "a") as handle:
                    handle.attrs[EPOCH_ATTRIBUTE] = value
                with self.assertRaisesRegex(UserError, rf"cannot be resumed: .*latest\.weights"
                                                       rf"\.h5 records its epoch "
                                                       rf"\({EPOCH_ATTRIBUTE}\) as .*, not a "
                                                       rf"whole number 0 or more"):
                    training.pretrain(self.config(out))
        records = (("extensions.json", '{"epochs": 2}', "it is {'epochs': 2}, not a list"),
                   ("extensions.json", "[1, 2]", r"it is \[1, 2\], not a list of JSON objects"),
                   ("extensions.json", "[" * 100_000, "not JSON"),
                   ("metrics.json", "[]", r"it is \[\], not a JSON object"),
                   ("run_config.json", '{"out": "x", "epochs": -3}',
                    r"\(epochs must be at least 1, got -3\)"))
        for index, (name, text, message) in enumerate(records):
            with self.subTest(name=name, text=text[:20]):
                out = self.killed_copy(f"record_{index}")
                (out / name).write_text(text)
                if name == "metrics.json":  # read when the run asks for more epochs
                    (out / "extensions.json").unlink(missing_ok=True)
                with self.assertRaisesRegex(UserError, rf"{name} is corrupt.*{message}.*; "
                                                       rf"restore it, or choose another --out"):
                    training.pretrain(dataclasses.replace(self.config(out), epochs=4))

    def test_a_trailing_slash_or_a_moved_directory_is_the_same_run(self):
        slash = self.killed_copy("slash")
        self.assert_ends_like_the_uninterrupted_run(str(slash) + "/", epochs_this_session=1)
        moved = Path(self.get_temp_dir()) / "moved" / "elsewhere"
        shutil.move(self.killed_copy("before_moving", as_if_run_there=False), moved)
        self.assert_ends_like_the_uninterrupted_run(moved, epochs_this_session=1)

    def test_a_changed_option_is_named_in_the_refusal(self):
        config = self.config(self.killed_copy("changed"))
        # More epochs extend a run now (issue 22); another seed is a different run.
        config = dataclasses.replace(config, seed=config.seed + 1)
        with self.assertRaisesRegex(UserError, r"different configuration \(seed: 0 -> 1\)"):
            training.pretrain(config)


if __name__ == "__main__":
    tf.test.main()


class FastAndFreePretrainTest(tf.test.TestCase):
    """pretrain with the fast methods: free training's step accounting, the one-cycle
    schedule and the PGD early stop, end to end on a tiny image folder."""

    def config(self, name, attack, **options):
        tmp = Path(self.get_temp_dir())
        folder = make_image_folder(tmp / "images", classes=("a", "b"), per_class=12, split=True)
        return PretrainConfig(out=str(tmp / name), attack=attack,
                              data=DataConfig(dataset=str(folder), image_size=16, batch_size=8),
                              model=ModelConfig(arch="resnet20", width=0.25), **options)

    def history(self, cfg):
        with open(Path(cfg.out) / "history.csv") as handle:
            return list(csv.DictReader(handle))

    def test_free_runs_epochs_over_replays_passes_of_replayed_batches(self):
        free = AttackConfig(norm="linf", eps=0.03, method="free")
        cfg = self.config("free", free, epochs=6, free_replays=3)
        steps = []
        original = HistoryCSV.on_epoch_end

        def record_steps(callback, epoch, logs=None):
            steps.append(int(callback.model.optimizer.iterations))
            original(callback, epoch, logs)
        with mock.patch.object(HistoryCSV, "on_epoch_end", record_steps):
            metrics = training.pretrain(cfg)
        # 24 images / batch 8 = 3 minibatches, each replayed 3 times: 9 steps per pass,
        # 6 / 3 = 2 passes, 18 optimizer steps: as many as 6 natural epochs.
        self.assertEqual(steps, [9, 18])
        self.assertEqual([row["epoch"] for row in self.history(cfg)], ["1", "2"])
        self.assertEqual((metrics["free_replays"], metrics["passes"]), (3, 2))
        self.assertEqual(metrics["attack_method"], "free")

    def test_replay_repeats_each_batch_in_a_row(self):
        batches = tf.data.Dataset.range(3).map(lambda i: (tf.fill([2], i), i))
        replayed = [int(y) for _, y in training.replay_batches(batches, 2)]
        self.assertEqual(replayed, [0, 0, 1, 1, 2, 2])

    def test_fgsm_rs_with_one_cycle_and_early_stop_records_the_check(self):
        fast = AttackConfig(norm="l2", eps=0.25, method="fgsm_rs")
        cfg = self.config("fast", fast, epochs=2, early_stop=True, early_stop_images=6,
                          optim=OptimConfig(schedule="one_cycle", learning_rate=0.05))
        with mock.patch.object(early_stop, "CHECK_STEPS", 1):  # a cheaper trace, same path
            metrics = training.pretrain(cfg)
        rows = self.history(cfg)
        self.assertLen(rows, 2)
        self.assertTrue(all(0.0 <= float(row["check_pgd_accuracy"]) <= 1.0 for row in rows))
        self.assertEqual(metrics["train_images"], 18)  # 24 less the 6 held out
        self.assertIn(metrics["best_epoch"], (1, 2))
        self.assertIsNone(metrics["early_stopped_at_epoch"])
        self.assertEqual(json.loads((Path(cfg.out) / "config.json").read_text())["attack"],
                         fast.describe())
