"""Tests of the command line: help, the result contract, errors, pretrain/evaluate, resume."""

import argparse
import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from unittest import mock

import pytest
import tensorflow as tf

from tftransfer.sweeps import registry as grid_registry
import tftransfer
from tests.helpers import REPO, SHARED_TFDS, killed_after_epoch, make_image_folder, run_cli
from tftransfer import cli
from tftransfer.sweeps import runner as sweeps
from tftransfer.training import pretrain as training
from tftransfer.commands import COMMAND_MODULES
from tftransfer.config import DataConfig, ModelConfig, PretrainConfig, SweepConfig


class HelpTest(tf.test.TestCase):

    def test_every_command_has_help(self):
        for command in COMMAND_MODULES:
            code, out, _ = run_cli(command, "--help")
            self.assertEqual(code, 0, command)
            self.assertIn(f"usage: tftransfer {command}", out)

    def test_every_flag_has_help_text_and_every_command_a_description(self):
        parser = cli.build_parser()
        commands = next(action for action in parser._actions
                        if isinstance(action, argparse._SubParsersAction)).choices
        self.assertEqual(sorted(commands), sorted(COMMAND_MODULES))
        without_help = [f"{name} {'/'.join(action.option_strings) or action.dest}"
                        for name, command in commands.items() for action in command._actions
                        if not action.help]
        self.assertEqual(without_help, [])
        self.assertEqual([name for name, command in commands.items()
                          if not command.description], [])

    def test_help_shows_defaults(self):
        for command, shown in (("transfer", ("(default: auto; with --resume",
                                             "initial learning rate (SGD) (default: 0.1)",
                                             "(default: 0)")),
                               ("pretrain", ("(default: 30)", "L2 penalty added to the loss "
                                             "(PyTorch's coupled weight decay) (default: 0.0005)")),
                               ("evaluate", ("evaluation batch size (default: 256)",)),
                               ("serve", ("port of the REST API (default: 8501)",))):
            code, out, _ = run_cli(command, "--help")
            text = " ".join(out.split())
            self.assertEqual(code, 0)
            for expected in shown:
                self.assertIn(expected, text, command)
        code, out, _ = run_cli("--version")
        self.assertEqual((code, out.strip()), (0, f"tftransfer {tftransfer.__version__}"))

    def test_parsing_imports_neither_keras_nor_tensorflow(self):
        # --version and --help must answer at once, not after TensorFlow's 5-20 s import.
        code = ("import sys; from tftransfer import cli; cli.build_parser(); "
                "print(sorted({'keras', 'tensorflow'} & set(sys.modules)))")
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                check=True, cwd=Path(__file__).resolve().parents[1])
        self.assertEqual(result.stdout.strip(), "[]")
        from tftransfer.sources import saving
        from tftransfer.commands import evaluate
        self.assertEqual(evaluate.TRUST_FLAG, saving.TRUST_FLAG)

    def test_eps_and_grpc_help_say_what_they_mean(self):
        text = " ".join(run_cli("evaluate", "--help")[1].split())
        self.assertIn("with linf the largest change of any one pixel value", text)
        text = " ".join(run_cli("predict", "--help")[1].split())
        self.assertNotIn("see --help", text)
        self.assertIn("gRPC API (--server is then host:port", text)

    def test_bad_input_is_one_sentence_and_exit_code_2(self):
        code, out, err = run_cli("evaluate", "--model", "no/such/model", "--dataset", "mnist")
        self.assertEqual(code, 2)
        self.assertEqual(out, "")
        self.assertRegex(err, r"^error: No model at 'no/such/model'.*\n$")
        self.assertNotIn("Traceback", err)

    def test_sizes_below_one_are_refused_by_the_parser(self):
        for flag in ("--batch-size", "--max-examples"):
            code, _, err = run_cli("evaluate", "--model", "m", "--dataset", "mnist", flag, "0")
            self.assertEqual(code, 2)
            self.assertIn(f"{flag}: must be at least 1, got 0", err)

    def test_a_json_out_in_a_missing_folder_is_refused_before_any_work(self):
        with mock.patch("tftransfer.data.prepared_datasets") as work:
            code, out, err = run_cli("datasets", "--json-out", "/no/such/folder/x.json")
        self.assertEqual(code, 2)
        self.assertIn("--json-out /no/such/folder/x.json", err)
        work.assert_not_called()

    def test_an_unwritable_json_out_keeps_the_result_on_stdout(self):
        folder = Path(self.get_temp_dir())
        with mock.patch("builtins.open", side_effect=PermissionError(13, "Permission denied")):
            code, out, err = run_cli("datasets", "--data-dir", SHARED_TFDS,
                                     "--json-out", folder / "x.json")
        self.assertEqual(code, 2)
        names = {d["name"] for d in json.loads(out.strip().splitlines()[-1])["datasets"]}
        self.assertIn("mnist", names)
        self.assertIn("Permission denied", err)

    def test_interrupt_message_says_whether_the_command_resumes(self):
        with mock.patch("tftransfer.commands.datasets.run", side_effect=KeyboardInterrupt):
            code, _, err = run_cli("datasets")
        self.assertEqual(code, 130)
        self.assertIn("re-running starts it again", err)
        with mock.patch("tftransfer.commands.report.run", side_effect=KeyboardInterrupt):
            self.assertIn("starts it again", run_cli("report", "--results", "x")[2])
        with mock.patch("tftransfer.commands.pretrain.run", side_effect=KeyboardInterrupt):
            code, _, err = run_cli("pretrain", "--dataset", "mnist", "--out", "x")
        self.assertIn("the same command resumes it", err)

    def test_datasets_lists_the_offline_folder(self):
        code, out, _ = run_cli("datasets", "--data-dir", SHARED_TFDS)
        self.assertEqual(code, 0)
        names = {d["name"] for d in json.loads(out.strip().splitlines()[-1])["datasets"]}
        self.assertIn("mnist", names)


