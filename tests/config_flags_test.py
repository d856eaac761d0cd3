"""CLI flags derived from the config fields: one default for each setting, shown and used."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from tftransfer.commands import transfer as transfer_command
from tftransfer.config import OptimConfig, PretrainConfig, TransferConfig
from tftransfer.config.flags import (PRETRAIN_FLAGS, TRANSFER_FLAGS, Flag, add_flags,
                                     apply_flags, command_line, field_value, typed_flags)
from tftransfer import cli
from tests import helpers

COMMANDS = {"transfer": (TRANSFER_FLAGS, TransferConfig(target="-")),
            "pretrain": (PRETRAIN_FLAGS, PretrainConfig(out="-"))}


def _parser(command):
    parser = cli.build_parser()
    actions = parser._subparsers._group_actions[0].choices  # the sub-command parsers
    return actions[command]


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_flag_defaults_to_its_fields_default(command):
    flags, defaults = COMMANDS[command]
    parser = _parser(command)
    for flag in flags:
        assert parser.get_default(flag.dest) == field_value(defaults, flag.path), flag.option


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_the_help_shows_the_fields_default(command):
    flags, defaults = COMMANDS[command]
    text = " ".join(_parser(command).format_help().split())
    for flag in flags:
        value = field_value(defaults, flag.path)
        assert f"(default: {'unset' if value is None else value})" in text, flag.option


def test_a_changed_field_default_reaches_the_flag():
    @dataclasses.dataclass(frozen=True)
    class Toy:
        optim: OptimConfig = dataclasses.field(
            default_factory=lambda: OptimConfig(learning_rate=0.25))
        rounds: int | None = None

    parser = argparse.ArgumentParser()
    flags = (Flag("optim.learning_rate", "lr", name="lr"), Flag("rounds", "how many"))
    add_flags(parser, Toy(), flags)
    assert parser.get_default("lr") == 0.25
    args = parser.parse_args(["--rounds", "3"])
    assert apply_flags(Toy(), args, flags) == Toy(rounds=3)


def test_the_transfer_command_line_parses_back_to_its_config():
    cfg = dataclasses.replace(
        TransferConfig(target="mnist", source="s", epochs=7, head_std=2.0, unfrozen_blocks=3),
        optim=OptimConfig(learning_rate=0.05, momentum=0.8))
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, dataset="mnist",
                                                             train_images=100, downsample=8))
    argv = (["--target", "mnist", "--source", "s", "--epochs", "7"]
            + command_line(cfg, TransferConfig(target="mnist"), TRANSFER_FLAGS))
    assert "--lr" in argv and "--batch-size" not in argv  # defaults are left out
    args = cli.build_parser().parse_args(["transfer", *argv])
    assert transfer_command.config_from_args(args) == cfg


def test_a_typed_flag_wins_over_the_recipe_and_a_default_does_not():
    base = "python main.py transfer --target x --recipe utrera2021"
    recipe = helpers.config_from_command(base)
    assert (recipe.normalization, recipe.frozen_bn, recipe.epochs) == ("target", "train", 150)
    assert recipe.data.augment_policy == "utrera2021"
    typed = helpers.config_from_command(
        base + " --normalization subset --frozen-bn inference --epochs 20 --augment cifar "
               "--lr 0.05 --no-download")
    assert (typed.normalization, typed.frozen_bn, typed.epochs) == ("subset", "inference", 20)
    assert (typed.data.augment, typed.data.augment_policy) == (True, "pad_crop_flip")
    assert typed.optim.learning_rate == 0.05 and typed.recipe == "utrera2021"
    assert typed.optim.step_every == 50  # what was not typed stays the recipe's
    # --set still has the last word, over a typed flag too.
    assert helpers.config_from_command(
        base + " --normalization subset --set normalization=source").normalization == "source"


def test_typed_flags_lists_only_the_flags_on_the_command_line():
    parser = argparse.ArgumentParser()
    flags = (Flag("optim.learning_rate", "lr", name="lr"), Flag("seed", "seed"),
             Flag("optim.nesterov", "nesterov"))
    add_flags(parser, TransferConfig(target="-"), flags)
    args = parser.parse_args(["--lr", "0.1", "--no-nesterov"])  # both at their defaults
    assert [flag.dest for flag in typed_flags(args, flags)] == ["lr", "nesterov"]
    assert typed_flags(parser.parse_args([]), flags) == ()
