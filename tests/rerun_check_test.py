"""Tests of tftransfer.sweeps.rerun_check: the sample of committed rows, the bitwise comparison,
rerun.csv's resume and the README, with a stub in place of fine_tune (nothing is trained)."""

from __future__ import annotations

import contextlib
import io
import shutil
import tempfile
import unittest
from pathlib import Path
from unittest import mock

import numpy as np

from tftransfer.errors import UserError
from tftransfer.sweeps import registry
from tftransfer.sweeps import rerun_check as rc
from tftransfer.sweeps.cells import cells


def committed_sample(rows=24, seed=0, grids=rc.DEFAULT_GRIDS):
    args = rc.build_parser().parse_args(["--rows", str(rows), "--seed", str(seed),
                                         "--grids", *grids])
    return rc.prepare(args)


def fake_row(grid, key, attack="none", seconds="10", accuracy="0.5", commit="abc"):
    return {"sweep": grid, "run_key": key, "source_attack": attack, "train_seconds": seconds,
            "test_accuracy": accuracy, "git_commit": commit}


def nudged(text: str) -> float:
    """The float64 next to ``text``'s value: differs in the last bit."""
    return float(np.nextafter(float(text), 2.0))


class SamplingTest(unittest.TestCase):
    """The sample drawn from the rows committed at HEAD of this checkout."""

    @classmethod
    def setUpClass(cls):
        cls.grids, cls.candidates, cls.sample = committed_sample()

    def test_the_requested_number_of_distinct_rows(self):
        self.assertEqual(len(self.sample), 24)
        self.assertEqual(len({(r["sweep"], r["run_key"]) for r in self.sample}), 24)

    def test_deterministic_for_a_seed_and_different_for_another(self):
        keys = [(r["sweep"], r["run_key"]) for r in self.sample]
        self.assertEqual(keys, [(r["sweep"], r["run_key"]) for r in committed_sample()[2]])
        self.assertNotEqual(keys, [(r["sweep"], r["run_key"])
                                   for r in committed_sample(seed=1)[2]])

    def test_covers_both_source_kinds_and_every_grid_with_committed_rows(self):
        self.assertEqual({rc.source_kind(r) for r in self.sample}, {"natural", "robust"})
        sampled = {r["sweep"] for r in self.sample}
        self.assertGreaterEqual(len(sampled), 5)
        self.assertEqual(sampled, set(self.grids))
        self.assertIn("replication", sampled)
        self.assertTrue(any(g.startswith("replication-paper-ablation-") for g in sampled))
        counts = rc.sample_counts(self.sample, self.grids)
        self.assertEqual(sum(c["rows"] for c in counts), 24)
        for entry in counts:
            self.assertEqual(entry["natural"] + entry["robust"], entry["rows"])

    def test_every_sampled_row_is_a_cell_of_its_grid(self):
        for row in self.sample:
            keys = {cell.key for cell in cells(registry.get(row["sweep"]))}
            self.assertIn(row["run_key"], keys)

    def test_prefers_the_cheaper_half_of_each_stratum(self):
        for row in self.sample:
            stratum = [r for r in self.candidates["rows"] if r["sweep"] == row["sweep"]
                       and rc.source_kind(r) == rc.source_kind(row)]
            median = np.median([float(r["train_seconds"]) for r in stratum])
            self.assertLessEqual(float(row["train_seconds"]), median, row["run_key"])

    def test_two_rows_cover_two_grids_and_both_kinds(self):
        two = rc.sample_rows(self.candidates["rows"], 2, 0, self.grids)
        self.assertEqual(len({r["sweep"] for r in two}), 2)
        self.assertEqual({rc.source_kind(r) for r in two}, {"natural", "robust"})


