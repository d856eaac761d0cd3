"""Tests of tftransfer.report.stats (and the ``report`` command built on it) on synthetic tables."""

import argparse
import contextlib
import io
import json
import math
import subprocess
import sys
import tempfile
import unittest
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from tests.helpers import make_row

from tftransfer.report import efficiency
from tftransfer.report import significance, stats
from tftransfer.report import summary as summary_markdown
from tftransfer.commands import report
from tftransfer.errors import UserError

NATURAL, ROBUST = "natural", "robust_l2"


def table(rows):
    return stats.validate_results(pd.DataFrame(rows))


class IntervalTest(unittest.TestCase):

    def test_half_width_matches_scipy_t_interval(self):
        values = np.array([0.61, 0.65, 0.58, 0.70, 0.66])
        low, high = scipy_stats.t.interval(0.95, df=len(values) - 1, loc=values.mean(),
                                           scale=scipy_stats.sem(values))
        half = stats.t_half_width(values.std(ddof=1), len(values))
        self.assertAlmostEqual(half, (high - low) / 2, places=12)

    def test_single_run_has_no_interval(self):
        self.assertTrue(math.isnan(stats.t_half_width(0.0, 1)))

    def test_summarize_per_cell(self):
        accuracies = [0.5, 0.55, 0.62]
        rows = [make_row(NATURAL, seed, acc) for seed, acc in enumerate(accuracies)]
        rows.append(make_row(NATURAL, 0, 0.9, n=400))
        summary = stats.summarize(table(rows))
        self.assertEqual(len(summary), 2)
        cell = summary.loc[summary["train_images"] == 100].iloc[0]
        low, high = scipy_stats.t.interval(0.95, df=2, loc=np.mean(accuracies),
                                           scale=scipy_stats.sem(accuracies))
        self.assertAlmostEqual(cell["accuracy_mean"], np.mean(accuracies))
        self.assertAlmostEqual(cell["accuracy_ci_low"], low)
        self.assertAlmostEqual(cell["accuracy_ci_high"], high)
        self.assertEqual(cell["n_runs"], 3)
        single = summary.loc[summary["train_images"] == 400].iloc[0]
        self.assertTrue(math.isnan(single["accuracy_ci_half"]))

    def test_epochs_is_part_of_the_cell(self):
        rows = [make_row(NATURAL, 0, 0.5, epochs=3), make_row(NATURAL, 0, 0.7, epochs=9)]
        self.assertEqual(len(stats.summarize(table(rows))), 2)


