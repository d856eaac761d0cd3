"""Tests of results/replication/answers.py's eps-vs-eps comparison on a synthetic results CSV."""

import importlib
import sys
import tempfile
import unittest
from pathlib import Path

import pandas as pd

from tests.stats_test import make_row

SCRIPTS = Path(__file__).resolve().parents[1] / "results" / "replication"


def load_script(name):
    """The results scripts import their siblings by name (answers.py: paper_table.py), so
    they are imported with their directory on the path."""
    sys.path.insert(0, str(SCRIPTS))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(SCRIPTS))


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
        self.answers = load_script("answers")
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


if __name__ == "__main__":
    unittest.main()
