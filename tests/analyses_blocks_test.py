"""Tests of tftransfer.report.analyses.blocks: joining the main and the blocks sweep."""

import tempfile
import unittest
from pathlib import Path

import pandas as pd

from tests.helpers import make_row
from tftransfer.report import stats
from tftransfer.report.analyses import blocks

NATURAL, ROBUST = "cifar10-resnet20-natural", "cifar10-resnet20-l2-eps0.5"


def rows(seeds, n_values, blocks_values, gain, seed_gain=None):
    """Natural at 0.6 and the robust source ``gain`` above it (``seed_gain``: per seed)."""
    out = []
    for n in n_values:
        for blocks in blocks_values:
            for seed in seeds:
                extra = (seed_gain or {}).get(seed, gain)
                for source, accuracy in ((NATURAL, 0.6), (ROBUST, 0.6 + extra)):
                    row = make_row(source, seed, accuracy, target="mnist", n=n, blocks=blocks)
                    row["source_eps"] = 0.5 if source == ROBUST else 0.0
                    out.append(row)
    return out


class JoinedResultsTest(unittest.TestCase):

    def setUp(self):
        self.blocks = blocks
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        self.root = Path(directory.name)
        for name in ("replication", "replication-blocks"):
            (self.root / name).mkdir()

    def write(self, name, table_rows):
        pd.DataFrame(table_rows).to_csv(self.root / name / "results.csv", index=False)

    def test_keeps_the_blocks_sweeps_n_and_seeds_for_every_block_setting(self):
        # The main sweep has seeds 3 and 4 with a far larger gain and an N the blocks sweep
        # lacks; neither may enter the table, so every column averages the same seeds.
        self.write("replication", rows(range(5), [100, 200], [0, 3], 0.02,
                                       seed_gain={3: 0.3, 4: 0.3}))
        self.write("replication-blocks", rows(range(3), [100], [1, 2], 0.01))
        table = self.blocks.joined_results(self.root)
        self.assertEqual(sorted(table.seed.unique()), [0, 1, 2])
        differences = stats.paired_differences(table, NATURAL).set_index("unfrozen_blocks")
        self.assertEqual(sorted(differences.index), [0, 1, 2, 3])
        self.assertTrue((differences.train_images == 100).all())
        self.assertAlmostEqual(differences.loc[0, "difference_mean"], 0.02, places=9)
        self.assertAlmostEqual(differences.loc[1, "difference_mean"], 0.01, places=9)

    def test_markdown_table_has_one_column_per_block_setting(self):
        self.write("replication", rows(range(3), [100], [0, 3], 0.02))
        self.write("replication-blocks", rows(range(3), [100], [1, 2], 0.01))
        differences = stats.paired_differences(self.blocks.joined_results(self.root), NATURAL)
        header, _, row = self.blocks.markdown_table(differences, "mnist").splitlines()
        self.assertEqual(header, "| N | head only | 1 block | 2 blocks | last stage (3 blocks) |")
        self.assertTrue(row.startswith("| 100 | 60.0 / 62.0 (**+2.0 ± 0.0**)"), row)


if __name__ == "__main__":
    unittest.main()
