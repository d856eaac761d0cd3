"""Tests of tftransfer.report.plots: figures from small synthetic stats tables."""

import tempfile
import unittest
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from tftransfer.report import plot_parts, plots
from tftransfer.report import stats

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SIZES = (100, 400, 1600)


def results_table(blocks=(0,), seeds=(0, 1, 2)):
    """A tiny validated results table: two sources, two targets, three N, 3-epoch curves."""
    rows = []
    for target in ("cifar10", "oxford flowers/102"):
        for source, attack, gain in (("natural", "none", 0.0), ("robust", "l2", 0.08)):
            for n in SIZES:
                for block in blocks:
                    for seed in seeds:
                        accuracy = 0.3 + 0.1 * SIZES.index(n) + gain + 0.01 * seed
                        rows.append({
                            "run_key": f"{target}-{source}-{n}-{block}-{seed}",
                            "source": source, "source_attack": attack, "target": target,
                            "train_images": n, "unfrozen_blocks": block, "epochs": 3,
                            "seed": seed, "test_accuracy": accuracy,
                            "test_accuracy_epoch_1": accuracy / 2,
                            "test_accuracy_epoch_3": accuracy})
    return stats.validate_results(pd.DataFrame(rows))


class PlotsTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.table = results_table(blocks=(0, 1))
        cls.summary = stats.summarize(cls.table)
        cls.differences = stats.paired_differences(cls.table, "natural")
        cls.curves = stats.epoch_curves(cls.table)
        cls.out = Path(tempfile.mkdtemp())

    def assert_png(self, figure, name):
        path = plot_parts.save_figure(figure, self.out / name)
        self.assertEqual(path.read_bytes()[:8], PNG_SIGNATURE)
        self.assertGreater(path.stat().st_size, 5000)

    def assert_labelled(self, ax):
        self.assertTrue(ax.get_xlabel())
        self.assertTrue(ax.get_ylabel())

    def test_accuracy_vs_images(self):
        figure = plots.plot_accuracy_vs_images(self.summary, "cifar10", baseline="natural")
        axes = figure.axes
        self.assertEqual(len(axes), 2)  # one panel per unfrozen-blocks setting
        for ax in axes:
            self.assertEqual(ax.get_xscale(), "log")
            self.assertEqual(list(ax.get_xticks()), list(SIZES))
            self.assertEqual(len(ax.get_lines()), 2)  # one line per source
            self.assertTrue(ax.collections)  # the shaded intervals
        self.assert_labelled(axes[0])
        self.assertEqual(axes[0].get_legend_handles_labels()[1], ["natural", "robust"])
        self.assertIn("cifar10", figure.get_suptitle())
        self.assert_png(figure, "accuracy.png")

    def test_difference_vs_images(self):
        figure = plots.plot_difference_vs_images(self.differences, "oxford flowers/102")
        ax = figure.axes[0]
        self.assertEqual(ax.get_xscale(), "log")
        self.assert_labelled(ax)
        zero_lines = [line for line in ax.get_lines() if list(line.get_ydata()) == [0, 0]]
        self.assertEqual(len(zero_lines), 1)
        self.assert_png(figure, "difference.png")

    def test_difference_vs_eps_has_one_line_per_n_over_the_eps_values(self):
        table = results_table()
        robust = table.loc[table["source"] == "robust"]
        stronger = robust.assign(source="robust-eps1", source_eps=1.0,
                                 test_accuracy=robust["test_accuracy"] - 0.05)
        table = stats.validate_results(pd.concat(
            [table.assign(source_eps=table["source"].map({"robust": 0.5})), stronger]))
        other_natural = table.loc[table["source"] == "natural"].assign(source="natural-2",
                                                                         source_eps=0.0)
        table = stats.validate_results(pd.concat([table, other_natural]))
        differences = stats.paired_differences(table, "natural")
        self.assertFalse(plots.has_eps_trend(self.differences, "cifar10"))  # one eps only
        self.assertTrue(plots.has_eps_trend(differences, "cifar10"))
        figure = plots.plot_difference_vs_eps(differences, "cifar10")
        ax = figure.axes[0]
        self.assert_labelled(ax)
        self.assertEqual(list(ax.get_xticks()), [0.5, 1.0])
        bars = ax.containers  # one errorbar container per line
        self.assertEqual([bar.get_label() for bar in bars], [f"N = {n}" for n in SIZES])
        for line in (bar.lines[0] for bar in bars):  # robust gains 8 points at 0.5, 3 at 1.0
            for x, eps in zip(line.get_xdata(), [0.5, 1.0]):
                self.assertAlmostEqual(x, eps, delta=0.03)  # nudged sideways per N
            self.assertEqual([round(y, 6) for y in line.get_ydata()], [8.0, 3.0])
        self.assert_png(figure, "difference_vs_eps.png")

    def test_difference_vs_blocks_has_one_line_per_n_over_the_block_settings(self):
        # self.differences: robust gains 8 points with 0 and with 1 fine-tuned block.
        figure = plots.plot_difference_vs_blocks(self.differences, "cifar10")
        self.assertEqual(len(figure.axes), 1)  # one panel per (non-baseline) source
        ax = figure.axes[0]
        self.assert_labelled(ax)
        self.assertEqual(ax.get_title(), "robust")
        self.assertEqual(list(ax.get_xticks()), [0, 1])
        bars = ax.containers
        self.assertEqual([bar.get_label() for bar in bars], [f"N = {n}" for n in SIZES])
        for line in (bar.lines[0] for bar in bars):
            for x, blocks in zip(line.get_xdata(), [0, 1]):
                self.assertAlmostEqual(x, blocks, delta=0.1)  # nudged sideways per N
            self.assertEqual([round(y, 6) for y in line.get_ydata()], [8.0, 8.0])
        self.assert_png(figure, "difference_vs_blocks.png")

    def test_an_epoch_schedule_over_n_draws_one_line_per_source(self):
        summary = self.summary.assign(epochs=self.summary["train_images"].map(
            lambda n: 3 * SIZES[-1] // n))  # more epochs at smaller N
        figure = plots.plot_accuracy_vs_images(summary, "cifar10", baseline="natural")
        for ax in figure.axes:
            self.assertEqual([len(line.get_xdata()) for line in ax.get_lines()],
                             [len(SIZES)] * 2)

    def test_accuracy_vs_epochs(self):
        figure = plots.plot_accuracy_vs_epochs(self.curves, "cifar10", train_images=[100, 1600],
                                               baseline="natural")
        # one row per block setting, one column per N
        self.assertEqual([ax.get_title() for ax in figure.axes],
                         [f"N = {n}, {b} unfrozen block(s)" for b in (0, 1) for n in (100, 1600)])
        self.assert_labelled(figure.axes[0])
        self.assertEqual(figure.axes[1].get_xlabel(), "Epoch")
        self.assertEqual(len(figure.axes[0].get_lines()), 2)  # 2 sources
        self.assert_png(figure, "epochs.png")

    def test_single_seed_and_single_size(self):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", stats.DataWarning)
            table = results_table(seeds=(0,))
        summary = stats.summarize(table.loc[table["train_images"] == 400])
        figure = plots.plot_accuracy_vs_images(summary, "cifar10")
        self.assertEqual(figure.axes[0].get_xscale(), "log")
        self.assert_png(figure, "single.png")

    def test_two_seeds_draw_points_without_intervals_and_say_why(self):
        table = results_table(seeds=(0, 1))
        # The difference's spread across the 2 seeds makes a t(1 dof) interval of +-300 points.
        robust = table["source"] == "robust"
        table.loc[robust, "test_accuracy"] += np.where(table.loc[robust, "seed"] == 0, 0.3, -0.1)
        differences = stats.paired_differences(table, "natural")
        self.assertGreater((100 * differences["difference_ci_half"]).max(), 200)
        figure = plots.plot_difference_vs_images(differences, "cifar10")
        ax = figure.axes[0]
        band = ax.collections[0]
        self.assertEqual(len(band.get_paths()), 0)  # fill_between drew nothing
        self.assertEqual(ax.get_legend_handles_labels()[1], ["robust"])
        legend = [text.get_text() for text in ax.get_legend().get_texts()]
        self.assertEqual(legend, ["robust", plot_parts.NO_INTERVAL_NOTE])
        self.assertLess(max(abs(value) for value in ax.get_ylim()), 100)
        blocks = plots.plot_difference_vs_blocks(differences, "cifar10").axes[0]
        for bar in blocks.containers:
            segments = bar.lines[2][0].get_segments()  # NaN bounds: one empty segment each
            self.assertEqual([len(segment) for segment in segments], [0] * len(segments))
        self.assertIn(plot_parts.NO_INTERVAL_NOTE,
                      [text.get_text() for text in blocks.get_legend().get_texts()])

    def test_three_seeds_draw_intervals_clipped_to_the_possible_range(self):
        table = results_table(seeds=(0, 1, 2))
        robust = table["source"] == "robust"
        spread = table.loc[robust, "seed"].map({0: 0.6, 1: -0.3, 2: 0.0})
        table.loc[robust, "test_accuracy"] = (table.loc[robust, "test_accuracy"]
                                              + spread).clip(0, 1)
        differences = stats.paired_differences(table, "natural")
        self.assertGreater((100 * differences["difference_ci_high"]).max(), 100)
        rows = differences.loc[differences["target"] == "cifar10"]
        low, high = plot_parts.interval_bounds(rows, "difference", "n_pairs", plot_parts.DIFFERENCE_RANGE)
        self.assertTrue(low.notna().all())
        self.assertEqual(high.max(), 100.0)  # cut: the t-interval passed +100 points
        self.assertGreaterEqual(low.min(), -100.0)
        figure = plots.plot_difference_vs_images(differences, "cifar10")
        ax = figure.axes[0]
        vertices = np.concatenate([path.vertices for path in ax.collections[0].get_paths()])
        self.assertLessEqual(vertices[:, 1].max(), 100.0)
        self.assertGreaterEqual(vertices[:, 1].min(), -100.0)
        self.assertEqual([text.get_text() for text in ax.get_legend().get_texts()], ["robust"])
        bars = plots.plot_difference_vs_blocks(differences, "cifar10").axes[0].containers
        for bar in bars:
            for segment in bar.lines[2][0].get_segments():
                self.assertTrue(-100.0 <= segment[:, 1].min() <= segment[:, 1].max() <= 100.0)

    def test_accuracy_intervals_need_three_seeds_too(self):
        summary = stats.summarize(results_table(seeds=(0, 1)))
        low, high = plot_parts.interval_bounds(summary, "accuracy", "n_seeds", plot_parts.ACCURACY_RANGE)
        self.assertTrue(low.isna().all() and high.isna().all())
        figure = plots.plot_accuracy_vs_images(summary, "cifar10", baseline="natural")
        self.assertEqual([text.get_text() for text in figure.axes[0].get_legend().get_texts()],
                         ["natural", "robust", plot_parts.NO_INTERVAL_NOTE])

    def test_default_curve_images(self):
        self.assertEqual(plots.default_curve_images([5, 1, 3, 2, 4]), [1, 3, 5])
        self.assertEqual(plots.default_curve_images([2, 1]), [1, 2])


if __name__ == "__main__":
    unittest.main()
