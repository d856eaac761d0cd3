"""Seeds of one cell trained together (finetune.multi_seed) get the results they get alone,
and a sweep that trains them together writes the rows it writes one run at a time.

Tolerance: each seed runs its single run's ops on the same inputs in the same order (its own
batches, head draw and optimizer), so the values are expected to be equal to the bit (they
were on the machine this was written on); the checks allow float32 round-off amplified by a
few dozen SGD steps (rtol 1e-5 on weights and losses), far below what a wrong batch, order or
head draw gives (differences of 1e-2 and more). Accuracies are counts over the test images,
so they are compared to 1e-6.
"""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np
import pytest

from tests import helpers
from tftransfer import config, finetune
from tftransfer.errors import UserError
from tftransfer.sources import saving
from tftransfer.sweeps import cell_runs, state
from tftransfer.sweeps import runner as sweeps

SEEDS = (0, 1, 2)
RTOL = 1e-5


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    """A tiny source and a 3-class image folder shared by the module's tests."""
    root = tmp_path_factory.mktemp("multi_seed")
    helpers.make_image_folder(root / "images", classes=("a", "b", "c"), per_class=10,
                              split=True)
    helpers.make_source(root / "src", num_classes=5)
    return root


def _config(root: Path, out: Path, blocks: int, seed: int) -> config.TransferConfig:
    # N = 12 of 30: each seed has its own subset; batches of 4, 3 steps an epoch (unrolled).
    return config.TransferConfig(
        target=str(root / "images"), source=str(root / "src"), out=str(out), epochs=6,
        eval_every=2, unfrozen_blocks=blocks, seed=seed,
        data=config.DataConfig(augment=False, batch_size=4, train_images=12))


def _history(run_dir: Path) -> list[dict]:
    with open(run_dir / "history.csv") as handle:
        return list(csv.DictReader(handle))


def _assert_same_run(single: dict, batched: dict, single_dir: Path, batched_dir: Path):
    for a, b in zip(saving.load_model(single_dir).get_weights(),
                    saving.load_model(batched_dir).get_weights()):
        np.testing.assert_allclose(b, a, rtol=RTOL, atol=1e-7)
    curve = sorted(key for key in single if key.startswith("test_accuracy_epoch_"))
    assert curve == sorted(key for key in batched if key.startswith("test_accuracy_epoch_"))
    for key in curve + ["test_accuracy", "train_accuracy", "worst_class_accuracy"]:
        assert batched[key] == pytest.approx(single[key], abs=1e-6), key
    for key in ("test_loss", "train_loss"):
        assert batched[key] == pytest.approx(single[key], rel=RTOL), key
    timings = ("train_seconds", "run_dir")
    assert {k: v for k, v in batched.items() if k not in timings and not isinstance(v, float)} \
        == {k: v for k, v in single.items() if k not in timings and not isinstance(v, float)}
    single_rows, batched_rows = _history(single_dir), _history(batched_dir)
    assert len(single_rows) == len(batched_rows) == 6
    for a, b in zip(single_rows, batched_rows):
        assert list(a) == list(b) and a["epoch"] == b["epoch"]
        assert (a["test_accuracy"] == "") == (b["test_accuracy"] == "")
        for key in ("loss", "accuracy", "learning_rate", "test_loss"):
            if a[key]:
                assert float(b[key]) == pytest.approx(float(a[key]), rel=RTOL), key


def _compare_with_single_runs(root: Path, tmp_path: Path, blocks: int, budget):
    cache = finetune.RunCache(memory_budget=budget)  # as a sweep: one cache for every run
    singles = [finetune.fine_tune(_config(root, tmp_path / f"single{s}", blocks, s),
                                  cache=cache, verbose=False) for s in SEEDS]
    batched = finetune.fine_tune_seeds(
        [_config(root, tmp_path / f"batched{s}", blocks, s) for s in SEEDS], cache=cache,
        verbose=False)
    assert len({row["test_loss"] for row in singles}) == len(SEEDS)  # the seeds do differ
    for seed, single, row in zip(SEEDS, singles, batched):
        assert row["seed"] == seed and row["feature_cache"]
        _assert_same_run(single, row, tmp_path / f"single{seed}", tmp_path / f"batched{seed}")
    return cache


# Memory budget None: features in memory, the schedule in one call; 0: every feature on
# disk, streamed, one call per stretch between curve points.
@pytest.mark.parametrize("budget", [None, 0])
def test_head_only_seeds_trained_together_match_single_runs(fixtures, tmp_path, budget):
    cache = _compare_with_single_runs(fixtures, tmp_path, 0, budget)
    assert (cache.disk.files > 0) == (budget == 0)


@pytest.mark.slow  # ~2 min each on 2 loaded cores: the last stage is traced for 1 and 3 seeds
@pytest.mark.parametrize("budget", [None, 0])
def test_last_stage_seeds_trained_together_match_single_runs(fixtures, tmp_path, budget):
    _compare_with_single_runs(fixtures, tmp_path, 3, budget)