class PairedDifferenceTest(unittest.TestCase):

    def setUp(self):
        # A large seed effect shared by both sources: pairing removes it, unpairing cannot.
        self.natural = {0: 0.50, 1: 0.60, 2: 0.70, 3: 0.80, 9: 0.65}
        self.robust = {0: 0.56, 1: 0.64, 2: 0.77, 3: 0.85, 7: 0.99}
        rows = [make_row(NATURAL, s, a) for s, a in self.natural.items()]
        rows += [make_row(ROBUST, s, a) for s, a in self.robust.items()]
        self.table = table(rows)

    def test_pairs_by_seed_and_excludes_unpaired_seeds(self):
        with self.assertWarns(stats.DataWarning):
            differences = stats.paired_differences(self.table, NATURAL)
        row = differences.iloc[0]
        self.assertEqual(len(differences), 1)
        self.assertEqual(row["source"], ROBUST)
        self.assertEqual(row["n_pairs"], 4)
        self.assertEqual(row["n_unpaired_seeds"], 2)
        seeds = [0, 1, 2, 3]
        robust = [self.robust[s] for s in seeds]
        natural = [self.natural[s] for s in seeds]
        expected = scipy_stats.ttest_rel(robust, natural).confidence_interval(0.95)
        self.assertAlmostEqual(row["difference_mean"], np.mean(robust) - np.mean(natural))
        self.assertAlmostEqual(row["difference_ci_low"], expected.low)
        self.assertAlmostEqual(row["difference_ci_high"], expected.high)
        self.assertAlmostEqual(row["baseline_mean"], np.mean(natural))

    def test_paired_interval_is_narrower_than_unpaired(self):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", stats.DataWarning)
            row = stats.paired_differences(self.table, NATURAL).iloc[0]
        seeds = [0, 1, 2, 3]
        unpaired = scipy_stats.ttest_ind([self.robust[s] for s in seeds],
                                         [self.natural[s] for s in seeds]).confidence_interval()
        self.assertLess(row["difference_ci_half"], (unpaired.high - unpaired.low) / 2 / 5)

    def test_t_test_and_holm_columns(self):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", stats.DataWarning)
            row = stats.paired_differences(self.table, NATURAL).iloc[0]
        seeds = [0, 1, 2, 3]
        expected = scipy_stats.ttest_rel([self.robust[s] for s in seeds],
                                         [self.natural[s] for s in seeds])
        self.assertEqual(row["difference_df"], 3)
        self.assertAlmostEqual(row["difference_p"], expected.pvalue)
        self.assertAlmostEqual(row["difference_p_holm"], expected.pvalue)  # a family of one

    def test_counts_clear_differences_against_chance_and_holm(self):
        rows = [make_row(NATURAL, s, 0.5 + 0.01 * s, n=n) for n in (100, 200) for s in range(4)]
        rows += [make_row(ROBUST, s, 0.6 + 0.01 * s + 0.002 * (s % 2), n=100) for s in range(4)]
        rows += [make_row(ROBUST, s, 0.5 + 0.01 * s + 0.03 * (-1) ** s, n=200) for s in range(4)]
        differences = stats.paired_differences(table(rows), NATURAL)
        text = summary_markdown.multiple_comparisons_text(differences)
        self.assertIn("1 of the 2 differences with an interval are clear of zero", text)
        self.assertIn("about 0.1 would be by chance", text)
        self.assertIn("1 remain clear after Holm's correction over all 2", text)

    def test_holm_adjustment(self):
        adjusted = significance.holm([0.01, 0.04, np.nan, 0.03])
        self.assertTrue(np.allclose(adjusted[[0, 1, 3]], [0.03, 0.06, 0.06]))
        self.assertTrue(np.isnan(adjusted[2]))

    def test_flags_pairs_whose_runs_come_from_different_commits(self):
        rows = [make_row(NATURAL, 0, 0.5), make_row(ROBUST, 0, 0.6),
                make_row(NATURAL, 1, 0.5), make_row(ROBUST, 1, 0.6),
                make_row(NATURAL, 2, 0.5), make_row(ROBUST, 2, 0.6)]
        rows[3]["git_commit"] = "def"          # seed 1: robust at another commit
        rows[4]["git_commit"] = "abc+dirty"    # seed 2: natural from uncommitted code
        mixed = stats.mixed_commit_pairs(table(rows), NATURAL)
        self.assertEqual(sorted(mixed["seed"]), [1, 2])
        self.assertEqual(list(mixed.loc[mixed["seed"] == 1, "source_commit"]), ["def"])
        with self.assertWarnsRegex(stats.DataWarning, r"2 seed pair\(s\).*1 include.*\+dirty"):
            stats.paired_differences(table(rows), NATURAL)

    def test_pairs_from_one_clean_commit_are_not_flagged(self):
        rows = [make_row(NATURAL, s, 0.5) for s in range(3)] + [make_row(ROBUST, s, 0.6)
                                                              for s in range(3)]
        self.assertTrue(stats.mixed_commit_pairs(table(rows), NATURAL).empty)
        with warnings.catch_warnings():
            warnings.simplefilter("error", stats.DataWarning)
            stats.paired_differences(table(rows), NATURAL)

    def test_baseline_choice(self):
        self.assertEqual(stats.resolve_baseline(self.table), NATURAL)
        two = table([make_row(NATURAL, 0, 0.5), make_row("natural_b", 0, 0.6),
                     make_row(ROBUST, 0, 0.7)])
        with self.assertRaisesRegex(UserError, "--baseline"):
            stats.resolve_baseline(two)
        self.assertEqual(stats.resolve_baseline(two, "natural_b"), "natural_b")
        with self.assertRaisesRegex(UserError, "'nope'.*natural_b"):
            stats.resolve_baseline(two, "nope")
        with self.assertRaisesRegex(UserError, "no natural source"):
            stats.resolve_baseline(table([make_row(ROBUST, 0, 0.7)]))


