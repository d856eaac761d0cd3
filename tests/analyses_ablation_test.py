"""Tests of tftransfer.report.analyses.ablation: one table over the protocols' results directories."""

from __future__ import annotations

import pandas as pd

from tests.helpers import make_row
from tftransfer.report.analyses import ablation

NATURAL, ROBUST = ablation.NATURAL, ablation.ROBUST


def write(root, folder, gain, seeds=range(5), epochs=30):
    """Natural at 0.7 + a per-seed effect both sources share; robust ``gain`` above it."""
    rows = []
    for target in ("mnist", "fashion_mnist"):
        for n in (100, 400, 1600):
            for seed in seeds:
                shared = 0.01 * seed
                for source, accuracy in ((NATURAL, 0.7 + shared), (ROBUST, 0.7 + shared + gain)):
                    row = make_row(source, seed, accuracy, target=target, n=n, blocks=3,
                                   epochs=epochs)
                    row["source_eps"] = 0.5 if source == ROBUST else 0.0
                    row["source_attack"] = "l2" if source == ROBUST else "none"
                    rows.append(row)
    (root / folder).mkdir(parents=True)
    pd.DataFrame(rows).to_csv(root / folder / "results.csv", index=False)


def test_each_protocol_is_a_column_paired_by_seed(tmp_path):
    write(tmp_path, "replication", 0.01)
    write(tmp_path, "replication-paper-ablation/bn", 0.05, seeds=range(3))
    text = ablation.markdown(tmp_path / "replication-paper")
    line = next(l for l in text.splitlines() if l.startswith("| MNIST | 100 |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    # Pairing removes the shared per-seed effect: an exact difference, zero width.
    assert cells[2] == "**+1.0 ± 0.0**"
    assert cells[3] == "**+5.0 ± 0.0** (3 seeds)"
    assert cells[4:] == ["not run yet"] * 4
    assert "| Fashion-MNIST | 400 |" in text
    assert "1600" not in text  # only the ablation's N


def test_no_results_at_all(tmp_path):
    text = ablation.markdown(tmp_path / "replication-paper")
    assert text.count("not run yet") == 2 * 4 * len(ablation.PROTOCOLS)