def test_configurations_of_other_cells_or_repeated_seeds_are_refused(fixtures, tmp_path):
    one = _config(fixtures, tmp_path / "a", 0, 0)
    with pytest.raises(ValueError, match="differ only in seed and out"):
        finetune.fine_tune_seeds([one, dataclasses.replace(one, epochs=7, seed=1)])
    with pytest.raises(ValueError, match="a seed twice"):
        finetune.fine_tune_seeds([one, dataclasses.replace(one, out=str(tmp_path / "b"))])
    with pytest.raises(ValueError, match="cannot train together: frozen BatchNorm"):
        finetune.fine_tune_seeds([dataclasses.replace(one, frozen_bn="train")])


@pytest.mark.parametrize("change, reason", [
    (dict(frozen_bn="train"), "frozen BatchNorm is in train mode"),
    (dict(feature_cache="off"), "feature cache is off"),
    (dict(training_loop="fit"), "trains in fit()"),
    (dict(normalization="subset"), "its own input normalization"),
    (dict(unfrozen_blocks=-1), "every block trains"),
    (dict(unfrozen_blocks=9), "every block trains"),     # resnet20 has 9 blocks
    (dict(unfrozen_stages=3), "every block trains"),
    (dict(data=config.DataConfig(augment=True)), "augmented"),
    (dict(), None)])
def test_batch_refusal_names_why_seeds_run_one_by_one(fixtures, change, reason):
    cfg = dataclasses.replace(_config(fixtures, fixtures / "unused", 0, 0), **change)
    refusal = finetune.batch_refusal(cfg, finetune.RunCache())
    assert refusal is None if reason is None else reason in refusal


def test_a_diverged_seed_is_returned_as_the_error_its_single_run_raises(fixtures, tmp_path):
    diverging = config.OptimConfig(learning_rate=1e30)
    cfgs = [dataclasses.replace(_config(fixtures, tmp_path / f"s{s}", 0, s), optim=diverging)
            for s in (0, 1)]
    cache, networks = finetune.RunCache(), finetune.SeedNetworks()
    with pytest.raises(UserError, match="diverged") as alone:
        finetune.fine_tune(cfgs[0], cache=cache, verbose=False)
    outcomes = finetune.fine_tune_seeds(cfgs, cache=cache, verbose=False, networks=networks,
                                        raise_errors=False)
    assert all(isinstance(outcome, UserError) for outcome in outcomes)
    assert str(outcomes[0]) == str(alone.value)
    assert not (tmp_path / "s1" / "metrics.json").exists()
    with pytest.raises(UserError, match="diverged"):  # the same networks, traced once
        finetune.fine_tune_seeds(cfgs, cache=cache, verbose=False, networks=networks)


def test_a_sweep_training_seeds_together_writes_the_rows_of_single_runs(fixtures, tmp_path,
                                                                         capsys):
    sweep = helpers.small_sweep([fixtures / "src"], str(fixtures / "images"),
                                train_images=(6, 9))
    one = sweeps.run_sweep(sweep, tmp_path / "one", seed_batch=1)
    assert "train together" not in capsys.readouterr().err
    together = sweeps.run_sweep(sweep, tmp_path / "together", seed_batch=2)
    assert "the seeds of a cell train together, up to 2" in capsys.readouterr().err
    assert (one["ran"], together["ran"], together["failed"]) == (4, 4, 0)
    rows = [state.read_rows(tmp_path / name / "results.csv") for name in ("one", "together")]
    assert [row["run_key"] for row in rows[0]] == [row["run_key"] for row in rows[1]]
    timings = ("train_seconds", "finished_at", "run_dir")
    for a, b in zip(*rows):
        assert Path(a["run_dir"]).name == Path(b["run_dir"]).name
        assert list(a) == list(b)
        for key in (key for key in a if key not in timings):
            if a[key] != b[key]:  # numbers written with all their digits: round-off only
                assert float(b[key]) == pytest.approx(float(a[key]), rel=RTOL), key
    assert not list((tmp_path / "together" / sweeps.CLAIMS_DIR).iterdir())
    again = sweeps.run_sweep(sweep, tmp_path / "together", seed_batch=2)
    assert (again["ran"], again["finished_before"]) == (0, 4)


def test_a_refused_cell_is_named_once_and_its_seeds_run_one_by_one(capsys):
    sweep = helpers.small_sweep(["src"], "images", recipe=("frozen_bn=train",))
    batching = cell_runs.SeedBatching(sweep, 5)
    grid = sweeps.cells(sweep)
    for cell in grid:  # the configuration refuses: no source or target is loaded
        assert batching.companions(cell, grid, Path("results"), None, {}) == []
    err = capsys.readouterr().err
    assert err.count("run one seed at a time: frozen BatchNorm is in train mode") == 1
    with pytest.raises(UserError, match="--seed-batch must be at least 1"):
        cell_runs.SeedBatching(sweep, 0)


def test_the_seeds_of_a_cell_are_claimed_together_skipping_live_claims(tmp_path):
    sweep = helpers.small_sweep(["src"], "images", train_images=(6,), seeds=(0, 1, 2, 3))
    grid = sweeps.cells(sweep)
    held = state.claim_next(tmp_path, grid[1:2])  # this process, alive: seed 1 is skipped
    claims = state.claim_cells(tmp_path, grid, skip={grid[0].key}, limit=2)
    assert [claim.cell.seed for claim in claims] == [2, 3]
    rest = state.claim_cells(tmp_path, grid, limit=5)
    assert [claim.cell.seed for claim in rest] == [0]
    for claim in claims + rest + [held]:
        state.release_claim(claim)