class TrendTest(unittest.TestCase):

    @staticmethod
    def differences(per_n):
        # Per N: robust at natural + difference, on three seeds with seed-to-seed noise that
        # the pairing removes; a second target keeps the groups apart.
        rows = []
        for target, shift in (("cifar10", 0.0), ("mnist", 0.1)):
            for n, difference in per_n.items():
                for seed, noise in enumerate((-0.02, 0.0, 0.02)):
                    base = 0.5 + shift + noise
                    rows.append(make_row(NATURAL, seed, base, n=n, target=target))
                    rows.append(make_row(ROBUST, seed, base + difference, n=n, target=target))
        return stats.paired_differences(table(rows), NATURAL)

    def test_a_difference_linear_in_log_n_gives_its_slope_exactly(self):
        per_n = {100 * 2 ** k: 0.10 - 0.02 * k for k in range(5)}  # -2 points per doubling
        trend = stats.difference_trend(self.differences(per_n))
        self.assertEqual(list(trend["target"]), ["cifar10", "mnist"])
        for row in trend.itertuples():
            self.assertAlmostEqual(row.slope_per_doubling, -0.02, places=9)
            self.assertAlmostEqual(row.slope_ci_half, 0.0, places=7)
            self.assertEqual((row.smallest_n, row.largest_n, row.n_sizes), (100, 1600, 5))
            self.assertEqual(row.slope_df, 3)  # 5 sizes - 2
            self.assertAlmostEqual(row.difference_at_smallest_n, 0.10, places=9)
        self.assertIn("(-2.0 to -2.0, 3) |", summary_markdown.trend_table_markdown(trend))

    def test_scatter_about_the_line_widens_the_interval(self):
        shrinking = {100: 0.10, 200: 0.09, 400: 0.05, 800: 0.04, 1600: 0.01}
        flat = {100: 0.02, 200: -0.01, 400: 0.03, 800: 0.00, 1600: 0.02}
        shrink = stats.difference_trend(self.differences(shrinking)).iloc[0]
        self.assertLess(shrink.slope_ci_high, 0)  # clearly shrinking
        level = stats.difference_trend(self.differences(flat)).iloc[0]
        self.assertLess(level.slope_ci_low, 0)
        self.assertGreater(level.slope_ci_high, 0)  # no trend to speak of

    def test_an_epoch_schedule_over_n_keeps_one_curve(self):
        # More epochs at small N (one budget per cell) is a schedule, not a second curve.
        per_n = {100 * 2 ** k: 0.10 - 0.02 * k for k in range(5)}
        differences = self.differences(per_n)
        differences["epochs"] = differences["train_images"].map(
            {100: 90, 200: 60, 400: 30, 800: 30, 1600: 30})
        self.assertFalse(stats.epochs_is_a_variable(differences))
        trend = stats.difference_trend(differences)
        self.assertEqual(list(trend["n_sizes"]), [5, 5])
        self.assertAlmostEqual(trend.iloc[0].slope_per_doubling, -0.02, places=9)
        self.assertIn("| 100 (90 epochs) |", summary_markdown.summary_tables_markdown(differences))

    def test_two_epoch_budgets_for_the_same_cells_are_two_curves(self):
        per_n = {100 * 2 ** k: 0.10 - 0.02 * k for k in range(3)}
        longer = self.differences(per_n).assign(epochs=30)
        differences = pd.concat([self.differences(per_n), longer], ignore_index=True)
        self.assertTrue(stats.epochs_is_a_variable(differences))
        trend = stats.difference_trend(differences)
        self.assertEqual(sorted(trend["epochs"]), [3, 3, 30, 30])
        self.assertEqual(set(trend["n_sizes"]), {3})

    def test_two_sizes_give_a_slope_without_interval(self):
        trend = stats.difference_trend(self.differences({100: 0.1, 400: 0.0}))
        self.assertAlmostEqual(trend.iloc[0].slope_per_doubling, -0.05, places=9)
        self.assertTrue(math.isnan(trend.iloc[0].slope_ci_half))
        self.assertTrue(math.isnan(trend.iloc[0].slope_df))
        self.assertIn("| cifar10 | robust_l2 | 0 | +10.0 (N = 100) | +0.0 (N = 400) | -5.0 |",
                      summary_markdown.trend_table_markdown(trend))