class StopTest(tf.test.TestCase):
    """SIGTERM and OS errors at the CLI's edge."""

    def setUp(self):
        super().setUp()
        # Without the CLI's own handler a SIGTERM would end the test run: fail the test instead.
        previous = signal.signal(signal.SIGTERM, self.unhandled)
        self.addCleanup(signal.signal, signal.SIGTERM, previous)

    @staticmethod
    def unhandled(signum, frame):
        raise AssertionError("SIGTERM reached the test, not the command")

    @staticmethod
    def terminate(*args, **kwargs):
        """A command's work, stopped by SIGTERM as Slurm or Kubernetes stop a job."""
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)  # the handler raises in here
        raise AssertionError("SIGTERM did not stop the command")

    def test_sigterm_says_what_was_kept_and_how_to_resume_and_exits_143(self):
        for command, args, kept in (
                ("pretrain", ["--dataset", "mnist", "--out", "p"],
                 "the checkpoint of its last finished epoch (if any) is kept in p, and the "
                 "same command resumes it."),
                ("transfer", ["--target", "mnist", "--out", "t"],
                 "the checkpoint of its last finished epoch (if any) is kept in t, and the "
                 "same command with --resume continues from it."),
                ("transfer", ["--resume", "t"], "kept in t, and the same command continues"),
                ("datasets", [], "nothing of this run is kept; re-running starts it again.")):
            with self.subTest(command=command, args=args), \
                    mock.patch(f"tftransfer.commands.{command}.run", side_effect=self.terminate):
                code, out, err = run_cli(command, *args)
                self.assertEqual((code, out), (143, ""))
                self.assertStartsWith(err, "terminated (SIGTERM); ")
                self.assertIn(kept, err)
                self.assertEqual(err.count("\n"), 1)
                self.assertEqual(signal.getsignal(signal.SIGTERM), self.unhandled)  # restored

    def test_a_sigtermed_process_exits_143_with_its_line(self):
        script = textwrap.dedent("""
            import sys, time
            from pathlib import Path
            from unittest import mock
            from tftransfer import cli

            def work(args):
                Path(sys.argv[1]).touch()
                time.sleep(60)
            with mock.patch("tftransfer.commands.datasets.run", work):
                sys.exit(cli.main(["datasets"]))
        """)
        started = Path(self.get_temp_dir()) / "started"
        process = subprocess.Popen([sys.executable, "-c", script, str(started)], cwd=REPO,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
        self.assertEqual((process.returncode, out), (143, ""))
        self.assertEqual(err, "terminated (SIGTERM); nothing of this run is kept; re-running "
                              "starts it again.\n")

    def test_an_os_error_is_one_sentence_naming_what_failed_and_the_path(self):
        for error, line in (
                (OSError(errno.EROFS, "Read-only file system", "results/x/runs"),
                 "error: Read-only file system: results/x/runs\n"),
                (OSError(errno.ENOSPC, "No space left on device"),
                 "error: No space left on device\n"),
                # From a socket, not from stdout: said, not silenced.
                (BrokenPipeError(errno.EPIPE, "Broken pipe"), "error: Broken pipe\n")):
            with self.subTest(error=error), \
                    mock.patch("tftransfer.commands.datasets.run", side_effect=error):
                self.assertEqual(run_cli("datasets"), (2, "", line))

    def test_a_reader_of_stdout_that_goes_away_ends_the_command_quietly(self):
        script = textwrap.dedent("""
            import sys
            from unittest import mock
            from tftransfer import cli

            with mock.patch("tftransfer.commands.datasets.run", lambda args: {"rows": [1] * 9}):
                sys.exit(cli.main(["datasets"]))
        """)
        process = subprocess.Popen([sys.executable, "-c", script], cwd=REPO,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        process.stdout.close()  # `datasets | head -c 1`, with head gone before the first line
        _, err = process.communicate(timeout=60)
        self.assertEqual((process.returncode, err), (141, b""))


def strict_json(line):
    """``json.loads`` that refuses NaN and Infinity, as strict JSON parsers do."""
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")
    return json.loads(line, parse_constant=refuse)


class NonFiniteAndSeedTest(tf.test.TestCase):

    def test_non_finite_numbers_on_the_command_line_are_one_sentence(self):
        for argv, message in (
                (("transfer", "--target", "mnist", "--lr", "inf"),
                 "learning_rate must be a finite number, got inf."),
                (("transfer", "--target", "mnist", "--set", "optim.weight_decay=nan"),
                 "weight_decay must be a finite number, got nan."),
                (("pretrain", "--dataset", "mnist", "--out", "x", "--attack", "l2",
                  "--eps", "inf"), "eps must be a finite number, got inf.")):
            code, out, err = run_cli(*argv)
            self.assertEqual((code, out), (2, ""), argv)
            self.assertEqual(err, f"error: {message}\n")

    def test_seeds_numpy_cannot_take_are_one_sentence(self):
        for seed in ("-1", "99999999999"):
            for argv in (("transfer", "--target", "mnist"),
                         ("pretrain", "--dataset", "mnist", "--out", "x")):
                code, out, err = run_cli(*argv, "--seed", seed)
                self.assertEqual((code, out), (2, ""), argv)
                self.assertEqual(err, f"error: seed must be a whole number from 0 to "
                                      f"4294967295, got {seed}.\n")
            code, _, err = run_cli("saliency", "--models", "m", "--dataset", "mnist", "--out",
                                   "x.png", "--seed", seed)
            self.assertEqual(code, 2)
            self.assertIn("argument --seed: seed must be a whole number", err)
            self.assertNotIn("Traceback", err)

    def test_a_non_finite_result_becomes_an_error_object_and_exit_1(self):
        finite = {"test_accuracy": 0.5, "rows": [{"eps": 0.25}], "n": 3}
        with mock.patch("tftransfer.commands.datasets.run", return_value=finite):
            code, out, _ = run_cli("datasets")
        self.assertEqual((code, strict_json(out.strip().splitlines()[-1])), (0, finite))
        json_out = Path(self.get_temp_dir()) / "result.json"
        result = {"test_accuracy": 0.5, "test_loss": float("nan"),
                  "curve": [1.0, float("inf")]}
        with mock.patch("tftransfer.commands.datasets.run", return_value=result):
            code, out, err = run_cli("datasets", "--json-out", json_out)
        self.assertEqual(code, 1)
        line = strict_json(out.strip().splitlines()[-1])
        self.assertEqual(line["non_finite"], ["test_loss", "curve[1]"])
        self.assertIn("test_loss nan, curve[1] inf", line["error"])
        self.assertIn(f"error: {line['error']}", err)
        self.assertEqual(strict_json(json_out.read_text()), line)


class SweepCommandTest(tf.test.TestCase):

    def setUp(self):
        super().setUp()
        self.tmp = Path(self.get_temp_dir())
        target = make_image_folder(self.tmp / "images", classes=("a", "b"), split=True)
        # Its only source is not trained: every cell fails at once, without training.
        sweep = SweepConfig(name="cli-test", sources=(str(self.tmp / "untrained"),),
                            targets=(str(target),), train_images=(4, 6), unfrozen_blocks=(0,),
                            seeds=(0,), epochs=1, description="A test sweep.")
        grid_registry.names()  # load the real configs first, or stop() would drop them
        registry = mock.patch.dict(grid_registry.REGISTRY, {sweep.name: sweep})
        registry.start()
        self.addCleanup(registry.stop)
        self.results = self.tmp / "results"

    def test_failed_runs_exit_1_after_the_usual_result_line(self):
        code, out, err = run_cli("sweep", "--config", "cli-test", "--results", self.results)
        self.assertEqual(code, 1)
        result = json.loads(out.strip().splitlines()[-1])
        self.assertEqual(list(result), ["sweep", "shard", "cells", "finished_before", "ran",
                                        "failed", "remaining", "results", "features_computed"])
        self.assertEqual((result["cells"], result["ran"], result["failed"]), (2, 0, 2))
        self.assertIn("sweep cli-test: 2 of 2 runs failed", err)

    def test_a_sweep_without_failures_exits_0(self):
        self.results.mkdir()
        rows = ["run_key,sweep"] + [f"{c.key},cli-test" for c in
                                    sweeps.cells(grid_registry.get("cli-test"))]
        (self.results / "results.csv").write_text("\n".join(rows) + "\n")
        code, out, err = run_cli("sweep", "--config", "cli-test", "--results", self.results)
        self.assertEqual(code, 0)
        self.assertEqual(json.loads(out.strip().splitlines()[-1])["finished_before"], 2)
        # A finished directory (like the committed results/tiny) says why nothing ran.
        self.assertIn(f"sweep cli-test: all 2 cells already have a row under {self.results}",
                      err)
        self.assertIn("give it a fresh directory: --results runs/cli-test", err)

    def test_a_fresh_results_directory_runs_and_does_not_say_nothing_ran(self):
        code, _, err = run_cli("sweep", "--config", "cli-test", "--results", self.results)
        self.assertEqual(code, 1)  # the untrained source fails every run
        self.assertNotIn("nothing ran", err)

    def test_list_prints_every_registered_sweep_with_its_description(self):
        code, out, err = run_cli("sweep", "--list")
        self.assertEqual(code, 0)
        listed = json.loads(out.strip().splitlines()[-1])["sweeps"]
        self.assertEqual([s["name"] for s in listed], grid_registry.names())
        self.assertIn({"name": "cli-test", "description": "A test sweep."}, listed)
        self.assertRegex(err, r"\n  cli-test +A test sweep\.\n")
        code, _, err = run_cli("sweep")
        self.assertEqual(code, 2)
        self.assertIn("one of the arguments --config --grid --list --check-locks is required",
                      err)

    def test_bad_arguments_stop_with_one_sentence_before_any_run(self):
        for args, message in ((["--config", "nope"], "error: Unknown sweep config 'nope'"),
                              (["--config", "cli-test", "--shard", "3/2"], "between 1 and n"),
                              (["--config", "cli-test", "--max-runs", "0"],
                               "error: --max-runs must be at least 1, got 0.")):
            with self.subTest(args=args):
                code, out, err = run_cli("sweep", *args, "--results", self.results)
                self.assertEqual((code, out), (2, ""))
                self.assertIn(message, err)
                self.assertNotIn("Traceback", err)
        self.assertFalse(self.results.exists())

    def test_a_file_as_results_is_refused_before_any_run(self):
        self.results.write_text("not a folder")
        with mock.patch("tftransfer.finetune.fine_tune") as fine_tune:
            code, out, err = run_cli("sweep", "--config", "cli-test", "--results", self.results)
        self.assertEqual((code, out), (2, ""))
        self.assertEqual(err, f"error: --results {self.results} is a file, not a results "
                              f"folder; give the folder the sweep writes its results.csv to.\n")
        fine_tune.assert_not_called()

    def test_sigterm_releases_the_running_cells_claim_and_exits_143(self):
        claims = []

        def terminated(cfg, **kwargs):
            claims.extend((self.results / sweeps.CLAIMS_DIR).iterdir())
            StopTest.terminate()
        previous = signal.signal(signal.SIGTERM, StopTest.unhandled)
        self.addCleanup(signal.signal, signal.SIGTERM, previous)
        with mock.patch("tftransfer.finetune.fine_tune", side_effect=terminated):
            code, out, err = run_cli("sweep", "--config", "cli-test", "--results", self.results)
        self.assertEqual((code, out), (143, ""))
        self.assertLen(claims, 1)
        self.assertEmpty(list((self.results / sweeps.CLAIMS_DIR).iterdir()))  # released
        self.assertEndsWith(err, f"terminated (SIGTERM); the rows of finished runs are kept in "
                                 f"{self.results}, the running cell's claim is released, and "
                                 f"the same command runs the cells left.\n")


class PretrainEvaluateTest(tf.test.TestCase):

    def setUp(self):
        super().setUp()
        self.tmp = Path(self.get_temp_dir())
        self.folder = make_image_folder(self.tmp / "images", classes=("a", "b"), per_class=16,
                                        split=True)

    @pytest.mark.slow  # ~27 s on 2 cores
    def test_pretrain_then_evaluate_with_an_attack(self):
        out = self.tmp / "model"
        code, stdout, err = run_cli("pretrain", "--dataset", self.folder, "--arch", "resnet20",
                                    "--width", "0.25", "--epochs", "2", "--batch-size", "8",
                                    "--image-size", "16", "--out", out, "--attack", "l2",
                                    "--eps", "0.25", "--attack-steps", "2",
                                    "--attack-step-size", "0.2")
        self.assertEqual(code, 0, err)
        result = json.loads(stdout.strip().splitlines()[-1])
        self.assertEqual(result["attack"], "l2")
        for name in ("model.keras", "config.json", "history.csv", "metrics.json"):
            self.assertTrue((out / name).exists(), name)
        self.assertTrue(any((out / "logs").rglob("*tfevents*")))
        config = json.loads((out / "config.json").read_text())
        self.assertEqual(config["attack"]["attack_steps"], 2)
        self.assertAllClose(config["attack"]["attack_step_size"], 0.2)

        json_out = self.tmp / "eval.json"
        code, stdout, _ = run_cli("evaluate", "--model", out, "--dataset", self.folder,
                                  "--attack", "l2", "--eps", "0.25", "--attack-steps", "3",
                                  "--json-out", json_out)
        self.assertEqual(code, 0)
        result = json.loads(stdout.strip().splitlines()[-1])
        self.assertEqual(result, json.loads(json_out.read_text()))
        self.assertEqual(result["examples"], 16)
        self.assertLessEqual(result["adversarial_accuracy"], result["accuracy"])

    def test_resumed_run_ends_where_an_uninterrupted_one_would(self):
        def config(out):
            return PretrainConfig(out=str(out), data=DataConfig(
                dataset=str(self.folder), image_size=16, batch_size=8),
                model=ModelConfig(arch="resnet20", width=0.25), epochs=3)

        training.pretrain(config(self.tmp / "whole"))
        with killed_after_epoch(2):
            with self.assertRaises(KeyboardInterrupt):
                training.pretrain(config(self.tmp / "resumed"))
        self.assertFalse((self.tmp / "resumed" / "model.keras").exists())
        metrics = training.pretrain(config(self.tmp / "resumed"))
        self.assertEqual(metrics["epochs_this_session"], 1)  # only the third epoch ran again

        whole = tftransfer.load_model(self.tmp / "whole")
        resumed = tftransfer.load_model(self.tmp / "resumed")
        for a, b in zip(whole.weights, resumed.weights):
            self.assertAllClose(a, b, atol=1e-5, rtol=1e-5, msg=a.path)
        rows = (self.tmp / "resumed" / "history.csv").read_text().strip().splitlines()
        self.assertEqual([r.split(",")[0] for r in rows[1:]], ["1", "2", "3"])

    def test_changed_config_in_an_existing_run_dir_is_refused(self):
        out = self.tmp / "run"
        args = ["pretrain", "--dataset", self.folder, "--arch", "resnet20", "--width", "0.25",
                "--epochs", "1", "--image-size", "16", "--out", out]
        self.assertEqual(run_cli(*args)[0], 0)
        code, _, err = run_cli(*args, "--seed", "1")
        self.assertEqual(code, 2)
        self.assertIn("different configuration (seed: 0 -> 1)", err)

    @pytest.mark.slow  # ~49 s on 2 cores
    def test_more_epochs_extend_a_finished_pretrain_run_and_are_recorded(self):
        out = self.tmp / "run"
        args = ["pretrain", "--dataset", self.folder, "--arch", "resnet20", "--width", "0.25",
                "--image-size", "16", "--batch-size", "8", "--out", out]
        self.assertEqual(run_cli(*args, "--epochs", "1")[0], 0)
        first = json.loads((out / "metrics.json").read_text())
        code, stdout, err = run_cli(*args, "--epochs", "2")
        self.assertEqual(code, 0, err)
        metrics = json.loads(stdout.strip().splitlines()[-1])
        self.assertEqual((metrics["epochs_this_session"], metrics["last_epoch"]), (1, 2))
        extension = json.loads((out / "config.json").read_text())["extended_from"]
        self.assertEqual([(e["epochs"], e["new_epochs"], e["accuracy"]) for e in extension],
                         [(1, 2, first["accuracy"])])
        self.assertEqual(metrics["extended_from"], extension)
        rows = (out / "history.csv").read_text().strip().splitlines()
        self.assertEqual([r.split(",")[0] for r in rows[1:]], ["1", "2"])


class SetOverrideTest(tf.test.TestCase):

    def test_typed_overrides(self):
        from tftransfer.config import TransferConfig, apply_overrides
        from tftransfer.errors import UserError

        cfg = apply_overrides(TransferConfig(target="mnist"),
                              ["epochs=20", "optim.learning_rate=0.01", "data.augment=true",
                               "data.train_images=none"])
        self.assertEqual((cfg.epochs, cfg.optim.learning_rate, cfg.data.augment),
                         (20, 0.01, True))
        self.assertIsNone(cfg.data.train_images)
        with self.assertRaisesRegex(UserError,
                                    r"epochs must be at least 1 \(or 'auto'\), got 'ten'"):
            apply_overrides(cfg, ["epochs=ten"])
        with self.assertRaisesRegex(UserError, "no field 'epoch'"):
            apply_overrides(cfg, ["epoch=3"])
        with self.assertRaisesRegex(UserError, "epochs must be at least 1"):
            apply_overrides(cfg, ["epochs=0"])
