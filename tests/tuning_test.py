"""Tests of the fine-tuning hyperparameter search (keras-tuner)."""

import contextlib
import dataclasses
import io
import json
import os
import re
import socket
import subprocess
import sys
import types
from unittest import mock

import keras
import keras_tuner as kt
import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import (REPO, TempRootTestCase, run_cli, config_from_command, make_image_folder,
                           make_source)
from tftransfer import data
from tftransfer.models import resnet
from tftransfer.sources import saving
from tftransfer.tuning import search_space
from tftransfer.tuning import best as tune_best
from tftransfer.tuning import tuners
from tftransfer.tuning import search as tuning
from tftransfer.tuning.hypermodel import FineTuneHyperModel, prepare
from tftransfer.errors import UserError


DISTRIBUTED_ENV = ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT")


class TuningTestCase(TempRootTestCase):
    """A tiny source and a 3-class image folder (12 training, 6 test images per class)."""

    ROOT_PREFIX = "tuning_test_"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.source = str(make_source(cls.root / "source"))
        cls.folder = str(make_image_folder(cls.root / "images", classes=("a", "b", "c"),
                                           per_class=12, split=True))

    def setUp(self):
        super().setUp()
        for name in DISTRIBUTED_ENV:
            self.assertNotIn(name, os.environ)  # a stray variable would make this a worker

    def tearDown(self):
        keras.mixed_precision.set_global_policy("float32")
        super().tearDown()

    def tune_config(self, directory, **kwargs):
        base = tuning.base_config(self.folder, self.source, train_images=30, seed=0)
        # Head only or the last block: training through the whole network is what makes a
        # trial slow (tracing), and the poisoned-test-split test covers -1 on its own.
        settings = dict(base=base, directory=str(directory), tuner="random", max_trials=2,
                        max_epochs=2, unfrozen_choices=(0, 1))
        settings.update(kwargs)
        return tuning.TuneConfig(**settings)