class EfficiencyTest(unittest.TestCase):

    @staticmethod
    def summary(factor, sizes=(100, 200, 400, 800, 1600)):
        # Accuracy linear in log N; the robust source at N is as good as natural at factor*N.
        def natural(n):
            return 0.2 + 0.05 * math.log2(n / 100)
        rows = []
        for n in sizes:
            rows.append(make_row(NATURAL, 0, natural(n), n=n))
            rows.append(make_row(ROBUST, 0, natural(factor * n), n=n))
        return stats.summarize(table(rows))

    def test_ratio_four_on_grid_points(self):
        ratios = efficiency.data_efficiency(self.summary(4), NATURAL).set_index("train_images")
        for n in (400, 800, 1600):
            self.assertEqual(ratios.loc[n, "status"], "ok")
            self.assertAlmostEqual(ratios.loc[n, "ratio"], 4.0, places=6)
        self.assertEqual(ratios.loc[200, "status"], "below_range")
        self.assertTrue(math.isnan(ratios.loc[200, "ratio"]))
        self.assertEqual(ratios.loc[200, "ratio_text"], ">2.0")

    def test_ratio_three_between_grid_points(self):
        ratios = efficiency.data_efficiency(self.summary(3), NATURAL).set_index("train_images")
        for n in (400, 800, 1600):
            self.assertAlmostEqual(ratios.loc[n, "ratio"], 3.0, places=6)
        self.assertEqual(ratios.loc[400, "ratio_text"], "3.0")

    def test_ratio_with_an_epoch_schedule_over_n(self):
        summary = self.summary(4)
        summary["epochs"] = summary["train_images"].map(lambda n: 3000 // n)
        ratios = efficiency.data_efficiency(summary, NATURAL).set_index("train_images")
        self.assertAlmostEqual(ratios.loc[800, "ratio"], 4.0, places=6)

    def test_not_reached(self):
        ratios = efficiency.data_efficiency(self.summary(0.25), NATURAL).set_index("train_images")
        self.assertEqual(ratios.loc[1600, "status"], "not_reached")
        self.assertEqual(ratios.loc[1600, "ratio_text"], "<1.0")
        self.assertAlmostEqual(ratios.loc[400, "ratio"], 0.25, places=6)

    def test_images_needed_interpolates_in_log_n(self):
        needed, status = efficiency.images_needed([100, 400], [0.2, 0.4], 0.3)
        self.assertEqual(status, "ok")
        self.assertAlmostEqual(needed, 200.0)


class EpochSpeedupTest(unittest.TestCase):

    def test_first_epoch_reaching_natural_final_accuracy(self):
        rows = [make_row(NATURAL, s, 0.6, curve=[0.3, 0.4, 0.5, 0.6]) for s in (0, 1)]
        rows += [make_row(ROBUST, s, 0.7, curve=[0.45, 0.61, 0.65, 0.7]) for s in (0, 1)]
        rows.append(make_row(ROBUST, 0, 0.5, n=400, curve=[0.3, 0.4, 0.45, 0.5]))
        rows.append(make_row(NATURAL, 0, 0.6, n=400, curve=[0.3, 0.4, 0.5, 0.6]))
        speedup = efficiency.epochs_speedup(table(rows), NATURAL).set_index("train_images")
        self.assertEqual(speedup.loc[100, "baseline_epoch"], 4)
        self.assertEqual(speedup.loc[100, "source_epoch"], 2)
        self.assertAlmostEqual(speedup.loc[100, "speedup"], 2.0)
        self.assertEqual(speedup.loc[400, "status"], "not_reached")

    def test_curves_skip_missing_epochs(self):
        rows = [make_row(NATURAL, 0, 0.5, curve=[0.3, 0.5]),
                make_row(NATURAL, 1, 0.5, curve=[0.3, 0.5, 0.6])]
        curves = stats.epoch_curves(table(rows)).set_index("epoch")
        self.assertEqual(curves.loc[1, "accuracy_n"], 2)
        self.assertEqual(curves.loc[3, "accuracy_n"], 1)


class ReadResultsTest(unittest.TestCase):

    def setUp(self):
        self.dir = Path(tempfile.mkdtemp())

    def write(self, name, rows):
        pd.DataFrame(rows).to_csv(self.dir / name, index=False)

    def test_merges_shards_and_drops_duplicate_run_keys(self):
        self.write("results.shard-1-of-2.csv", [make_row(NATURAL, 0, 0.5)])
        self.write("results.shard-2-of-2.csv", [make_row(NATURAL, 0, 0.5),
                                                make_row(ROBUST, 0, 0.6, curve=[0.6])])
        (self.dir / "other.csv").write_text("not,a,results,file\n")
        with self.assertWarnsRegex(stats.DataWarning, "1 duplicate"):
            merged = stats.read_results(self.dir)
        self.assertEqual(sorted(merged["source"]), [NATURAL, ROBUST])
        self.assertEqual(merged["train_images"].dtype, np.int64)
        self.assertIn("learning_rate", merged.columns)

    def test_conflicting_duplicates_are_named(self):
        self.write("results.shard-1-of-2.csv", [make_row(NATURAL, 0, 0.5)])
        self.write("results.shard-2-of-2.csv", [make_row(NATURAL, 0, 0.7)])
        with self.assertWarnsRegex(stats.DataWarning, "differing values"):
            merged = stats.read_results(self.dir)
        self.assertEqual(merged["test_accuracy"].tolist(), [0.5])

    def test_missing_directory_files_and_columns(self):
        with self.assertRaisesRegex(UserError, "does not exist"):
            stats.read_results(self.dir / "absent")
        with self.assertRaisesRegex(UserError, "no results"):
            stats.read_results(self.dir)
        self.write("results.csv", [{"run_key": "a", "source": "s", "test_accuracy": 0.5}])
        with self.assertRaisesRegex(UserError, "source_attack, target, train_images"):
            stats.read_results(self.dir)

    def test_bad_values(self):
        self.write("results.csv", [make_row(NATURAL, 0, 68.7)])
        with self.assertRaisesRegex(UserError, "fraction"):
            stats.read_results(self.dir)
        row = make_row(NATURAL, 0, 0.5)
        row["train_images"] = "many"
        self.write("results.csv", [row])
        with self.assertRaisesRegex(UserError, "'train_images'.*'many'"):
            stats.read_results(self.dir)

    def test_one_cell_with_rows_of_different_settings_is_refused(self):
        # Issue 33, item 1: a rerun with another recipe averaged 0.535 and 0.060 into one cell.
        rows = [dict(make_row(NATURAL, seed, 0.5), config_hash=value)
                for seed, value in enumerate(["1a2b3c4d5e6f", "1a2b3c4d5e6f", "", "9f8e7d6c5b4a"])]
        self.write("results.csv", rows)
        with self.assertRaisesRegex(UserError, r"the runs of the cell target cifar10, source "
                                               r"natural, train_images 100, unfrozen_blocks 0, "
                                               r"epochs 3 were made with different settings "
                                               r"\(config_hash 1a2b3c4d5e6f, 9f8e7d6c5b4a"):
            stats.read_results(self.dir)
        # Rows without a hash (written before fingerprints) go with any; other cells may differ.
        rows[3] = dict(make_row(NATURAL, 3, 0.5, n=200), config_hash="9f8e7d6c5b4a")
        self.write("results.csv", rows)
        self.assertEqual(len(stats.read_results(self.dir)), 4)


class MarkdownTest(unittest.TestCase):

    def test_summary_table_layout(self):
        rows = []
        for target, n, natural, robust in [("cifar10", 100, (0.687, 0.687), (0.838, 0.838)),
                                           ("cifar10", 400, (0.80, 0.82), (0.85, 0.86)),
                                           ("flowers", 100, (0.40, 0.40), (0.45, 0.45))]:
            for seed in (0, 1):
                rows.append(make_row(NATURAL, seed, natural[seed], target=target, n=n))
                rows.append(make_row(ROBUST, seed, robust[seed], target=target, n=n))
        differences = stats.paired_differences(table(rows), NATURAL)
        half = scipy_stats.t.ppf(0.975, 1) * np.std([0.05, 0.04], ddof=1) / math.sqrt(2)
        expected = "\n".join([
            "#### natural / robust_l2, 0 unfrozen block(s), 3 epochs",
            "",
            "| N | cifar10 | flowers |",
            "|---:|:---:|:---:|",
            "| 100 | 68.7 / 83.8 (+15.1 ± 0.0) | 40.0 / 45.0 (+5.0 ± 0.0) |",
            f"| 400 | 81.0 / 85.5 (+4.5 ± {100 * half:.1f}) | – |"])
        self.assertEqual(summary_markdown.summary_tables_markdown(differences), expected)

    def test_epoch_labels_and_curves_share_the_one_budget_per_cell_rule(self):
        rows = pd.DataFrame({"target": ["a", "b", "a", "b"], "source": "s", "unfrozen_blocks": 0,
                             "train_images": [100, 100, 400, 400], "epochs": [90, 90, 30, 30],
                             "text": ["x1", "y1", "x4", "y4"]})
        self.assertEqual(stats.epochs_per_cell(rows, "train_images"), {100: 90, 400: 30})
        self.assertIn("| 100 (90 epochs) | x1 | y1 |", summary_markdown.markdown_grid(rows, "text"))
        self.assertFalse(stats.epochs_is_a_variable(rows))
        # Target b's N = 100 trained longer: still one budget per (target, N) cell, so not a
        # variable, but N = 100 has no single budget to print as its label.
        uneven = rows.assign(epochs=[90, 120, 30, 30])
        self.assertIsNone(stats.epochs_per_cell(uneven, "train_images"))
        self.assertIn("| 100 | x1 | y1 |", summary_markdown.markdown_grid(uneven, "text"))
        self.assertFalse(stats.epochs_is_a_variable(uneven))
        self.assertTrue(stats.epochs_is_a_variable(pd.concat([rows, uneven])))

    def test_single_pair_has_no_plus_minus(self):
        row = {"baseline_mean": 0.5, "source_mean": 0.55, "difference_mean": 0.05,
               "difference_ci_half": float("nan")}
        self.assertEqual(summary_markdown.difference_cell_text(row), "50.0 / 55.0 (+5.0)")


class ReportCommandTest(unittest.TestCase):
    """End to end through the ``report`` subcommand (kept here: it is mostly stats)."""

    def test_writes_report(self):
        results = Path(tempfile.mkdtemp())
        rows = []
        for n in (100, 400):
            for seed in (0, 1):
                rows.append(make_row(NATURAL, seed, 0.4 + n / 2000, n=n, curve=[0.2, 0.4, 0.5]))
                rows.append(make_row(ROBUST, seed, 0.5 + n / 2000 + seed / 100, n=n,
                                     curve=[0.3, 0.5, 0.6]))
        pd.DataFrame(rows).to_csv(results / "results.csv", index=False)
        parser = argparse.ArgumentParser()
        report.register(parser.add_subparsers())
        args = parser.parse_args(["report", "--results", str(results)])
        result = args.run(args)
        json.dumps(result)
        self.assertEqual((result["runs"], result["cells"]), (8, 4))
        out = results / "report"
        for name in ("summary.csv", "differences.csv", "trend.csv", "efficiency.csv", "summary.md",
                     "accuracy_vs_images_cifar10.png", "difference_vs_images_cifar10.png",
                     "accuracy_vs_epochs_cifar10.png"):
            self.assertGreater((out / name).stat().st_size, 0, name)
        self.assertIn("| 100 | 45.0 / 55.5 (+10.5 ± 6.4) |", (out / "summary.md").read_text())

    def test_curve_images_must_be_measured_sizes(self):
        results = Path(tempfile.mkdtemp())
        rows = [make_row(source, seed, 0.5, n=100, curve=[0.2, 0.4, 0.5])
                for source in (NATURAL, ROBUST) for seed in (0, 1)]
        pd.DataFrame(rows).to_csv(results / "results.csv", index=False)
        parser = argparse.ArgumentParser()
        report.register(parser.add_subparsers())
        args = parser.parse_args(["report", "--results", str(results), "--curve-images", "7"])
        with self.assertRaisesRegex(UserError, "--curve-images 7: no run has that N.*N = 100"):
            args.run(args)
        self.assertFalse((results / "report").exists())  # refused before writing anything
        with contextlib.redirect_stderr(io.StringIO()), self.assertRaises(SystemExit):
            parser.parse_args(["report", "--results", str(results), "--curve-images", "0"])

    def test_report_modules_do_not_import_tensorflow(self):
        code = ("import sys, tftransfer.commands.report, tftransfer.report.build, tftransfer.report.plots, tftransfer.report.stats; "
                "print('tensorflow' in sys.modules)")
        output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                check=True).stdout.strip()
        self.assertEqual(output, "False")


if __name__ == "__main__":
    unittest.main()
