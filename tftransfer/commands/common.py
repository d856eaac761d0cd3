"""Argument groups shared by several commands."""

from __future__ import annotations

import argparse

from tftransfer.config import attack_methods
from tftransfer.config import ATTACKS, PRECISIONS, TransferConfig, check_seed
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


def number_or_fraction(text: str) -> float:
    """argparse type: a number, or a fraction of two (``8/255``, the usual L-inf eps)."""
    try:
        numerator, _, denominator = text.partition("/")
        return float(numerator) / float(denominator) if denominator else float(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"expected a number or a fraction such as 8/255, "
                                         f"got {text!r}") from None


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """--data-dir and --download/--no-download."""
    parser.add_argument("--data-dir", default=None,
                        help="TFDS data directory (default: $TFDS_DATA_DIR or ~/tensorflow_datasets)")
    parser.add_argument("--download", action=argparse.BooleanOptionalAction, default=True,
                        help="let TFDS download a dataset that is not prepared yet")


def add_attack_arguments(parser: argparse.ArgumentParser, default_steps: int,
                         evaluation_methods: dict | None = None) -> None:
    """The threat model: --attack (the norm), --eps, --attack-steps, --attack-step-size,
    --random-start, --attack-method (with ``evaluation_methods``, name -> help, as further
    choices of a command that only evaluates)."""
    extra = evaluation_methods or {}
    parser.add_argument("--attack", choices=ATTACKS, default="none",
                        help="norm of the threat model (none: natural)")
    parser.add_argument("--eps", type=number_or_fraction, default=0.5,
                        help="radius of the attack in [0, 1] pixel units, a number or a "
                             "fraction such as 8/255; with --attack l2 the perturbation's "
                             "Euclidean norm over the whole image (L2 eps 3 at 224px is about "
                             "0.43 at 32px), with linf the largest change of any one pixel "
                             "value (8/255 is the usual CIFAR choice; it does not scale with "
                             "image size)")
    parser.add_argument("--attack-steps", type=int, default=default_steps,
                        help="attack iterations (PGD steps)")
    parser.add_argument("--attack-step-size", type=number_or_fraction, default=None,
                        help="step size (default: the method's, PGD 2.5 * eps / steps)")
    parser.add_argument("--random-start", action="store_true",
                        help="start PGD from a random point of the eps ball")
    parser.add_argument("--attack-method", choices=(*attack_methods.METHODS, *extra),
                        default="pgd",
                        help="how the perturbation is found (--attack gives the norm): "
                             + attack_methods.help_text().replace("%", "%%")
                             + "".join(f"; {name}: {text}" for name, text in extra.items()))


def attack_config(args):
    """The AttackConfig of --attack/--eps/... arguments."""
    from tftransfer.config import AttackConfig

    method = args.attack_method if args.attack_method in attack_methods.METHODS else "pgd"
    return AttackConfig(norm=args.attack, eps=args.eps, steps=args.attack_steps,
                        step_size=args.attack_step_size, random_start=args.random_start,
                        method=method)


def add_precision_argument(parser: argparse.ArgumentParser) -> None:
    """--precision auto | float32 | mixed_float16 | mixed_bfloat16 (default: the config's,
    auto)."""
    parser.add_argument("--precision", choices=PRECISIONS, default=TransferConfig.precision,
                        help="Keras dtype policy: auto = mixed_float16 when TensorFlow sees a "
                             "GPU, float32 when not (said on stderr; the run records the "
                             "resolved one); whether mixed_bfloat16 is faster on a CPU depends "
                             "on the CPU and the model (measure it with bench/photo_step.py) "
                             "(default: %(default)s)")