class SearchSpaceTest(TuningTestCase):

    def test_names_ranges_and_log_sampled_learning_rate(self):
        hp = kt.HyperParameters()
        search_space.search_space(hp, [0, 1, 3, 6, -1], max_epochs=9, tune_epochs=True)
        space = {p.name: p for p in hp.space}
        self.assertEqual(set(space), {"learning_rate", "weight_decay", "unfrozen_blocks",
                                      "batch_size", "head_init", "label_smoothing", "epochs"})
        lr = space["learning_rate"]
        self.assertIsInstance(lr, kt.engine.hyperparameters.Float)
        self.assertEqual((lr.min_value, lr.max_value, lr.sampling), (1e-3, 0.5, "log"))
        self.assertEqual(list(space["unfrozen_blocks"].values), [0, 1, 3, 6, -1])
        self.assertEqual(list(space["head_init"].values), ["normal", "glorot"])
        self.assertIn(5e-4, space["weight_decay"].values)
        self.assertEqual((space["epochs"].min_value, space["epochs"].max_value), (3, 9))
        # The defaults are the paper's recipe.
        self.assertEqual({k: v for k, v in hp.values.items() if k != "epochs"},
                         {"learning_rate": 0.1, "weight_decay": 5e-4, "unfrozen_blocks": 0,
                          "batch_size": 128, "head_init": "normal", "label_smoothing": 0.0})

    def test_log_sampling_spreads_over_decades(self):
        hp = kt.HyperParameters()
        search_space.search_space(hp, [0, -1], 3, True)
        lr = next(p for p in hp.space if p.name == "learning_rate")
        samples = np.array([lr.random_sample(seed) for seed in range(400)])
        # Log-uniform on [1e-3, 0.5]: about 37% of samples fall below 1e-2 (uniform: 2%).
        self.assertBetween(np.mean(samples < 1e-2), 0.25, 0.5)

    def test_hyperband_owns_epochs(self):
        hp = kt.HyperParameters()
        search_space.search_space(hp, [0, -1], 9, tune_epochs=False)
        self.assertNotIn("epochs", [p.name for p in hp.space])
        values = search_space.searched_values({**hp.values, "tuner/epochs": 3,
                                         "tuner/initial_epoch": 1}, max_epochs=9)
        self.assertEqual(values["epochs"], 3)
        self.assertFalse(any(k.startswith("tuner/") for k in values))

    def test_unfrozen_choices_follow_the_source(self):
        resnet20 = saving.load_model(self.source)
        self.assertEqual(search_space.unfrozen_block_choices(resnet20), [0, 1, 3, 6, -1])
        resnet18 = resnet.build("resnet18", 10, 32, width=0.25)
        self.assertEqual(search_space.unfrozen_block_choices(resnet18), [0, 1, 2, 4, 6, -1])
        plain = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(),
                                  keras.layers.Dense(2)])
        self.assertEqual(search_space.unfrozen_block_choices(plain), [0, -1])

    def test_best_config_round_trips_through_the_transfer_command(self):
        base = tuning.base_config("my images/x", "src", train_images=40, seed=3,
                                  precision="mixed_bfloat16", data_dir="/d", download=False,
                                  test_images=50, image_size=48)
        values = {"learning_rate": 0.0123456789, "weight_decay": 0.0, "unfrozen_blocks": -1,
                  "batch_size": 64, "head_init": "glorot", "label_smoothing": 0.1, "epochs": 7}
        cfg = search_space.config_from_hps(dataclasses.replace(base, feature_cache="off"), values)
        self.assertEqual(config_from_command(tune_best.transfer_command(cfg)), cfg)

    def test_best_trial_is_the_earliest_among_ties(self):
        def trial(trial_id, score, status="COMPLETED"):
            return types.SimpleNamespace(trial_id=trial_id, score=score, status=status,
                                         message=None)
        trials = [trial("2", 0.5), trial("0", 0.5), trial("1", 0.25), trial("3", None, "FAILED")]
        oracle = types.SimpleNamespace(trials={t.trial_id: t for t in trials},
                                       start_order=["0", "1", "2", "3"])
        tuner = types.SimpleNamespace(oracle=oracle, project_dir="d")
        self.assertEqual(tune_best.best_trial(tuner).trial_id, "0")
        oracle.trials = {"3": trials[-1]}
        with self.assertRaisesRegex(UserError, "No trial of the search in d finished"):
            tune_best.best_trial(tuner)

    def test_bad_settings_are_one_sentence_errors(self):
        base = tuning.base_config(self.folder, self.source, train_images=30)
        with self.assertRaisesRegex(UserError, "--tuner must be one of"):
            tuning.TuneConfig(base=base, directory="d", tuner="grid")
        with self.assertRaisesRegex(UserError, "needs --train-images"):
            tuning.TuneConfig(base=tuning.base_config("x", None, None), directory="d")
        for settings, message in (
                ({"max_trials": 0}, "--max-trials must be at least 1, got 0."),
                ({"max_trials": True}, "--max-trials must be a whole number, got True."),
                ({"executions_per_trial": 1.5},
                 "--executions-per-trial must be a whole number, got 1.5."),
                ({"max_epochs": 0}, "--max-epochs must be at least 1, got 0."),
                ({"validation_fraction": 1.0},
                 "--validation-fraction must be between 0 and 1, got 1.0."),
                ({"validation_fraction": float("nan")},
                 "validation_fraction must be a finite number, got nan."),
                ({"unfrozen_choices": ()}, "tune: --unfrozen-choices is empty."),
                ({"unfrozen_choices": (0, 1.5)},
                 "each of --unfrozen-choices must be a whole number, got 1.5.")):
            with self.assertRaisesRegex(UserError, re.escape(message)):
                tuning.TuneConfig(base=base, directory="d", **settings)
        with mock.patch.dict(os.environ, {"KERASTUNER_ORACLE_IP": "127.0.0.1"}):
            with self.assertRaisesRegex(UserError, "KERASTUNER_ORACLE_PORT"):
                tuners.role()
        worker = {"KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": "1",
                  "KERASTUNER_TUNER_ID": "tuner0"}
        with mock.patch.dict(os.environ, worker):
            self.assertEqual(tuners.role(), "worker")
            with self.assertRaisesRegex(UserError, "chief only"):
                tuners.make_tuner(self.tune_config(self.root / "w", overwrite=True), None)
        cfg = self.tune_config(self.root / "bad")
        with self.assertRaisesRegex(UserError, "more than the 9 residual blocks"):
            FineTuneHyperModel(prepare(cfg), cfg.base, 2, True, (0, 12))


