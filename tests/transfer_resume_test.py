"""Tests of ``transfer --resume``: a killed run ends where an uninterrupted one would, and a
finished run can be extended for more epochs, recorded as such."""

import csv
import json
import re
from pathlib import Path
from unittest import mock

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

import tftransfer
from tests.helpers import run_cli
from tests.helpers import make_image_folder, make_source
from tftransfer.training import checkpoints
from tftransfer import finetune
from tftransfer.config import DataConfig, OptimConfig, TransferConfig
from tftransfer.errors import UserError

# The training loops a resumed run must match: the compiled loop on cached features (head
# only), fit() on cached features, and fit() end to end (the last stage trained on images).
LOOPS = (("compiled", dict(unfrozen_blocks=0)),
         ("fit_cached", dict(unfrozen_blocks=0, training_loop="fit")),
         ("fit_images", dict(unfrozen_blocks=1, feature_cache="off")))


def history(out):
    """history.csv's rows without the timing column."""
    with open(Path(out) / "history.csv") as handle:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(handle)]


class ResumeTest(tf.test.TestCase, parameterized.TestCase):

    def setUp(self):
        super().setUp()
        self.tmp = Path(self.get_temp_dir())
        self.source = make_source(self.tmp / "source")
        self.folder = make_image_folder(self.tmp / "images", classes=("a", "b", "c"),
                                        per_class=12, split=True)

    def config(self, out, **kwargs):
        fields = dict(target=str(self.folder), source=str(self.source), epochs=6, eval_every=2,
                      data=DataConfig(dataset=str(self.folder), batch_size=8),
                      out=str(self.tmp / out), optim=OptimConfig(learning_rate=0.05),
                      head_init="glorot")
        fields.update(kwargs)
        return TransferConfig(**fields)

    def interrupted(self, cfg, after_epoch):
        """Runs ``cfg`` until the checkpoint after ``after_epoch`` is written, then stops it
        as a kill would (nothing after that checkpoint is recorded)."""
        real_save = checkpoints.save

        def save_then_die(out, state):
            real_save(out, state)
            if state.epoch == after_epoch:
                raise KeyboardInterrupt
        with mock.patch.object(checkpoints, "save", save_then_die):
            with self.assertRaises(KeyboardInterrupt):
                finetune.fine_tune(cfg, checkpoint=True, verbose=False)
        self.assertFalse((Path(cfg.out) / "metrics.json").exists())

    def assertSameRun(self, a, b):
        self.assertAllClose(a["test_accuracy"], b["test_accuracy"], atol=1e-6)
        self.assertAllClose(a["test_loss"], b["test_loss"], atol=1e-5, rtol=1e-5)
        for first, second in zip(tftransfer.load_model(a["run_dir"]).weights,
                                 tftransfer.load_model(b["run_dir"]).weights):
            self.assertAllClose(first, second, atol=1e-5, rtol=1e-5, msg=first.path)
        rows_a, rows_b = history(a["run_dir"]), history(b["run_dir"])
        self.assertEqual([r["epoch"] for r in rows_b], ["1", "2", "3", "4", "5", "6"])
        for row_a, row_b in zip(rows_a, rows_b):
            self.assertAllClose([float(row_a[k] or 0) for k in row_a],
                                [float(row_b[k] or 0) for k in row_a], atol=1e-5, rtol=1e-5)

    @parameterized.named_parameters(*LOOPS)
    def test_a_killed_run_resumes_to_the_uninterrupted_result(self, fields):
        whole = finetune.fine_tune(self.config("whole", **fields), verbose=False)
        cfg = self.config("resumed", **fields)
        self.interrupted(cfg, after_epoch=4)
        resumed = finetune.fine_tune(cfg, resume=True, verbose=False)
        self.assertSameRun(whole, resumed)
        self.assertNotIn("extended_from", resumed)

    def test_a_compiled_run_killed_early_resumes_over_two_stretches(self):
        """Killed after epoch 2 of 6 (curve every 2): the resumed run makes two stretches
        from its checkpoint, the uninterrupted one a single call, and both end alike, down
        to the per-class accuracy."""
        whole = finetune.fine_tune(self.config("whole", unfrozen_blocks=0), verbose=False)
        cfg = self.config("resumed", unfrozen_blocks=0)
        self.interrupted(cfg, after_epoch=2)
        resumed = finetune.fine_tune(cfg, resume=True, verbose=False)
        self.assertSameRun(whole, resumed)
        per_class = [json.loads((Path(run["run_dir"]) / "metrics.json").read_text())
                     ["per_class_accuracy"] for run in (whole, resumed)]
        self.assertAllClose(list(per_class[0].values()), list(per_class[1].values()))

    def test_a_finished_run_is_extended_and_records_it(self):
        cfg = self.config("run", epochs=3, eval_every=1)
        first = finetune.fine_tune(cfg, checkpoint=True, verbose=False)
        longer = finetune.fine_tune(self.config("run", epochs=6, eval_every=1), resume=True,
                                    verbose=False)
        extension = longer["extended_from"]
        self.assertEqual(len(extension), 1)
        self.assertEqual((extension[0]["epochs"], extension[0]["new_epochs"]), (3, 6))
        self.assertEqual(extension[0]["test_accuracy"], first["test_accuracy"])
        self.assertIn("schedule of the new total", extension[0]["learning_rate"])
        config = json.loads((Path(cfg.out) / "config.json").read_text())
        self.assertEqual(config["extended_from"], extension)
        self.assertEqual(config["resolved_config"]["epochs"], 6)
        rows = history(cfg.out)
        self.assertEqual(len(rows), 6)
        # Epochs 1-3 kept the 3-epoch schedule's rates; 4-6 get the 6-epoch schedule's
        # (x0.1 every 2 epochs: 0.05, 0.005 at epochs 3-4, 0.0005 at 5-6).
        rates = [float(r["learning_rate"]) for r in rows]
        self.assertAllClose(rates, [0.05, 0.005, 0.0005, 0.005, 0.0005, 0.0005], rtol=1e-5)
        self.assertIn("test_accuracy_epoch_6", longer)
        self.assertIn("test_accuracy_epoch_1", longer)

    def test_a_finished_run_resumed_with_its_own_epochs_is_reported_as_it_is(self):
        cfg = self.config("run", epochs=2)
        first = finetune.fine_tune(cfg, checkpoint=True, verbose=False)
        with mock.patch("tftransfer.finetune.run.train") as train:
            again = finetune.fine_tune(cfg, resume=True, verbose=False)
        train.assert_not_called()
        self.assertEqual(again["test_accuracy"], first["test_accuracy"])

    def test_resume_refuses_another_configuration_fewer_epochs_or_no_checkpoint(self):
        cfg = self.config("run", epochs=4)
        self.interrupted(cfg, after_epoch=2)
        with self.assertRaisesRegex(UserError, r"differs from this one in seed \(0 there, 1 here"):
            finetune.fine_tune(self.config("run", epochs=4, seed=1), resume=True)
        (Path(cfg.out) / checkpoints.CHECKPOINT_FILE).write_bytes(b"not a checkpoint")
        with self.assertRaisesRegex(UserError, "is corrupt"):
            finetune.fine_tune(cfg, resume=True)
        with self.assertRaisesRegex(UserError, "no transfer checkpoint"):
            finetune.fine_tune(self.config("elsewhere"), resume=True)

    def test_every_field_of_the_checkpoint_is_checked_and_named(self):
        """A damaged or edited checkpoint stops the resume with one sentence naming the file
        and the field: a missing curve was a KeyError, ``epoch: -3`` trained extra epochs."""
        cfg = self.config("run", epochs=4)
        self.interrupted(cfg, after_epoch=2)
        file = Path(cfg.out) / checkpoints.CHECKPOINT_FILE
        with np.load(file) as archive:
            arrays = {name: archive[name] for name in archive.files}
        meta = json.loads(str(arrays["meta"]))
        nan_weights = {"w0": np.full_like(arrays["w0"], np.nan)}
        damages = (
            ("no_curve", {k: v for k, v in meta.items() if k != "curve"}, {},
             r"'curve' is missing"),
            ("negative_epoch", {**meta, "epoch": -3}, {},
             r"'epoch' is -3, not a whole number 0 to 4"),
            ("epoch_as_text", {**meta, "epoch": "2"}, {}, r"'epoch' is '2', not a whole"),
            ("epoch_past_the_plan", {**meta, "epoch": 9}, {}, r"'epoch' is 9, not a whole"),
            ("rows_short", {**meta, "rows": meta["rows"][:1]}, {},
             r"'rows' holds epochs 1, not the epochs 1 to 2"),
            ("row_text", {**meta, "rows": [meta["rows"][0], {**meta["rows"][1], "loss": "x"}]},
             {}, r"'rows' holds loss = 'x' at epoch 2, not a number"),
            ("curve_future", {**meta, "curve": {"3": 0.5}}, {}, r"'curve' has a point at "
                                                                r"epoch '3'"),
            ("curve_value", {**meta, "curve": {"2": 7.5}}, {}, r"'curve\.2' is 7\.5, not a "
                                                               r"finite number from 0 to 1"),
            ("extended_from", {**meta, "extended_from": "twice"}, {},
             r"'extended_from' is 'twice', not a list of JSON objects"),
            ("config_epochs", {**meta, "config": {**meta["config"], "epochs": 0}}, {},
             r"'config' is not a valid run configuration \(epochs must be at least 1"),
            ("not_an_object", [1, 2], {}, r"'meta' is \[1, 2\], not a JSON object"),
            ("nan_weights", meta, nan_weights, r"'w0' holds NaN or infinite weights"))
        for name, damaged, replaced, message in damages:
            with self.subTest(name):
                np.savez(file, **{**arrays, **replaced, "meta": np.asarray(json.dumps(damaged))})
                with self.assertRaisesRegex(UserError, rf"^{re.escape(str(file))} is corrupt: "
                                                       rf"(its field )?{message}.*; remove it "
                                                       rf"and run without --resume"):
                    finetune.fine_tune(cfg, resume=True, verbose=False)
        code, _, err = run_cli("transfer", "--resume", cfg.out)  # the command: one line
        self.assertEqual(code, 2)
        self.assertEqual(err.count("\n"), 1, err)
        self.assertIn("'w0' holds NaN", err)

    def test_sweeps_write_no_checkpoint(self):
        cfg = self.config("run", epochs=1)
        finetune.fine_tune(cfg, verbose=False)
        self.assertFalse((Path(cfg.out) / checkpoints.CHECKPOINT_FILE).exists())


