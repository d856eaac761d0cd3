"""The last-stage benchmarks run end to end at toy scale and print their tables:
``bench/last_stage_limit.py`` (the achieved fraction of the machine's attainable throughput,
a number for every part) and ``bench/torch_last_stage.py`` (PyTorch against the toolkit).

Each starts a process that imports TensorFlow, loads MNIST and traces networks: about 40 s on
2 quiet cores, several minutes when the machine is shared, hence ``slow``."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO, SHARED_TFDS

DATA_DIR = Path(os.environ.get("TFDS_DATA_DIR") or SHARED_TFDS)
def _table(script: str, *flags: str) -> tuple[list[str], list[list[str]]]:
    """(header cells, rows of cells) of the markdown table ``bench/<script>`` prints last."""
    if not (DATA_DIR / "mnist").is_dir():
        pytest.skip(f"no prepared mnist in {DATA_DIR}")
    done = subprocess.run([sys.executable, f"bench/{script}", "--data-dir", str(DATA_DIR),
                           *flags], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    start = max(i for i, line in enumerate(lines) if line.startswith("|---")) - 1

    def cells(line):
        return [cell.strip() for cell in line.strip().strip("|").split("|")]
    return cells(lines[start]), [cells(line) for line in lines[start + 2:]]


@pytest.mark.slow
def test_limit_table_has_every_part_and_its_fraction():
    header, rows = _table("last_stage_limit.py", "--last-stage", "100:5", "--head", "100:20",
                          "--test-images", "500", "--curve-images", "200", "--repeats", "2")
    assert header == ["cell", "part", "GFLOP", "toolkit s", "toolkit GFLOP/s", "limit s",
                      "attainable GFLOP/s", "achieved fraction"]
    assert [row[0] for row in rows] == (["last stage, N = 100, 5 epochs"] * 4
                                        + ["head only, N = 100, 20 epochs"] * 4)
    assert [row[1].split(" (")[0] for row in rows[:4]] == [
        "SGD steps", "curve", "final evaluation", "whole run, a new seed"]
    for row in rows:
        assert float(row[2]) > 0 and float(row[5]) > 0, row
        # At toy scale a part's time is a difference of two timings of a few milliseconds
        # (the curve: a run with it minus one without), so its sign is noise: only that the
        # fraction is a number is asserted here; bench/README has the measured ones.
        assert math.isfinite(float(row[-1])), row


@pytest.mark.slow
def test_torch_table_compares_pytorch_with_the_toolkit_with_and_without_the_cache():
    pytest.importorskip("torch")
    header, rows = _table("torch_last_stage.py", "--n", "100", "--epochs", "2",
                          "--test-images", "200", "--curve-images", "100")
    assert header == ["path", "seconds", "final test accuracy", "/ PyTorch"]
    assert [row[0].split(" (")[0].split(",")[0] for row in rows] == ["PyTorch"] + ["toolkit"] * 3
    assert "feature cache off" in rows[1][0] and "feature cache on" in rows[2][0]
    assert rows[0][3] == "1.00x"
    for _, seconds, accuracy, ratio in rows:
        assert float(seconds) > 0 and 0 <= float(accuracy) <= 1
        assert float(ratio.rstrip("x")) > 0
    # The same images, weights and recipe with and without the cache: the same accuracy.
    assert abs(float(rows[1][2]) - float(rows[2][2])) <= 1e-3
