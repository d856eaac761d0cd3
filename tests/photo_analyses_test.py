"""The photo analyses: input size (``photo_sizes``) and default length (``length_check``), on
small hand-made results files whose answers are known."""

from __future__ import annotations

import pandas as pd

from tftransfer.report.analyses import length_check, photo_sizes


def rows(accuracies: dict, **fixed) -> pd.DataFrame:
    """One row per seed of each source: ``accuracies`` maps a source to its per-seed values."""
    return pd.DataFrame([{"source": source, "seed": seed, "test_accuracy": value,
                          "source_attack": "none" if "natural" in source else "l2",
                          "train_seconds": 10.0, "git_commit": "abc1234", **fixed}
                         for source, values in accuracies.items()
                         for seed, value in enumerate(values)])


def test_sizes_pair_by_seed_across_sizes_and_sources(tmp_path):
    common = {"target": "photos", "train_images": 720, "unfrozen_blocks": 3, "epochs": 84}
    for size, robust, natural in ((32, [0.80, 0.82, 0.84], [0.78, 0.80, 0.82]),
                                  (64, [0.85, 0.86, 0.90], [0.80, 0.80, 0.82])):
        (tmp_path / f"{size}px").mkdir()
        rows({"robust": robust, "natural": natural}, **common).to_csv(
            tmp_path / f"{size}px" / "results.csv", index=False)
    text = photo_sizes.markdown(tmp_path)
    robust_64 = next(line for line in text.splitlines() if "| robust | 64 |" in line)
    # 64 - 32 per seed: +5, +4, +6 -> +5.0; robust - natural at 64: +5, +6, +8 -> +6.3
    assert "| +5.0 ± " in robust_64 and "| +6.3 ± " in robust_64
    natural_32 = next(line for line in text.splitlines() if "| natural | 32 |" in line)
    assert "| 80.0 | - | - |" in natural_32  # no change against itself, no robust difference


def test_length_check_lists_accuracy_by_steps_and_the_shortest_within_a_point(tmp_path):
    for grid, values, epochs in (("default", [0.600, 0.610, 0.620], 500),
                                 ("long", [0.640, 0.650, 0.660], 2000),
                                 ("longer", [0.645, 0.655, 0.665], 8000)):
        folder = tmp_path / grid
        folder.mkdir()
        rows({"robust": values}, target="photos", train_images=100, unfrozen_blocks=0,
             epochs=epochs, batch_size=128).to_csv(folder / "results.csv", index=False)
    lines = [line for line in length_check.markdown(tmp_path).splitlines()
             if line.startswith("| photos |")]
    assert len(lines) == 3  # one per step count, shortest first
    assert "| 500 | 61.0 | 3 | - |" in lines[0]
    assert "| 2,000 (shortest within 1 point of the longest) | 65.0 | 3 | +4.0 ± 0.0 (n = 3) |" \
        in lines[1]
    assert "| 8,000 | 65.5 | 3 | +0.5 ± 0.0 (n = 3) |" in lines[2]
