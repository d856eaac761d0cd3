"""The not-converged warning follows the training loss's trend, not training accuracy
(issue 36 point 2), and the result carries the mean per-class accuracy (point 8)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from tftransfer import config, finetune
from tftransfer.finetune import convergence
from tftransfer.finetune.result import convergence_warning, per_class_summary
from tests import helpers


def _warning(losses, accuracy, classes=4):
    columns = {"train_accuracy": accuracy, "train_loss": float(losses[-1]), "sgd_steps": 100}
    return convergence_warning(columns, convergence.loss_trend(losses), classes)


def test_a_falling_loss_warns_whatever_the_accuracy():
    falling = np.linspace(1.2, 0.6, 40)
    trend = convergence.loss_trend(falling)
    assert trend.still_falling and trend.stretch_epochs == 10 and trend.first_epoch == 31
    assert trend.fitted_drop == pytest.approx(0.6 * 9 / 39)
    assert _warning(falling, accuracy=0.99).startswith("not converged: the training loss "
                                                       "was still falling")


def test_a_flat_loss_at_low_training_accuracy_does_not_warn():
    rng = np.random.default_rng(0)
    # The head-only run: 0.418 -> 0.413 over 350 epochs, with minibatch noise.
    flat = np.linspace(0.418, 0.413, 350) + rng.normal(0, 0.01, 350)
    assert not convergence.loss_trend(flat).still_falling
    assert _warning(flat, accuracy=0.80) is None


def test_noise_without_a_trend_and_a_slope_within_the_noise_are_flat():
    rng = np.random.default_rng(1)
    noisy = 0.9 + rng.normal(0, 0.2, 12)  # a 5-epoch stretch whose fitted slope is noise
    trend = convergence.loss_trend(noisy)
    assert trend.stretch_epochs == 5 and trend.drop_stderr > 0
    assert not trend.still_falling


def test_a_tiny_loss_still_halving_is_below_the_absolute_tolerance():
    assert not convergence.loss_trend(0.004 * 0.9 ** np.arange(20)).still_falling


def test_short_runs_one_epoch_warns_and_two_epochs_compare_their_losses():
    assert convergence.loss_trend([2.0]).still_falling
    assert "one epoch cannot show" in _warning([2.0], accuracy=0.5)
    assert convergence.loss_trend([2.0, 1.5]).still_falling
    assert not convergence.loss_trend([1.0, 0.999]).still_falling


def test_a_flat_loss_at_chance_still_warns():
    chance = math.log(4)
    warning = _warning(np.full(30, chance + 0.01), accuracy=0.25)
    assert "no lower than a uniform guess" in warning and "still falling" not in warning


def test_the_mean_class_accuracy_counts_each_class_once():
    summary = per_class_summary({"a": 1.0, "b": 0.5, "c": 0.0})
    assert summary["mean_class_accuracy"] == pytest.approx(0.5)
    assert (summary["worst_class"], summary["worst_class_accuracy"]) == ("c", 0.0)


@pytest.fixture(scope="module")
def lookalike_classes(tmp_path_factory):
    """Four classes of images drawn alike (a head cannot separate them): a run that
    converges well below 95% training accuracy."""
    root = tmp_path_factory.mktemp("lookalike")
    for index, name in enumerate("abcd"):
        helpers.make_image_folder(root / "images", classes=(name,), per_class=25, split=True,
                                  seed=index)
    helpers.make_source(root / "src", num_classes=5)
    return root


def test_a_run_converged_below_95_percent_records_its_trend_and_no_warning(lookalike_classes):
    root = lookalike_classes
    cfg = config.TransferConfig(target=str(root / "images"), source=str(root / "src"),
                                out=str(root / "run"), eval_every=0, steps=400)
    result = finetune.fine_tune(cfg, verbose=False)
    assert result["train_accuracy"] < 0.95
    assert "warning" not in result
    metrics = json.loads((root / "run" / "metrics.json").read_text())
    assert metrics["convergence"]["still_falling"] is False
    assert metrics["convergence"]["warned"] is False
    assert metrics["convergence"]["stretch_epochs"] == 100
    assert metrics["mean_class_accuracy"] == pytest.approx(
        np.mean(list(metrics["per_class_accuracy"].values())))
