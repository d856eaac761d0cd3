"""Tests of tftransfer.report.analyses.replication_answers' eps-vs-eps comparison on a synthetic
results CSV, and of the analyses registry that ``report --analysis`` runs."""

import tempfile
import unittest
from pathlib import Path

import pandas as pd

from tests.helpers import make_row
from tftransfer.report import analyses
from tftransfer.report.analyses import paper_table, replication_answers
from tftransfer.commands.report import ANALYSIS_NAMES


def write_results(directory, sources):
    """``sources``: name -> (eps, offset); accuracy = 0.6 + offset + a per-seed effect that
    every source shares (the same training images), which pairing must cancel."""
    rows = []
    for name, (eps, offset) in sources.items():
        for seed, shared in enumerate([0.0, 0.05, -0.04]):
            row = make_row(name, seed, 0.6 + offset + shared, target="mnist")
            row["source_attack"] = "l2" if eps else "none"
            row["source_eps"] = eps
            rows.append(row)
    pd.DataFrame(rows).to_csv(Path(directory) / "results.csv", index=False)


class EpsDifferencesTest(unittest.TestCase):

    def setUp(self):
        self.answers = replication_answers
        self.directory = tempfile.TemporaryDirectory()
        self.addCleanup(self.directory.cleanup)

    def test_each_robust_source_minus_the_eps_half_source_paired_by_seed(self):
        write_results(self.directory.name, {"natural": (0.0, -0.1), "eps0.25": (0.25, -0.03),
                                            "eps0.5": (0.5, 0.0), "eps1.0": (1.0, 0.02)})
        differences = self.answers.eps_differences(Path(self.directory.name))
        by_source = differences.set_index("source")
        self.assertEqual(sorted(by_source.index), ["eps0.25", "eps1.0"])  # no natural
        self.assertTrue((differences.baseline == "eps0.5").all())
        self.assertAlmostEqual(by_source.loc["eps0.25", "difference_mean"], -0.03, places=9)
        self.assertAlmostEqual(by_source.loc["eps1.0", "difference_mean"], 0.02, places=9)
        # The shared per-seed effect cancels: a zero-width interval.
        self.assertAlmostEqual(by_source.loc["eps1.0", "difference_ci_half"], 0.0, places=9)

    def test_empty_without_the_reference_source(self):
        write_results(self.directory.name, {"natural": (0.0, 0.0), "eps0.25": (0.25, 0.0),
                                            "eps1.0": (1.0, 0.0)})
        self.assertTrue(self.answers.eps_differences(Path(self.directory.name)).empty)


class RegistryTest(unittest.TestCase):
    def test_report_offers_every_registered_analysis(self):
        self.assertEqual(ANALYSIS_NAMES, tuple(analyses.ANALYSES))

    def test_committed_replication_answers_are_regenerated(self):
        """report --analysis writes exactly the committed markdown (from committed CSVs)."""
        results = Path(__file__).resolve().parents[1] / "results" / "replication"
        for name in ("answers", "paper-table"):
            analysis = analyses.ANALYSES[name]
            self.assertEqual(analysis.markdown(results),
                             (results / analysis.output).read_text(), name)

    def test_paper_reference_is_read_from_pipelines(self):
        self.assertEqual(paper_table.PAPER["mnist"][100], (68.7, 83.8, 15.1))
        self.assertEqual(paper_table.PAPER["fashion_mnist"][1600], (85.4, 87.6, 2.2))
        self.assertEqual(len(paper_table.PAPER["mnist"]), 6)


if __name__ == "__main__":
    unittest.main()


def test_the_epochs_answer_names_the_grid_s_own_curve(tmp_path):
    """(d) says how the grid's curves were measured (replication-paper: every 10 epochs on
    1,000 images), read from its rows, not the replication's every 5 on 2,000."""
    import pandas as pd

    from tftransfer.report.analyses import replication_answers

    rows = pd.DataFrame({"curve_test_images": [1000, 1000], "test_accuracy_epoch_10": [0.5, 0.6],
                         "test_accuracy_epoch_20": [0.7, 0.8], "test_accuracy_epoch_30": [0.8, 0.9]})
    rows.to_csv(tmp_path / "results.csv", index=False)
    assert (replication_answers.curve_text(tmp_path / "results.csv")
            == "curves every 10 epochs on 1,000 test images")
    assert "as the grid measured" in replication_answers.curve_text(tmp_path / "missing.csv")
