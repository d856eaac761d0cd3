"""Tests of tftransfer.report.analyses.why_no_gain on small synthetic results folders."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from tests.helpers import make_row
from tftransfer.report import analyses
from tftransfer.report.analyses import why_no_gain

NATURAL, ROBUST = why_no_gain.NATURAL, why_no_gain.ROBUST


def row(source, seed, accuracy, n=100, blocks=3, curve=None, target="mnist"):
    """One results row of the why-no-gain grids (``stats_test.make_row`` with their sources)."""
    values = make_row(source, seed, accuracy, target=target, n=n, blocks=blocks, epochs=150,
                      curve=curve)
    values["source_attack"] = "l2" if source == ROBUST else "none"
    values["source_eps"] = 0.5 if source == ROBUST else 0.0
    return values


def pairs(naturals, gaps, seeds=None, **kwargs):
    """A natural and a robust row per seed: robust = natural + gap."""
    seeds = range(len(naturals)) if seeds is None else seeds
    return [r for seed, natural, gap in zip(seeds, naturals, gaps)
            for r in (row(NATURAL, seed, natural, **kwargs),
                      row(ROBUST, seed, natural + gap, **kwargs))]


def write(root, cause, rows):
    (root / cause).mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(root / cause / "results.csv", index=False)


def cell(table, cause, n=100, blocks=3, natural=NATURAL, target="mnist"):
    rows = table[(table.cause == cause) & (table.target == target) & (table.train_images == n)
                 & (table.unfrozen_blocks == blocks) & (table.natural == natural)]
    assert len(rows) == 1
    return rows.iloc[0]


NATURALS = [0.80, 0.84, 0.78, 0.83, 0.81]
BASE_GAPS = [0.02, -0.01, 0.05, 0.00, 0.03]


def test_gap_and_interval_equal_a_hand_computation(tmp_path):
    write(tmp_path, "baseline", pairs(NATURALS, BASE_GAPS))
    causes, _ = why_no_gain.causes_table(tmp_path)
    got = cell(causes, "baseline")
    gaps = np.array(BASE_GAPS)
    low, high = scipy_stats.t.interval(0.95, df=4, loc=gaps.mean(), scale=scipy_stats.sem(gaps))
    assert got.gap_mean == pytest.approx(gaps.mean())
    assert got.gap_ci_low == pytest.approx(low) and got.gap_ci_high == pytest.approx(high)
    assert (got.gap_n, got.gap_df) == (5, 4)
    assert got.gap_p == pytest.approx(scipy_stats.ttest_1samp(gaps, 0).pvalue)
    assert got.paper_gap == pytest.approx(0.151)
    assert got.status == "complete" and np.isnan(got.change_mean)  # no change against itself


def test_change_against_the_baseline_is_paired_by_seed(tmp_path):
    write(tmp_path, "baseline", pairs(NATURALS, BASE_GAPS))
    cause_gaps = [0.10, 0.02, 0.15, 0.07, 0.12]
    # Seed 4: only the natural run (no pair); seed 5: a pair the baseline lacks.
    rows = pairs(NATURALS[:4], cause_gaps[:4]) + [row(NATURAL, 4, 0.7)]
    rows += pairs([0.5], [0.4], seeds=[5])
    write(tmp_path, "head-scale", rows)
    # 1 block: compared with the baseline's 3-block gap of the same seeds.
    write(tmp_path, "depth", pairs(NATURALS, cause_gaps, blocks=1))
    causes, _ = why_no_gain.causes_table(tmp_path)

    changes = np.array(cause_gaps[:4]) - np.array(BASE_GAPS[:4])
    got = cell(causes, "head-scale")
    assert got.gap_n == 5  # seeds 0-3 and 5
    assert (got.change_n, got.change_df) == (4, 3)
    assert got.status == "complete; change on the 4 seeds the baseline shares"
    assert got.change_mean == pytest.approx(changes.mean())
    assert got.change_ci_half == pytest.approx(
        scipy_stats.t.ppf(0.975, 3) * changes.std(ddof=1) / 2)
    depth = cell(causes, "depth", blocks=1)
    assert depth.change_mean == pytest.approx(np.mean(np.array(cause_gaps) - BASE_GAPS))
    assert depth.change_n == 5


def test_source_quality_change_is_the_baselines_natural_minus_the_weaker_one(tmp_path):
    write(tmp_path, "baseline", pairs(NATURALS, BASE_GAPS))
    weaker = [0.70, 0.75, 0.71, 0.74]  # seeds 0-3 only
    write(tmp_path, "source-quality", [row(f"{NATURAL}-3ep", seed, accuracy)
                                       for seed, accuracy in enumerate(weaker)])
    causes, _ = why_no_gain.causes_table(tmp_path)
    got = cell(causes, "source-quality", natural=f"{NATURAL}-3ep")
    robust = np.array(NATURALS) + BASE_GAPS
    assert got.gap_mean == pytest.approx(np.mean(robust[:4] - weaker))
    assert got.change_mean == pytest.approx(np.mean(np.array(NATURALS[:4]) - weaker))
    assert got.status == "4 of 5 seeds"


def test_area_between_curves_of_a_constant_gap_is_that_gap(tmp_path):
    rows = [r for seed, natural in enumerate(NATURALS[:3]) for r in (
        row(NATURAL, seed, natural, curve=[0.2 + seed / 10, 0.5, 0.7, natural]),
        row(ROBUST, seed, natural + 0.04, curve=[0.24 + seed / 10, 0.54, 0.74, natural + 0.04]))]
    write(tmp_path, "baseline", rows)
    causes, curves = why_no_gain.causes_table(tmp_path)
    got = cell(causes, "baseline")
    assert got.area_mean == pytest.approx(0.04)
    assert got.area_ci_half == pytest.approx(0.0, abs=1e-12)
    assert list(curves.epoch) == [1, 2, 3, 4]
    assert np.allclose(curves.gap_mean, 0.04) and (curves.n_pairs == 3).all()
    # Unequal spacing: a trapezoid over the epochs divided by their span.
    frame = pd.DataFrame({"test_accuracy_epoch_10": [0.0], "test_accuracy_epoch_20": [1.0],
                          "test_accuracy_epoch_50": [1.0]})
    assert why_no_gain.area(frame).iloc[0] == pytest.approx((5 + 30) / 40)


def test_incomplete_cells_are_reported(tmp_path, capsys):
    write(tmp_path, "baseline", pairs(NATURALS[:3], BASE_GAPS[:3]))
    write(tmp_path, "upsample", [row(NATURAL, seed, 0.8) for seed in range(2)])  # no robust yet
    causes, _ = why_no_gain.causes_table(tmp_path)
    assert cell(causes, "baseline").status == "3 of 5 seeds"
    assert cell(causes, "upsample").status == "no paired seed yet (2 runs)"
    assert cell(causes, "baseline", n=400).status == "not run yet"
    assert cell(causes, "depth", blocks=2, target="fashion_mnist").status == "not run yet"
    assert (causes.status == "complete").sum() == 0
    why_no_gain.main(["--results", str(tmp_path)])
    text = (tmp_path / "causes.md").read_text()
    assert text.splitlines()[2].startswith(
        f"Written by `python -m tftransfer.report.analyses.why_no_gain --results {tmp_path}`")
    assert "- baseline, MNIST N=100: 3 of 5 seeds" in text
    assert "- baseline, MNIST N=400: not run yet" in text
    assert "- head-scale: not run yet (4 cells)" in text
    assert "- upsample, MNIST N=100: no paired seed yet (2 runs)" in text
    assert "provisional" in text
    for name in ("causes.csv", "curves.csv", "curves.png"):
        assert (tmp_path / name).exists()
    assert capsys.readouterr().out.strip() == text.strip()
    # report --analysis why-no-gain: the same analysis, its own command quoted.
    assert "--analysis why-no-gain`" in analyses.ANALYSES["why-no-gain"].markdown(tmp_path)


def test_conclusion_says_none_when_every_interval_covers_zero(tmp_path):
    flat = lambda accuracy: [accuracy] * 3  # noqa: E731  (a curve at the final accuracy)
    base = [r for seed, (nat, gap) in enumerate(zip(NATURALS, BASE_GAPS)) for r in (
        row(NATURAL, seed, nat, curve=flat(nat)), row(ROBUST, seed, nat + gap,
                                                     curve=flat(nat + gap)))]
    write(tmp_path, "baseline", base)
    shuffled = [BASE_GAPS[i] for i in (1, 0, 4, 2, 3)]  # same gaps, other seeds: change ~ 0
    write(tmp_path, "upsample", [r for seed, (nat, gap) in enumerate(zip(NATURALS, shuffled))
                                 for r in (row(NATURAL, seed, nat, curve=flat(nat)),
                                           row(ROBUST, seed, nat + gap, curve=flat(nat + gap)))])
    causes, _ = why_no_gain.causes_table(tmp_path)
    got = cell(causes, "upsample")
    assert got.change_ci_low < 0 < got.change_ci_high
    text = why_no_gain.conclusion(causes)
    assert "None of them moves the final gap" in text
    assert "None of them moves the gap averaged over the epochs" in text


def test_conclusion_names_a_cause_that_moves_the_gap(tmp_path):
    write(tmp_path, "baseline", pairs(NATURALS, BASE_GAPS))
    write(tmp_path, "head-scale", pairs(NATURALS, [g + 0.10 for g in BASE_GAPS]))
    causes, _ = why_no_gain.causes_table(tmp_path)
    text = why_no_gain.conclusion(causes)
    assert "None of them moves the final gap" not in text
    assert "head-scale at MNIST N=100 (+10.0 ± 0.0 points" in text