class _Unreadable:
    """Stands in for the test split: any read fails the test."""

    def __init__(self, labels):
        self.labels = labels

    def read(self, indices):
        raise AssertionError("the search read the test split")


class ValidationSplitTest(TuningTestCase):

    def test_validation_comes_from_the_n_training_images(self):
        search_data = prepare(self.tune_config(self.root / "split"))
        fit, val = set(search_data.fit_idx.tolist()), set(search_data.val_idx.tolist())
        self.assertEmpty(fit & val)
        self.assertEqual(fit | val, set(search_data.train_idx.tolist()))
        self.assertLen(search_data.train_idx, 30)
        self.assertLen(val, 6)  # 20%, stratified: two per class
        labels = search_data.target.train.labels
        self.assertEqual(sorted(np.bincount(labels[search_data.val_idx])), [2, 2, 2])
        # The N images are the ones fine_tune selects for the retrain.
        self.assertAllEqual(search_data.train_idx, data.select_subset(labels, 30, 0))

    def test_trials_never_read_the_test_split_and_never_change_the_source(self):
        cfg = self.tune_config(self.root / "poisoned")
        search_data = prepare(cfg)
        search_data.target = dataclasses.replace(
            search_data.target, test=_Unreadable(search_data.target.test.labels))
        source_weights = [w.copy() for w in search_data.source.model.get_weights()]
        # The last block trained on cached features, and the head on images (no cache).
        for unfrozen, feature_cache in ((1, "auto"), (0, "off")):
            base = dataclasses.replace(cfg.base, feature_cache=feature_cache)
            hypermodel = FineTuneHyperModel(search_data, base, 1, tune_epochs=True)
            hp = kt.HyperParameters()
            hp.Fixed("unfrozen_blocks", unfrozen)
            hp.Fixed("learning_rate", 0.5)
            model = hypermodel.build(hp)
            self.assertEqual(model.classifier.inputs[0].shape[1] == 32, feature_cache == "off")
            metrics = hypermodel.fit(hp, model, epochs=1, verbose=0)
            self.assertBetween(metrics["val_accuracy"], 0.0, 1.0)
        for before, after in zip(source_weights, search_data.source.model.get_weights()):
            self.assertAllEqual(before, after)

    def test_trials_run_at_the_requested_precision(self):
        cfg = self.tune_config(self.root / "bf16")
        base = dataclasses.replace(cfg.base, precision="mixed_bfloat16")
        hypermodel = FineTuneHyperModel(prepare(cfg), base, 1, True)
        keras.backend.clear_session()  # what keras-tuner does before every build
        hypermodel.build(kt.HyperParameters())
        self.assertEqual(keras.mixed_precision.global_policy().name, "mixed_bfloat16")


def run_cli_json(argv):
    """Runs the CLI in-process; returns (exit code, the JSON of the last stdout line)."""
    code, out, _ = run_cli(*argv)
    lines = out.strip().splitlines()
    return code, json.loads(lines[-1]) if lines else None


def search(cfg, search_data=None, verbose=False, callbacks=None):
    """Runs a search without the final retrain; returns the tuner."""
    search_data = search_data or prepare(cfg)
    hypermodel = FineTuneHyperModel(search_data, cfg.base, cfg.max_epochs,
                                           cfg.tuner != "hyperband", cfg.unfrozen_choices)
    tuner = tuners.make_tuner(cfg, hypermodel)
    tuners.run_search(tuner, verbose=verbose, callbacks=callbacks)
    return tuner


def trials(tuner):
    """Every trial of a search: id, hyperparameters, status and score, in id order."""
    return [(t.trial_id, t.hyperparameters.values, t.status, t.score)
            for _, t in sorted(tuner.oracle.trials.items())]


