"""Argument groups shared by several commands."""

from __future__ import annotations

import argparse

from tftransfer.config import ATTACKS, PRECISIONS, check_seed
from tftransfer.errors import UserError


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (sizes and counts where 0 or less means nothing)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def seed(text: str) -> int:
    """argparse type: a seed, a whole number in [0, 2**32) (for commands whose seed no
    validated config carries)."""
    try:
        value = int(text)
        check_seed(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    except UserError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return value


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """--data-dir and --download/--no-download."""
    parser.add_argument("--data-dir", default=None,
                        help="TFDS data directory (default: $TFDS_DATA_DIR or ~/tensorflow_datasets)")
    parser.add_argument("--download", action=argparse.BooleanOptionalAction, default=True,
                        help="let TFDS download a dataset that is not prepared yet")


def add_attack_arguments(parser: argparse.ArgumentParser, default_steps: int) -> None:
    """The PGD threat model: --attack, --eps, --attack-steps, --attack-step-size, --random-start."""
    parser.add_argument("--attack", choices=ATTACKS, default="none",
                        help="threat model of the PGD attack (none: natural)")
    parser.add_argument("--eps", type=float, default=0.5,
                        help="radius of the attack in [0, 1] pixel units (L2 eps 3 at 224px "
                             "is about 0.43 at 32px)")
    parser.add_argument("--attack-steps", type=int, default=default_steps,
                        help="PGD steps")
    parser.add_argument("--attack-step-size", type=float, default=None,
                        help="PGD step size (default 2.5 * eps / steps)")
    parser.add_argument("--random-start", action="store_true",
                        help="start PGD from a random point of the eps ball")


def attack_config(args):
    """The AttackConfig of --attack/--eps/... arguments."""
    from tftransfer.config import AttackConfig

    return AttackConfig(kind=args.attack, eps=args.eps, steps=args.attack_steps,
                        step_size=args.attack_step_size, random_start=args.random_start)


def add_precision_argument(parser: argparse.ArgumentParser) -> None:
    """--precision float32 | mixed_float16 | mixed_bfloat16."""
    parser.add_argument("--precision", choices=PRECISIONS, default="float32",
                        help="Keras dtype policy (mixed_bfloat16 is ~10-20%% faster on CPU)")
