"""Tests of sweeps: registered configs, the grid, sharding, atomic rows, resume after kill -9."""

import contextlib
import io
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import tensorflow as tf

from tftransfer.sweeps import registry as grid_registry
from tests.helpers import REPO, make_image_folder, make_source, small_sweep
from unittest import mock

from tftransfer import runs
from tftransfer.sources import hub
from tftransfer.sweeps import runner as sweeps
from tftransfer.sweeps import run_dirs
from tftransfer.sweeps.cells import MAX_FILE_NAME_BYTES
from tftransfer.config import CellOverride
from tftransfer.errors import UserError


class GridTest(tf.test.TestCase):

    def test_every_registered_config_is_valid(self):
        self.assertIn("replication", grid_registry.names())
        for name in grid_registry.names():
            sweep = grid_registry.get(name)
            grid = sweeps.cells(sweep)
            self.assertNotEmpty(grid, name)
            self.assertLen({c.key for c in grid}, len(grid))
            for source in sweep.sources:
                # a source still being trained has its folder but no record yet
                known = hub.get(source) or (REPO / "saved_models" / source).is_dir()
                self.assertTrue(known, f"{name}: unknown source {source}")

    def test_replication_grid_has_the_paper_shape(self):
        grid = sweeps.cells(grid_registry.get("replication"))
        small = [c for c in grid if c.train_images <= 800]
        large = [c for c in grid if c.train_images > 800]
        self.assertEqual({c.seed for c in small}, {0, 1, 2, 3, 4})
        self.assertEqual({c.seed for c in large}, {0, 1, 2})
        self.assertEqual(len(grid), 4 * 2 * (4 * 5 + 2 * 3) * 2)
        epochs = {(c.unfrozen_blocks, c.train_images): c.epochs for c in grid}
        self.assertEqual([epochs[(3, n)] for n in (100, 200, 400, 800, 1600, 3200)],
                         [90, 60, 30, 30, 30, 30])
        head_steps = [e * -(-n // 128) for (blocks, n), e in epochs.items() if blocks == 0]
        self.assertGreaterEqual(min(head_steps), 2000)

    def test_overrides_change_seeds_and_epochs_of_matching_cells(self):
        sweep = small_sweep(["a"], "t", overrides=(CellOverride((9,), seeds=(5,), epochs=7),))
        by_n = {n: [c for c in sweeps.cells(sweep) if c.train_images == n] for n in (6, 9)}
        self.assertEqual([(c.seed, c.epochs) for c in by_n[9]], [(5, 7)])
        self.assertEqual([(c.seed, c.epochs) for c in by_n[6]], [(0, 2), (1, 2)])

    def test_an_override_can_be_limited_to_some_unfrozen_blocks(self):
        sweep = small_sweep(["a"], "t", unfrozen_blocks=(0, 3), overrides=(
            CellOverride((9,), seeds=(5,)), CellOverride((9,), unfrozen_blocks=(0,), epochs=7)))
        settings = {(c.train_images, c.unfrozen_blocks): (c.seed, c.epochs)
                    for c in sweeps.cells(sweep)}
        self.assertEqual(settings[(9, 0)], (5, 7))   # both overrides apply
        self.assertEqual(settings[(9, 3)], (5, 2))   # only the one for any blocks
        self.assertEqual(settings[(6, 0)], (1, 2))   # neither

    def test_shards_cover_the_grid_exactly_once(self):
        grid = sweeps.cells(grid_registry.get("replication"))
        for count in (1, 3, 7):
            keys = [c.key for i in range(1, count + 1) for c in sweeps.shard_cells(grid, i, count)]
            self.assertCountEqual(keys, [c.key for c in grid])
        with self.assertRaisesRegex(UserError, "i/n"):
            sweeps.parse_shard("2-4")
        with self.assertRaisesRegex(UserError, "between 1 and n"):
            sweeps.parse_shard("5/4")

    def test_source_selection_keeps_only_those_cells_and_refuses_unknown_names(self):
        sweep = grid_registry.get("replication")
        grid = sweeps.cells(sweep)
        natural = sweeps.select_sources(grid, sweep, ["cifar10-resnet20-natural"])
        self.assertLen(natural, len(grid) // len(sweep.sources))
        self.assertEqual({c.source for c in natural}, {"cifar10-resnet20-natural"})
        self.assertEqual(sweeps.select_sources(grid, sweep, None), grid)
        with self.assertRaisesRegex(UserError, "not in sweep"):
            sweeps.select_sources(grid, sweep, ["no-such-source"])

    def test_unknown_config_lists_names(self):
        with self.assertRaisesRegex(UserError, "Unknown sweep config 'nope'.*replication"):
            grid_registry.get("nope")

    def test_malformed_override_fields_are_a_clear_error(self):
        for kwargs, message in (
                (dict(train_images=9), "train_images must be a tuple or list, got 9"),
                (dict(train_images=(9,), unfrozen_blocks=0), "unfrozen_blocks must be a tuple"),
                (dict(train_images=()), "train_images is empty"),
                (dict(train_images=(9,), seeds=()), "seeds is empty"),
                (dict(train_images=(9,), epochs=0), "epochs must be at least 1, got 0")):
            with self.subTest(**kwargs), self.assertRaisesRegex(UserError, message):
                CellOverride(**kwargs)
        with self.assertRaisesRegex(UserError, "seeds must be a tuple or list"):
            small_sweep(["a"], "t", seeds=3)

    def test_an_override_outside_the_grid_is_refused(self):
        # The grid has N in {6, 9} and blocks {0}: these overrides could never match a cell.
        with self.assertRaisesRegex(UserError, r"train_images value\(s\) \[7\] .* never apply"):
            small_sweep(["a"], "t", overrides=(CellOverride((6, 7), seeds=(5,)),))
        with self.assertRaisesRegex(UserError, r"unfrozen_blocks value\(s\) \[3\]"):
            small_sweep(["a"], "t", overrides=(CellOverride((9,), unfrozen_blocks=(3,),
                                                            epochs=7),))

    def test_invalid_recipe_assignment_is_refused(self):
        with self.assertRaisesRegex(UserError, "no field"):
            small_sweep(["a"], "t", recipe=("optim.lr=0.1",))

    def test_a_long_key_gets_a_file_name_under_the_limit_that_keeps_both_ends(self):
        # Issue 33, item 11: a target path of about 250 characters gave "File name too long".
        target = "/data/" + "/".join(["a-rather-long-folder-name"] * 10)
        keys = [sweeps.Cell("source", target, 100, 3, seed, 30) for seed in (0, 1)]
        names = [cell.file_name for cell in keys]
        self.assertLen(set(names), 2)
        for name in names:
            self.assertLessEqual(len(name.encode()), MAX_FILE_NAME_BYTES)
            self.assertStartsWith(name, "_data_a-rather-long")
        self.assertTrue(names[0].endswith("__n100__b3__s0__e30"), names[0])
        short = sweeps.Cell("cifar10-resnet20-natural", "mnist", 100, 3, 0, 6)
        self.assertEqual(short.file_name, "mnist__cifar10-resnet20-natural__n100__b3__s0__e6")

    def test_a_grid_beyond_the_cell_limit_is_refused_before_it_is_built(self):
        # 1,000 N x 10 blocks x 10 seeds x 2 sources: refused from the list sizes alone.
        wide = small_sweep(["a", "b"], "t", train_images=tuple(range(2, 1002)),
                           unfrozen_blocks=tuple(range(10)), seeds=tuple(range(10)))
        with self.assertRaisesRegex(UserError, "at least 200,000 cells, more than the 100,000"):
            sweeps.cells(wide)
        # Few (N, blocks) but many seeds: counted exactly, overrides included.
        seeds = small_sweep(["a"], "t", train_images=(6,), seeds=tuple(range(100_001)))
        with self.assertRaisesRegex(UserError, "at least 100,001 cells"):
            sweeps.cells(seeds)
        fewer = small_sweep(["a"], "t", train_images=(6,), seeds=tuple(range(100_001)),
                            overrides=(CellOverride((6,), seeds=(0, 1)),))
        self.assertLen(sweeps.cells(fewer), 2)


class GitCommitTest(tf.test.TestCase):

    def test_the_commit_is_read_once_per_process(self):
        runs.git_commit.cache_clear()
        first = runs.git_commit()
        if first == "unknown":
            self.skipTest("not run from a git checkout")
        # A later change of the checkout (here: git failing) does not change the record.
        with mock.patch("subprocess.run", side_effect=OSError("no git")):
            self.assertEqual(runs.git_commit(), first)
            runs.git_commit.cache_clear()
            self.assertEqual(runs.git_commit(), "unknown")
        runs.git_commit.cache_clear()

    def test_a_training_checkpoint_does_not_make_the_checkout_dirty(self):
        root = Path(self.get_temp_dir()) / "checkout"
        files = {"code.py": "x = 1\n", "saved_models/m/checkpoint/weights": "0",
                 "saved_models/m/logs/events": "0", "saved_models/m/history.csv": "epoch\n",
                 "saved_models/m/model.keras": "0"}
        for name, text in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(text)
        git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(root)]
        try:
            subprocess.run(git + ["init", "-q"], check=True)
            subprocess.run(git + ["add", "."], check=True)
            subprocess.run(git + ["commit", "-qm", "x"], check=True)
        except (OSError, subprocess.CalledProcessError):
            self.skipTest("git is not available")
        clean = runs.checkout_commit(root)
        self.assertRegex(clean, r"^[0-9a-f]{40}$")
        for name in ("saved_models/m/checkpoint/weights", "saved_models/m/logs/events",
                     "saved_models/m/history.csv"):
            (root / name).write_text("1")
        self.assertEqual(runs.checkout_commit(root), clean)
        for name in ("saved_models/m/model.keras", "code.py"):  # a finished model, the code
            (root / name).write_text("1")
            self.assertEqual(runs.checkout_commit(root), clean + "+dirty")
            subprocess.run(git + ["checkout", "-q", "--", name], check=True)


class RunSweepTest(tf.test.TestCase):

    def setUp(self):
        super().setUp()
        self.tmp = Path(self.get_temp_dir())
        self.sources = [make_source(self.tmp / f"src{i}", seed=i) for i in range(2)]
        self.target = str(make_image_folder(self.tmp / "images", classes=("a", "b", "c"),
                                            per_class=8, split=True))

    @pytest.mark.slow  # ~41 s on 2 cores
    def test_rows_columns_and_resume_without_duplicates(self):
        sweep = small_sweep(self.sources, self.target)
        results = self.tmp / "results"
        first = sweeps.run_sweep(sweep, results, max_runs=3)
        self.assertEqual((first["ran"], first["remaining"]), (3, 5))
        second = sweeps.run_sweep(sweep, results)
        self.assertEqual((second["finished_before"], second["ran"]), (3, 5))
        rows = sweeps.read_rows(results / "results.csv")
        self.assertCountEqual([r["run_key"] for r in rows], [c.key for c in sweeps.cells(sweep)])
        for column in ("source", "target", "train_images", "unfrozen_blocks", "epochs", "seed",
                       "test_accuracy", "test_accuracy_epoch_1", "test_accuracy_epoch_2",
                       "train_seconds", "git_commit"):
            self.assertIn(column, rows[0])
        self.assertBetween(float(rows[0]["test_accuracy"]), 0.0, 1.0)
        # A finished sweep runs nothing again.
        self.assertEqual(sweeps.run_sweep(sweep, results)["ran"], 0)

    def test_source_by_source_fills_one_table_and_counts_only_its_cells(self):
        sweep = small_sweep(self.sources, self.target, seeds=(0,))
        results = self.tmp / "by_source"
        first = sweeps.run_sweep(sweep, results, sources=[str(self.sources[0])])
        self.assertEqual((first["ran"], first["finished_before"], first["remaining"]),
                         (first["cells"], 0, 0))
        second = sweeps.run_sweep(sweep, results, sources=[str(self.sources[1])])
        self.assertEqual((second["ran"], second["finished_before"], second["remaining"]),
                         (second["cells"], 0, 0))
        keys = [row["run_key"] for row in sweeps.read_rows(results / "results.csv")]
        self.assertCountEqual(keys, [cell.key for cell in sweeps.cells(sweep)])

    def test_shards_write_separate_files(self):
        sweep = small_sweep(self.sources[:1], self.target, seeds=(0,))
        sweeps.run_sweep(sweep, self.tmp / "r", shard="1/2")
        sweeps.run_sweep(sweep, self.tmp / "r", shard="2/2")
        files = sorted(p.name for p in (self.tmp / "r").glob("results*.csv"))
        self.assertEqual(files, ["results.shard-1-of-2.csv", "results.shard-2-of-2.csv"])

    def test_a_new_shard_layout_skips_cells_finished_under_the_old_one(self):
        sweep = small_sweep(self.sources[:1], self.target, seeds=(0,))
        results = self.tmp / "relayout"
        self.assertEqual(sweeps.run_sweep(sweep, results, max_runs=1)["ran"], 1)
        shards = [sweeps.run_sweep(sweep, results, shard=f"{i}/2") for i in (1, 2)]
        self.assertEqual(sum(s["finished_before"] for s in shards), 1)
        self.assertEqual(sum(s["ran"] for s in shards), 1)
        self.assertEqual(sum(s["remaining"] for s in shards), 0)
        keys = [row["run_key"] for path in sorted(results.glob("results*.csv"))
                for row in sweeps.read_rows(path)]
        self.assertCountEqual(keys, [cell.key for cell in sweeps.cells(sweep)])
        # And back: the unsharded layout finds the shards' rows.
        self.assertEqual(sweeps.run_sweep(sweep, results)["finished_before"], 2)

    @pytest.mark.slow  # ~22 s on 2 cores
    def test_a_cell_user_error_is_counted_as_failed_and_the_sweep_goes_on(self):
        # A source not trained yet (its cells come first) and N=2 below the 3 classes.
        missing = self.tmp / "not-trained-yet"
        sweep = small_sweep([missing, self.sources[0]], self.target, train_images=(2, 6),
                            seeds=(0,))
        results = self.tmp / "cell_errors"
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            result = sweeps.run_sweep(sweep, results)
        self.assertEqual((result["ran"], result["failed"], result["remaining"]), (1, 3, 3))
        good = [cell.key for cell in sweeps.cells(sweep) if cell.source == str(self.sources[0])]
        self.assertEqual([row["run_key"] for row in sweeps.read_rows(results / "results.csv")],
                         good[1:])
        for cell in sweeps.cells(sweep):
            if cell.key != good[1]:
                self.assertIn(f"run {cell.key} failed: ", err.getvalue())
        self.assertIn("fewer than the 3 classes", err.getvalue())
        self.assertNotIn("Traceback", err.getvalue())  # both are UserErrors: just the sentence

    def test_errors_not_about_a_cell_stop_before_any_run(self):
        sweep = small_sweep(self.sources[:1], self.target, seeds=(0,))
        results = self.tmp / "refused"
        for kwargs, message in ((dict(max_runs=0), "--max-runs must be at least 1, got 0"),
                                (dict(max_runs=-1), "--max-runs must be at least 1, got -1"),
                                (dict(shard="3/2"), "between 1 and n"),
                                (dict(sources=["nope"]), "not in sweep")):
            with self.subTest(**kwargs), self.assertRaisesRegex(UserError, message):
                sweeps.run_sweep(sweep, results, **kwargs)
        self.assertFalse(results.exists())

    def test_a_data_problem_stops_the_sweep_once_before_any_run(self):
        sweep = small_sweep(self.sources[:1], str(self.tmp / "no-such-folder"), seeds=(0, 1))
        results = self.tmp / "no-data"
        with self.assertRaisesRegex(UserError, "Image folder .*no-such-folder.* does not exist"):
            sweeps.run_sweep(sweep, results, download=False)
        self.assertEqual(sweeps.read_rows(results / "results.csv"), [])

    def test_a_rerun_with_other_settings_is_refused_naming_the_fields(self):
        # Issue 33, item 1: the recipe and test_images changed, the rows and keys did not.
        sweep = small_sweep(self.sources[:1], self.target, train_images=(6,), seeds=(0,))
        results = self.tmp / "changed"
        self.assertEqual(sweeps.run_sweep(sweep, results)["ran"], 1)
        row, = sweeps.read_rows(results / "results.csv")
        cell, = sweeps.cells(sweep)
        record = runs.read_json(results / "runs" / cell.file_name / "sweep_cell.json")
        self.assertEqual((record["run_key"], record["config_hash"]),
                         (cell.key, row["config_hash"]))
        self.assertEqual(sweeps.run_sweep(sweep, results)["ran"], 0)  # the same grid: fine
        changed = small_sweep(self.sources[:1], self.target, train_images=(6, 9), seeds=(0,),
                              test_images=6,
                              recipe=sweep.recipe + ("optim.learning_rate=0.0001",))
        with self.assertRaisesRegex(
                UserError, r"holds rows of 1 cell\(s\) of sweep 'test' run with other settings "
                           r".*differs in data.test_images \(None there, 6 here\), "
                           r"optim.learning_rate \(0.1 there, 0.0001 here\)"):
            sweeps.run_sweep(changed, results)
        (results / "runs" / cell.file_name / "sweep_cell.json").unlink()
        with self.assertRaisesRegex(UserError, f"config_hash {row['config_hash']} there, "
                                               f"[0-9a-f]{{12}} here, and no sweep_cell.json"):
            sweeps.run_sweep(changed, results)
        self.assertLen(sweeps.read_rows(results / "results.csv"), 1)
        # A row written before fingerprints has none: its settings are unknown, not refused.
        runs.write_csv_atomic(results / "results.csv",
                              [{k: v for k, v in row.items() if k != "config_hash"}])
        self.assertEqual(sweeps.run_sweep(changed, results, max_runs=1)["ran"], 1)

    def test_a_run_directory_that_is_a_link_or_another_runs_is_refused(self):
        # Issue 33, item 2: a link to a finished run elsewhere lost its model and metrics.
        sweep = small_sweep(self.sources[:1], self.target, train_images=(6,), seeds=(0,))
        cell, = sweeps.cells(sweep)
        elsewhere = self.tmp / "finished-transfer-run"
        elsewhere.mkdir()
        files = {"model.keras": "model", "config.json": "{}",
                 "metrics.json": f'{{"run_dir": "{elsewhere}"}}'}
        for name, text in files.items():
            (elsewhere / name).write_text(text)
        results = self.tmp / "linked"
        (results / "runs").mkdir(parents=True)
        (results / "runs" / cell.file_name).symlink_to(elsewhere)
        with self.assertRaisesRegex(UserError, "is a symbolic link or resolves outside"):
            sweeps.run_sweep(sweep, results)
        (results / "runs" / cell.file_name).unlink()
        (results / "runs").rmdir()
        (results / "runs").symlink_to(self.tmp / "finished-transfer-run", True)
        with self.assertRaisesRegex(UserError, "runs is a symbolic link"):
            sweeps.run_sweep(sweep, results)
        (results / "runs").unlink()
        copied = results / "runs" / cell.file_name
        copied.mkdir(parents=True)
        (copied / "metrics.json").write_text(f'{{"run_dir": "{elsewhere}"}}')
        with self.assertRaisesRegex(UserError, "holds the run of .*finished-transfer-run, not "
                                               "a run of .* replaces only its own cell's runs"):
            sweeps.run_sweep(sweep, results)
        self.assertEqual({p.name: p.read_text() for p in elsewhere.iterdir()}, files)
        # An earlier try of this cell is replaced: marked, or (before markers) recorded there.
        (copied / "metrics.json").write_text(f'{{"run_dir": "{copied}"}}')
        self.assertEqual(run_dirs.check_run_dir(results, cell), copied)
        (copied / "metrics.json").unlink()
        (copied / "sweep_cell.json").write_text(f'{{"run_key": "{cell.key}x"}}')
        with self.assertRaisesRegex(UserError, "holds a sweep_cell.json of"):
            run_dirs.check_run_dir(results, cell)
        (copied / "sweep_cell.json").write_text(f'{{"run_key": "{cell.key}"}}')
        self.assertEqual(run_dirs.check_run_dir(results, cell), copied)
        # Checked again just before the run: a link made after the sweep started.
        (copied / "sweep_cell.json").unlink()
        copied.rmdir()
        copied.symlink_to(elsewhere)
        self.addCleanup(copied.unlink)  # TensorFlow's removal of the temp dir fails on links
        with self.assertRaisesRegex(UserError, "is a symbolic link"):
            run_dirs.check_run_dir(results, cell)

    def test_a_long_target_path_runs(self):
        # Issue 33, item 11: its run directory and claim names were too long for the disk.
        deep = self.tmp.joinpath(*["a-rather-long-folder-name-" + str(i) for i in range(9)])
        target = str(make_image_folder(deep, classes=("a", "b", "c"), per_class=8, split=True))
        self.assertGreater(len(target), 250)
        sweep = small_sweep(self.sources[:1], target, train_images=(6,), seeds=(0,), epochs=1)
        result = sweeps.run_sweep(sweep, self.tmp / "long")
        self.assertEqual((result["ran"], result["failed"]), (1, 0))

    @pytest.mark.slow  # ~97 s on 2 cores
    def test_killed_sweep_resumes_with_each_cell_exactly_once(self):
        results = self.tmp / "killed"
        script = textwrap.dedent(f"""
            import sys
            sys.path.insert(0, {str(REPO)!r})
            from tests.helpers import small_sweep
            from tftransfer.sweeps import runner as sweeps
            sweep = small_sweep({[str(s) for s in self.sources]!r}, {self.target!r},
                                train_images=(6, 9, 12), epochs=3)
            sweeps.run_sweep(sweep, {str(results)!r})
        """)
        process = subprocess.Popen([sys.executable, "-c", script], cwd=REPO,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   start_new_session=True)
        csv_file = results / "results.csv"
        deadline = time.time() + 240
        while time.time() < deadline and len(sweeps.read_rows(csv_file)) < 2:
            time.sleep(0.2)
        os.killpg(process.pid, signal.SIGKILL)  # kill -9, mid-way through the grid
        process.wait()
        killed_rows = len(sweeps.read_rows(csv_file))
        self.assertBetween(killed_rows, 2, 11)
        subprocess.run([sys.executable, "-c", script], cwd=REPO, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        keys = [r["run_key"] for r in sweeps.read_rows(csv_file)]
        self.assertLen(keys, 12)
        self.assertLen(set(keys), 12)


def test_rows_record_the_run_dir_relative_to_the_cwd_or_the_checkout(tmp_path, monkeypatch):
    """A sweep run with an absolute --results, or from another worktree into a checkout,
    records run_dir as the rows written from the checkout itself do (results/...)."""
    checkout, elsewhere = tmp_path / "checkout", tmp_path / "worktree"
    (checkout / ".git").mkdir(parents=True)
    elsewhere.mkdir()
    run_dir = checkout / "results" / "grid" / "runs" / "cell"
    run_dir.mkdir(parents=True)
    monkeypatch.chdir(elsewhere)
    assert runs.checkout_relative(run_dir) == "results/grid/runs/cell"
    monkeypatch.chdir(checkout / ".git")  # not above the run: the checkout decides
    assert runs.checkout_relative(run_dir) == "results/grid/runs/cell"
    monkeypatch.chdir(checkout / "results")  # the same string from anywhere in the checkout
    assert runs.checkout_relative(run_dir) == "results/grid/runs/cell"
    assert runs.checkout_relative(Path("grid/runs/cell")) == "results/grid/runs/cell"
    assert runs.checkout_relative(checkout / "results" / ".." / "results" / "grid" / "runs"
                                   / "cell") == "results/grid/runs/cell"
    monkeypatch.chdir(elsewhere)
    assert runs.checkout_relative(Path("relative/runs/cell")) == "relative/runs/cell"
    outside = tmp_path / "plain" / "runs" / "cell"  # no checkout above it, not under the cwd
    assert runs.checkout_relative(outside) == str(outside)