class InterruptTraining(keras.callbacks.Callback):
    """Raises KeyboardInterrupt (as a kill would stop the process) when the ``at``-th
    training of the search begins."""

    def __init__(self, at: int):
        super().__init__()
        started = []

        def count() -> int:
            started.append(1)
            return len(started)
        # A function, not a number: keras-tuner gives every trial a deep copy of the
        # callbacks, and a closure is shared by the copies.
        self.count, self.at = count, at

    def on_train_begin(self, logs=None):
        if self.count() == self.at:
            raise KeyboardInterrupt


class SearchTest(TuningTestCase):

    @pytest.mark.slow  # ~20 s on 2 cores
    def test_two_trial_search_end_to_end(self):
        directory = self.root / "e2e"
        argv = ["tune", "--target", self.folder, "--source", self.source, "--train-images",
                "30", "--tuner", "random", "--max-trials", "2", "--max-epochs", "2",
                "--unfrozen-choices", "0,1", "--dir", str(directory), "--quiet"]
        code, result = run_cli_json(argv)
        self.assertEqual(code, 0)
        self.assertEqual(result["trials"], 2)
        self.assertEqual(result["trials_run_here"], ["0", "1"])
        self.assertEqual((result["validation_images"], result["train_images"]), (6, 30))
        self.assertEqual(result["test_images"], 18)  # tested once, on the whole test split
        # The retrained run's own test result, a share of the 18 test images; the best
        # trial's score, a share of the 6 validation images.
        metrics = json.loads((directory / tune_best.BEST_RUN_DIR / "metrics.json").read_text())
        self.assertEqual(result["test_accuracy"], metrics["test_accuracy"])
        self.assertAlmostEqual(18 * result["test_accuracy"], round(18 * result["test_accuracy"]),
                               places=4)
        scores = [json.loads(path.read_text())["score"]
                  for path in (directory / tuners.PROJECT_NAME).glob("trial_*/trial.json")]
        self.assertLen(scores, 2)
        self.assertAlmostEqual(result["val_accuracy"], max(scores), places=6)
        self.assertAlmostEqual(6 * result["val_accuracy"], round(6 * result["val_accuracy"]),
                               places=4)
        best = json.loads((directory / tune_best.BEST_HPS_FILE).read_text())
        self.assertEqual(best, result["best_hyperparameters"])
        self.assertIn(best["unfrozen_blocks"], (0, 1))
        command = (directory / tune_best.BEST_COMMAND_FILE).read_text().strip()
        self.assertEqual(command, result["command"])
        retrain = config_from_command(command)
        self.assertEqual((retrain.unfrozen_blocks, retrain.epochs, retrain.data.train_images),
                         (best["unfrozen_blocks"], best["epochs"], 30))
        self.assertEqual(retrain.optim.learning_rate, best["learning_rate"])
        self.assertTrue((directory / tune_best.BEST_RUN_DIR / "model.keras").exists())
        # Rerunning a finished search trains nothing and does not test again.
        code, again = run_cli_json(argv)
        self.assertEqual((code, again["trials_run_here"], again["retrained"]), (0, [], False))
        self.assertEqual(again["test_accuracy"], result["test_accuracy"])

    def test_the_retrain_reuses_the_trials_trunk_features(self):
        cfg = self.tune_config(self.root / "reuse", max_trials=1)
        search_data = prepare(cfg)
        tuner = search(cfg, search_data)
        computed = search_data.cache.computed
        self.assertEqual(computed, 30)  # the trial's fitting and validation images
        result = tune_best.retrain_best(cfg, tuner, search_data, verbose=False)
        # The same 30 training images: only the test images are new to the cache.
        self.assertEqual(search_data.cache.computed - computed, result["test_images"])

    @pytest.mark.slow  # ~28 s on 2 cores
    def test_resume_runs_only_the_missing_trials(self):
        cfg = self.tune_config(self.root / "resume", tuner="bayesian", max_trials=2)
        search_data = prepare(cfg)
        self.assertEqual(search(cfg, search_data).trials_run, ["0", "1"])
        resumed = search(dataclasses.replace(cfg, max_trials=3), search_data)
        self.assertEqual(resumed.trials_run, ["2"])
        self.assertLen(resumed.oracle.trials, 3)
        self.assertTrue(all(t.status == "COMPLETED" for t in resumed.oracle.trials.values()))

    def test_hyperband_continues_trials_from_their_checkpoints(self):
        tuner = search(self.tune_config(self.root / "hyperband", tuner="hyperband",
                                        max_trials=4, max_epochs=3))
        trials = list(tuner.oracle.trials.values())
        self.assertLen(trials, 4)
        self.assertTrue(all(t.status == "COMPLETED" for t in trials), [t.message for t in trials])
        continued = [t for t in trials if "tuner/trial_id" in t.hyperparameters.values]
        self.assertLen(continued, 1)  # round 1 of the first bracket: 1 -> 3 epochs
        self.assertEqual(continued[0].hyperparameters.values["tuner/initial_epoch"], 1)


