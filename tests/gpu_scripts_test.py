"""The prepared GPU scripts (bench/gpu_fast_at.sh, bench/gpu_autoattack.sh, bench/gpu_grid.sh)
run their commands end to end: on the CPU at toy scale (ALLOW_CPU=1), with the same flags they
give a GPU; and without a GPU and without ALLOW_CPU they skip with the reason."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

DATA_DIR = Path(os.environ.get("TFDS_DATA_DIR") or REPO.parent / "shared" / "tfds")


def _run(tmp_path, **env):
    return subprocess.run(
        ["bash", "bench/gpu_fast_at.sh"], cwd=REPO, capture_output=True, text=True,
        timeout=900, env={**os.environ, "PYTHON": sys.executable, "RUN_DIR": str(tmp_path),
                          "TFDS_DATA_DIR": str(DATA_DIR), "CUDA_VISIBLE_DEVICES": "", **env})


def test_without_a_gpu_it_skips_and_says_why(tmp_path):
    done = _run(tmp_path, ALLOW_CPU="0", EPOCHS="1", PRETRAIN_ARGS="", EVALUATE_ARGS="")
    assert done.returncode == 0, done.stderr
    assert "gpu_fast_at: skipped: TensorFlow sees no GPU here" in done.stdout
    assert not (tmp_path / "model").exists()


@pytest.mark.slow
def test_its_commands_run_end_to_end_at_toy_scale(tmp_path):
    if not (DATA_DIR / "cifar10").is_dir():
        pytest.skip(f"no prepared cifar10 in {DATA_DIR}")
    done = _run(tmp_path, ALLOW_CPU="1", EPOCHS="1",
                PRETRAIN_ARGS="--train-images 40 --early-stop-images 20",
                EVALUATE_ARGS="--max-examples 20")
    assert done.returncode == 0, done.stderr[-3000:]
    header, rule, row = done.stdout.strip().splitlines()[-3:]
    assert header.startswith("| method | epochs |") and rule.startswith("|---")
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[0] == "fgsm_rs Linf 8/255, ResNet-18" and cells[1].startswith("1")
    assert all(0 <= float(accuracy) <= 100 for accuracy in cells[5:7])
    assert (tmp_path / "model").is_dir() and (tmp_path / "evaluate.json").is_file()


def _run_autoattack(**env):
    return subprocess.run(
        ["bash", "bench/gpu_autoattack.sh"], cwd=REPO, capture_output=True, text=True,
        timeout=900, env={**os.environ, "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": "",
                          **env})


def test_gpu_autoattack_without_a_gpu_skips_and_says_why():
    done = _run_autoattack(ALLOW_CPU="0")
    assert done.returncode == 0, done.stderr
    assert "gpu_autoattack: skipped: TensorFlow sees no GPU here" in done.stdout


@pytest.mark.slow
def test_gpu_autoattack_runs_the_ensemble_at_toy_scale():
    done = _run_autoattack(ALLOW_CPU="1", N="2", BATCH="2", STEPS="2", QUERIES="5",
                           IMAGE_SIZE="32")
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| model |"))
    assert "after apgd-ce %" in lines[header] and "after square %" in lines[header]
    cells = [cell.strip() for cell in lines[header + 2].strip("|").split("|")]
    assert cells[0].startswith("resnet50, random weights") and cells[1] == "2 at 32 px"
    accuracies = [float(value) for value in cells[4:]]
    assert accuracies[0] == 100.0  # labelled with its own predictions: every point attacked
    assert all(a >= b for a, b in zip(accuracies[1:], accuracies[2:]))  # non-increasing


def test_gpu_check_prints_the_tensorflow_build_and_devices_then_skips():
    done = subprocess.run(["bash", "bench/gpu_check.sh"], cwd=REPO, capture_output=True,
                          text=True, timeout=300,
                          env={**os.environ, "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 0, done.stderr
    assert "gpu_check: packages: tensorflow" in done.stderr
    assert "CUDA build: " in done.stderr and "devices: ['/physical_device:CPU:0'" in done.stderr
    assert "gpu_check: skipped: TensorFlow sees no GPU here" in done.stdout


def _run_grid(**env):
    return subprocess.run(
        ["bash", "bench/gpu_grid.sh"], cwd=REPO, capture_output=True, text=True,
        timeout=900, env={**os.environ, "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": "",
                          **env})


def test_gpu_grid_without_a_gpu_skips_and_says_why():
    done = _run_grid(ALLOW_CPU="0")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines() == [
        "gpu_grid: skipped: TensorFlow sees no GPU here (no CUDA device, or a CPU-only "
        "TensorFlow build); this benchmark needs one GPU."]


@pytest.mark.slow
def test_gpu_grid_times_k_seeds_against_single_runs_at_toy_scale():
    done = _run_grid(ALLOW_CPU="1", IMAGE_SIZE="32", N="24", MOCK_EXAMPLES="24",
                     TEST_IMAGES="24", CURVE_IMAGES="24", EPOCHS="2", K="2", REPEATS="1")
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert ("Last 1 stage(s) + head of resnet50 (random weights) at 32 px on oxford_flowers102"
            in out)
    assert "2 single runs one after another:" in out and "2 seeds in one call:" in out
    ratio = next(line for line in out.splitlines() if "ratio (single / together):" in line)
    assert float(ratio.split(":")[1].strip().rstrip("x")) > 0
    gap = next(line for line in out.splitlines() if "largest test-accuracy difference" in line)
    assert float(gap.split(":")[1]) <= 1e-6
