"""Training length in SGD steps, the not-converged warning, per-class accuracy and
stage-level freezing (issue 23, points 3 and 8)."""

from __future__ import annotations

import argparse
import json

import pytest

from tftransfer import config
from tftransfer.models import architectures
from tftransfer.models import resnet
from tftransfer import finetune
from tftransfer.commands import transfer as transfer_command
from tftransfer.errors import UserError
from tests import helpers

CLASSES = ("a", "b", "c", "d")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("length")
    # 25 training images per class: N = 100, one batch of 128 per epoch.
    helpers.make_image_folder(root / "images", classes=CLASSES, per_class=25, split=True)
    helpers.make_source(root / "src", num_classes=5)
    return root


def _run(root, name, **fields):
    cfg = config.TransferConfig(target=str(root / "images"), source=str(root / "src"),
                                out=str(root / name), eval_every=0, **fields)
    return finetune.fine_tune(cfg, verbose=False)


def test_ten_steps_at_n100_carry_the_warning_and_a_converged_run_does_not(folders, capsys):
    short = _run(folders, "short", epochs=10)
    assert short["sgd_steps"] == 10 and short["epochs"] == 10
    assert short["warning"].startswith("not converged") and "10 SGD steps" in short["warning"]
    assert "warning: not converged" in capsys.readouterr().err
    recorded = json.loads((folders / "short" / "metrics.json").read_text())
    assert recorded["warning"] == short["warning"]

    converged = _run(folders, "long", steps=400)
    assert converged["epochs"] == 400 and converged["sgd_steps"] == 400
    assert converged["steps"] == 400
    assert converged["train_accuracy"] >= 0.95
    assert "warning" not in converged
    assert "warning" not in json.loads((folders / "long" / "metrics.json").read_text())


def test_steps_round_up_to_whole_epochs_and_config_records_the_epochs(folders):
    result = _run(folders, "steps", steps=25, data=config.DataConfig(augment=False,
                                                                      batch_size=32))
    assert result["epochs"] == 7 and result["sgd_steps"] == 28  # 4 steps per epoch
    resolved = json.loads((folders / "steps" / "config.json").read_text())["resolved_config"]
    assert resolved["epochs"] == 7 and resolved["steps"] is None


def test_metrics_hold_per_class_accuracy_and_the_row_the_worst_class(folders):
    result = _run(folders, "short", epochs=10)
    per_class = json.loads((folders / "short" / "metrics.json").read_text())[
        "per_class_accuracy"]
    assert sorted(per_class) == sorted(CLASSES)
    assert result["worst_class"] in CLASSES
    assert result["worst_class_accuracy"] == min(per_class.values())
    # 12 test images per class: the overall accuracy is the mean of the per-class ones.
    assert result["test_accuracy"] == pytest.approx(sum(per_class.values()) / len(CLASSES))
    assert "worst_class" in transfer_command.summary(result)


def test_unfrozen_stages_are_the_last_stages_blocks(folders):
    result = _run(folders, "stage", epochs=2, unfrozen_stages=1)
    assert result["unfrozen_blocks"] == 3 and result["unfrozen_stages"] == 1
    recorded = json.loads((folders / "stage" / "config.json").read_text())
    assert recorded["unfrozen_block_names"] == ["layer3.0", "layer3.1", "layer3.2"]
    resnet50 = resnet.build("resnet50", 10, 32, width=0.25)
    assert architectures.blocks_of_last_stages(resnet50, 2) == 9  # layer3 and layer4
    assert architectures.blocks_of_last_stages(resnet50, 0) == 0
    with pytest.raises(UserError, match="more than the 4 stages"):
        architectures.blocks_of_last_stages(resnet50, 5)


def _config(flags: str):
    parser = argparse.ArgumentParser(prog="main.py")
    transfer_command.register(parser.add_subparsers())
    return transfer_command.config_from_args(
        parser.parse_args(["transfer", "--target", "mnist", *flags.split()]))


def test_the_command_line_refuses_two_lengths_or_two_freezings():
    with pytest.raises(UserError, match="--epochs or --steps"):
        _config("--epochs 5 --steps 100")
    with pytest.raises(UserError, match="--unfrozen-blocks or --unfrozen-stages"):
        _config("--unfrozen-blocks 3 --unfrozen-stages 1")
    assert _config("--feature-cache-memory 0").steps is None
    cfg = _config("--steps 500 --unfrozen-stages 2")
    assert (cfg.steps, cfg.unfrozen_stages, cfg.unfrozen_blocks) == (500, 2, 0)