class ReproducibilityTest(TuningTestCase):

    @pytest.mark.slow  # ~47 s on 2 cores
    def test_identical_searches_match_also_when_one_was_interrupted_and_resumed(self):
        cfg = self.tune_config(self.root / "repeat_a", max_trials=3, max_epochs=1)
        search_data = prepare(cfg)
        with contextlib.redirect_stderr(io.StringIO()):
            first = search(cfg, search_data, verbose=True)
        second = search(dataclasses.replace(cfg, directory=str(self.root / "repeat_b")),
                        search_data)
        self.assertEqual(trials(second), trials(first))
        self.assertLen({str(values) for _, values, _, _ in trials(first)}, 3)
        # Killed during its second trial, then the same command again.
        interrupted = dataclasses.replace(cfg, directory=str(self.root / "repeat_killed"))
        with self.assertRaises(KeyboardInterrupt):
            search(interrupted, search_data, callbacks=[InterruptTraining(at=2)])
        resumed = search(interrupted, search_data)
        self.assertEqual(resumed.trials_run, ["1", "2"])
        self.assertEqual(trials(resumed), trials(first))
        # The log numbers trials as keras-tuner's own log does ("Trial #1" is id "0").
        for trial_id, number in first.oracle._display.trial_number.items():
            self.assertEqual(tune_best.trial_number(first, trial_id), number)

    def test_seed_zero_is_a_fixed_oracle_seed(self):
        seeds = {tuners.oracle_seed(seed) for seed in (0, 1, 2**32 - 2)}
        self.assertLen(seeds, 3)
        self.assertTrue(all(0 < seed < 2**32 for seed in seeds))
        cfg = self.tune_config(self.root / "seed0", tuner="random")
        tuner = tuners.make_tuner(cfg, FineTuneHyperModel(
            prepare(cfg), cfg.base, 1, True, (0, 1)))
        self.assertEqual(tuner.oracle.seed, tuners.oracle_seed(0))

    def test_the_bayesian_oracle_resumes_its_random_state(self):
        def oracle():
            return tuners.ResumableBayesianOracle(
                objective=kt.Objective(tuners.OBJECTIVE, direction="max"), max_trials=5,
                seed=tuners.oracle_seed(0))
        before = oracle()
        before._random_state.uniform(size=4)  # what the Gaussian-process phase draws
        state = json.loads(json.dumps(before.get_state()))  # as saved in the search dir
        after = oracle()
        after.set_state(state)
        self.assertAllEqual(after._random_state.uniform(size=4),
                            before._random_state.uniform(size=4))

    @pytest.mark.slow  # ~22 s on 2 cores
    def test_unfrozen_choices_without_head_only(self):
        hp = kt.HyperParameters()
        self.assertEqual(search_space.search_space(hp, [3, 4], 2, True)["unfrozen_blocks"], 3)
        tuner = search(self.tune_config(self.root / "no_head_only", unfrozen_choices=(3, 4),
                                        max_epochs=1))
        searched = [values["unfrozen_blocks"] for _, values, status, _ in trials(tuner)
                    if status == "COMPLETED"]
        self.assertLen(searched, 2)
        self.assertContainsSubset(searched, {3, 4})