class SyntheticSamplingTest(unittest.TestCase):

    ROWS = ([fake_row("a", f"k{i}", seconds=str(i)) for i in range(6)]
            + [fake_row("a", f"r{i}", attack="l2", seconds=str(i)) for i in range(6)]
            + [fake_row("b", f"k{i}", attack="l2", seconds=str(10 - i)) for i in range(4)])

    def test_cheap_rows_first_then_the_others(self):
        sample = rc.sample_rows(self.ROWS, 16, 3, ["a", "b"])
        self.assertEqual(len(sample), 16)
        # Three strata: the first round takes one (cheap) row of each.
        self.assertEqual({(r["sweep"], rc.source_kind(r)) for r in sample[:3]},
                         {("a", "natural"), ("a", "robust"), ("b", "robust")})
        natural_a = [int(r["train_seconds"]) for r in sample if r["sweep"] == "a"
                     and rc.source_kind(r) == "natural"]
        self.assertEqual(set(natural_a[:3]), {0, 1, 2})  # at most the median (2.5)

    def test_bad_row_counts_are_user_errors(self):
        with self.assertRaisesRegex(UserError, "at least 1"):
            rc.sample_rows(self.ROWS, 0, 0, ["a", "b"])
        with self.assertRaisesRegex(UserError, "only 16"):
            rc.sample_rows(self.ROWS, 17, 0, ["a", "b"])

    def test_a_grid_without_rows_is_reported_missing_and_a_stale_key_left_out(self):
        rows = [fake_row("a", "k1"), fake_row("a", "gone"), fake_row("a", "k1", accuracy="0.9")]
        found = rc.candidate_rows(rows, ["a", "b"], {"a": {"k1"}, "b": {"x"}})
        self.assertEqual([r["test_accuracy"] for r in found["rows"]], ["0.5"])  # the first
        self.assertEqual(found["missing"], ["b"])
        self.assertEqual(found["stale"], {"a": 1})

    def test_unknown_grid_pattern(self):
        with self.assertRaisesRegex(UserError, "no registered grid"):
            rc.matching_grids(["nonesuch*"], registry.names())
        self.assertEqual(rc.matching_grids(["replication-paper-ablation-*"], registry.names()),
                         ["replication-paper-ablation-bn", "replication-paper-ablation-epochs",
                          "replication-paper-ablation-norm", "replication-paper-ablation-subset"])


class ComparisonTest(unittest.TestCase):

    def test_bitwise_equal_to_the_float32_as_written(self):
        value = float(np.float32(0.9511))
        self.assertEqual(repr(value), "0.9510999917984009")
        self.assertTrue(rc.bitwise_equal("0.9510999917984009", value))
        self.assertTrue(rc.bitwise_equal("0.9510999917984009", np.float32(0.9511)))
        self.assertFalse(rc.bitwise_equal("0.9510999917984009", nudged("0.9510999917984009")))
        self.assertFalse(rc.bitwise_equal("0.9510999917984009", float(np.float32(0.9512))))

    def test_comparison_row(self):
        row = fake_row("a", "k", accuracy="0.5", commit="c0")
        same = rc.comparison_row(row, 0.5, "c1", 3.21)
        self.assertEqual((same["bitwise_equal"], same["abs_difference"], same["seconds"]),
                         ("yes", "0.0", "3.2"))
        other = rc.comparison_row(row, 0.5004, "c1", 1)
        self.assertEqual(other["bitwise_equal"], "no")
        self.assertAlmostEqual(float(other["abs_difference"]), 0.0004)
        self.assertEqual((other["committed_commit"], other["rerun_commit"]), ("c0", "c1"))