class ResumeCommandTest(tf.test.TestCase):

    def setUp(self):
        super().setUp()
        self.tmp = Path(self.get_temp_dir())
        self.source = make_source(self.tmp / "source")
        self.folder = make_image_folder(self.tmp / "images", classes=("a", "b"), per_class=8,
                                        split=True)

    def test_resume_run_dir_alone_uses_the_recorded_options_and_extends(self):
        out = self.tmp / "run"
        code, stdout, err = run_cli("transfer", "--target", self.folder, "--source",
                                    self.source, "--epochs", "2", "--batch-size", "4",
                                    "--seed", "3", "--out", out)
        self.assertEqual(code, 0, err)
        code, stdout, err = run_cli("transfer", "--resume", out, "--epochs", "3")
        self.assertEqual(code, 0, err)
        line = json.loads(stdout.strip().splitlines()[-1])
        self.assertEqual((line["epochs"], line["seed"]), (3, 3))
        self.assertEqual(line["extended_from"][0]["epochs"], 2)
        self.assertIn("resumed after epoch 2", err)
        code, _, err = run_cli("transfer", "--resume", out, "--seed", "1")
        self.assertEqual(code, 2)
        self.assertIn("drop --seed", err)
        code, _, err = run_cli("transfer", "--resume")
        self.assertEqual((code, err), (2, "error: transfer needs --target (or --resume RUN_DIR "
                                          "to continue a run).\n"))

    def test_the_last_line_is_compact_and_the_curve_stays_in_metrics_json(self):
        out = self.tmp / "run"
        code, stdout, err = run_cli("transfer", "--target", self.folder, "--source",
                                    self.source, "--epochs", "3", "--batch-size", "4",
                                    "--out", out)
        self.assertEqual(code, 0, err)
        line = json.loads(stdout.strip().splitlines()[-1])
        self.assertFalse([key for key in line if key.startswith("test_accuracy_epoch_")])
        self.assertEqual(set(line) - {"extended_from", "warning"},
                         {"test_accuracy", "test_loss", "target", "source", "train_images",
                          "test_images", "unfrozen_blocks", "epochs", "seed", "train_seconds",
                          "run_dir", "metrics", "worst_class", "worst_class_accuracy",
                          "mean_class_accuracy", "sgd_steps", "train_accuracy"})
        metrics = json.loads((out / "metrics.json").read_text())
        self.assertEqual(metrics["test_accuracy"], line["test_accuracy"])
        self.assertEqual([metrics[f"test_accuracy_epoch_{e}"] is not None for e in (1, 2, 3)],
                         [True] * 3)
        self.assertEqual(line["metrics"], str(out / "metrics.json"))
        self.assertEqual(np.round(line["test_accuracy"], 6),
                         np.round(metrics["test_accuracy_epoch_3"], 6))