class SearchLockTest(TuningTestCase):

    def test_a_second_search_on_a_directory_is_refused_pointing_to_the_distributed_mode(self):
        directory = self.root / "locked"
        with tuning.search_lock(directory):  # another search, as far as flock can tell
            code, out, err = run_cli(
                "tune", "--target", self.folder, "--source", self.source, "--train-images",
                "30", "--tuner", "random", "--max-trials", "1", "--max-epochs", "1",
                "--dir", directory, "--quiet")
        self.assertEqual((code, out), (2, ""))
        self.assertRegex(err, rf"^error: --dir {directory} is in use by another tune \(pid "
                              rf"{os.getpid()} on .*\); wait for it to end, or for a parallel "
                              rf"search start one chief and several workers on it in "
                              rf"keras-tuner's distributed mode \(KERASTUNER_TUNER_ID, .*\n$")
        self.assertFalse((directory / tuners.PROJECT_NAME).exists())  # nothing searched

    def test_a_distributed_searchs_workers_share_the_chiefs_directory(self):
        directory = self.root / "distributed_lock"
        env = {"KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": "1"}
        with mock.patch.dict(os.environ, {**env, "KERASTUNER_TUNER_ID": "chief"}):
            chief = tuning.search_lock(directory)
        with chief, mock.patch.dict(os.environ, {**env, "KERASTUNER_TUNER_ID": "tuner0"}):
            with tuning.search_lock(directory):  # not refused
                pass
            with self.assertRaisesRegex(UserError, "in use by another tune"):
                with mock.patch.dict(os.environ, {"KERASTUNER_TUNER_ID": "chief"}):
                    with tuning.search_lock(directory):  # a second chief is
                        pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class DistributedTest(TuningTestCase):

    @pytest.mark.slow  # ~150 s on 2 cores
    def test_chief_and_two_workers_share_the_trials(self):
        directory = self.root / "distributed"
        args = ["--target", self.folder, "--source", self.source, "--train-images", "30",
                "--tuner", "random", "--max-trials", "4", "--max-epochs", "1",
                "--unfrozen-choices", "0,1",
                "--dir", str(directory), "--quiet"]
        env = {**os.environ, "KERASTUNER_ORACLE_IP": "127.0.0.1",
               "KERASTUNER_ORACLE_PORT": str(free_port()), "TF_CPP_MIN_LOG_LEVEL": "2",
               "PYTHONPATH": str(REPO)}
        logs = self.root / "logs"
        logs.mkdir(exist_ok=True)

        def start(tuner_id, command):
            # Files, not pipes: a full pipe would block a process we are not reading yet.
            stdout = open(logs / f"{tuner_id}.out", "w")
            stderr = open(logs / f"{tuner_id}.err", "w")
            process = subprocess.Popen(command, cwd=REPO, stdout=stdout, stderr=stderr,
                                       env={**env, "KERASTUNER_TUNER_ID": tuner_id})
            return tuner_id, process

        processes = [start("chief", [sys.executable, "main.py", "tune", *args])]
        processes += [start(f"tuner{i}", [sys.executable, "tests/tuning_worker.py",
                                          str(self.root / "barrier"), "2", "--", *args])
                      for i in range(2)]
        outputs = {}
        try:
            for tuner_id, process in processes:
                process.wait(timeout=240)
                stderr = (logs / f"{tuner_id}.err").read_text()
                self.assertEqual(process.returncode, 0, f"{tuner_id}: {stderr[-3000:]}")
                stdout = (logs / f"{tuner_id}.out").read_text()
                outputs[tuner_id] = json.loads(stdout.strip().splitlines()[-1])
        finally:
            for _, process in processes:
                if process.poll() is None:
                    process.kill()
        chief_result = outputs["chief"]
        shares = [set(outputs[f"tuner{i}"]["trials_run"]) for i in range(2)]
        self.assertTrue(all(shares), shares)  # every worker ran at least one trial
        self.assertEmpty(shares[0] & shares[1])
        self.assertEqual(shares[0] | shares[1], {"0", "1", "2", "3"})
        self.assertEqual(chief_result["trials"], 4)
        self.assertEqual(chief_result["trials_run_here"], [])  # the chief only serves
        self.assertBetween(chief_result["test_accuracy"], 0.0, 1.0)


if __name__ == "__main__":
    tf.test.main()