class RerunTest(unittest.TestCase):
    """``rerun_rows`` and ``main`` with a stub in place of fine_tune."""

    @classmethod
    def setUpClass(cls):
        cls.grids, cls.candidates, full = committed_sample(rows=4)
        cls.sample = full[:3]
        cls.wrong = (cls.sample[1]["sweep"], cls.sample[1]["run_key"])  # its rerun differs

    def setUp(self):
        self.out = Path(tempfile.mkdtemp(prefix="rerun_check_test_"))
        self.addCleanup(shutil.rmtree, self.out, ignore_errors=True)
        self.calls = []

    def stub(self, fail=()):
        committed = {(r["sweep"], r["run_key"]): r["test_accuracy"] for r in self.sample}
        by_dir = {}
        for row in self.sample:
            cell = {c.key: c for c in cells(registry.get(row["sweep"]))}[row["run_key"]]
            by_dir[f"{row['sweep']}/runs/{cell.file_name}"] = (row["sweep"], row["run_key"])

        def fine_tune(cfg, cache=None, save_model=True, verbose=True):
            which = next(v for k, v in by_dir.items() if cfg.out.endswith(k))
            self.calls.append((which, cfg, cache, save_model))
            if which in fail:
                raise RuntimeError("boom")
            accuracy = committed[which]
            return {"test_accuracy": nudged(accuracy) if which == self.wrong
                    else float(accuracy)}
        return fine_tune

    def rerun(self, **kwargs):
        with contextlib.redirect_stderr(io.StringIO()):
            return rc.rerun_rows(self.sample, self.out, fine_tune=self.stub(**kwargs),
                                 cache=mock.MagicMock(), progress=False)

    def test_reruns_each_row_with_its_cells_config_and_reports_the_differing_one(self):
        result = self.rerun()
        self.assertEqual((result["ran"], result["failed"], result["done_before"]), (3, [], 0))
        caches = {id(call[2]) for call in self.calls}
        self.assertEqual(len(caches), 1)  # one RunCache for all runs
        for (grid, key), cfg, _, save_model in self.calls:
            cell = {c.key: c for c in cells(registry.get(grid))}[key]
            self.assertEqual((cfg.source, cfg.target, cfg.seed, cfg.epochs,
                              cfg.unfrozen_blocks, cfg.data.train_images),
                             (cell.source, cell.target, cell.seed, cell.epochs,
                              cell.unfrozen_blocks, cell.train_images))
            self.assertFalse(save_model)
        lines = rc.read_reruns(self.out / rc.RERUN_FILE)
        self.assertEqual(len(lines), 3)
        self.assertEqual(tuple(lines[0]), rc.COLUMNS)
        verdict = {(r["grid"], r["key"]): r["bitwise_equal"] for r in lines}
        self.assertEqual(verdict[self.wrong], "no")
        self.assertEqual(sorted(verdict.values()), ["no", "yes", "yes"])
        for line in lines:
            committed = next(r for r in self.sample if r["run_key"] == line["key"]
                             and r["sweep"] == line["grid"])
            self.assertEqual(line["committed_accuracy"], committed["test_accuracy"])
            self.assertEqual(line["committed_commit"], committed["git_commit"])
            self.assertEqual(line["rerun_commit"], result["rerun_commit"])

        text = rc.readme("python -m x --rows 3", self.sample, lines, self.grids, self.candidates)
        self.assertIn("python -m x --rows 3", text)
        self.assertIn("3 of 3 rows rerun: 2 bitwise equal, 1 differ", text)
        differing = [line for line in text.splitlines() if self.wrong[1] in line]
        self.assertEqual(len(differing), 1)
        wrong_row = next(r for r in self.sample if (r["sweep"], r["run_key"]) == self.wrong)
        self.assertIn(wrong_row["git_commit"], differing[0])

    def test_resume_skips_the_rows_already_in_rerun_csv(self):
        self.rerun()
        before = (self.out / rc.RERUN_FILE).read_text()
        self.calls.clear()
        result = self.rerun()
        self.assertEqual(self.calls, [])
        self.assertEqual((result["ran"], result["done_before"]), (0, 3))
        self.assertEqual((self.out / rc.RERUN_FILE).read_text(), before)

    def test_a_failed_run_is_not_recorded_and_the_next_call_retries_only_it(self):
        first = (self.sample[0]["sweep"], self.sample[0]["run_key"])
        result = self.rerun(fail=(first,))
        self.assertEqual((result["ran"], len(result["failed"])), (2, 1))
        self.assertEqual(len(rc.read_reruns(self.out / rc.RERUN_FILE)), 2)
        text = rc.readme("cmd", self.sample, rc.read_reruns(self.out / rc.RERUN_FILE),
                         self.grids, self.candidates)
        self.assertIn("1 sampled rows are not rerun yet", text)
        self.calls.clear()
        result = self.rerun()
        self.assertEqual([call[0] for call in self.calls], [first])
        self.assertEqual((result["ran"], result["done_before"]), (1, 2))
        self.assertEqual(len(rc.read_reruns(self.out / rc.RERUN_FILE)), 3)

    def main(self, *argv):
        stdout, stderr = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                code = rc.main(list(argv))
            except SystemExit as exit_:  # argparse's errors
                code = exit_.code
        return code, stdout.getvalue(), stderr.getvalue()

    def test_main_exits_0_when_rows_differ_and_writes_the_readme(self):
        def stub(cfg, cache=None, save_model=True, verbose=True):
            return {"test_accuracy": 0.123}  # differs from every committed row
        with mock.patch.object(rc, "_real_fine_tune", return_value=stub), \
                mock.patch.object(rc, "_new_cache", return_value=mock.MagicMock()):
            code, stdout, _ = self.main("--rows", "2", "--seed", "0", "--out", str(self.out))
        self.assertEqual(code, 0)
        readme = (self.out / rc.README_FILE).read_text()
        self.assertIn(f"python -m tftransfer.sweeps.rerun_check --rows 2 --seed 0 --out "
                      f"{self.out}", readme)
        self.assertIn("2 of 2 rows rerun: 0 bitwise equal, 2 differ", readme)
        self.assertEqual(stdout.strip(), readme.strip())
        self.assertEqual(len(rc.read_reruns(self.out / rc.RERUN_FILE)), 2)

    def test_bad_arguments_exit_2_with_one_sentence(self):
        for argv in (["--rows", "0"], ["--rows", "100000"], ["--grids", "nonesuch"],
                     ["--rows", "many"], ["--bogus"]):
            code, _, stderr = self.main(*argv, "--out", str(self.out))
            self.assertEqual(code, 2, argv)
            self.assertEqual(len(stderr.strip().splitlines()), 1, (argv, stderr))
            self.assertTrue(stderr.startswith("rerun_check: error: "), stderr)
        self.assertFalse((self.out / rc.RERUN_FILE).exists())


if __name__ == "__main__":
    unittest.main()
