"""``pretrain``: train a source model naturally or adversarially (resumable)."""

from __future__ import annotations

import dataclasses

from tftransfer.commands.common import add_attack_arguments, add_data_arguments, attack_config
from tftransfer.config import PretrainConfig, apply_overrides
from tftransfer.config.flags import PRETRAIN_FLAGS, add_flags, apply_flags


def register(subparsers):
    parser = subparsers.add_parser(
        "pretrain", help="train a source model (naturally, or adversarially with --attack)",
        description="Train a torchvision-layout ResNet with fit(). Re-running the same command "
                    "after an interruption resumes from the last finished epoch. Adversarial "
                    "training: --attack l2|linf with --attack-method pgd (default), fgsm_rs "
                    "(fast: one step from a random start, Wong et al. 2020; pair it with "
                    "--schedule one_cycle and --early-stop, as they did) or free (Shafahi et "
                    "al. 2019, with --free-replays).")
    parser.add_argument("--out", required=True, help="run directory (e.g. saved_models/NAME)")
    parser.add_argument("--allow-dirty", action="store_true",
                        help="train from code with uncommitted changes (the model's "
                             "git_commit is then marked +dirty); without it pretrain refuses")
    parser.add_argument("--no-augment", action="store_true",
                        help="no pad-and-crop / flip augmentation")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override any config field, e.g. --set optim.nesterov=true")
    add_attack_arguments(parser, default_steps=7)
    add_flags(parser, PretrainConfig(out="-"), PRETRAIN_FLAGS)
    add_data_arguments(parser)
    parser.set_defaults(run=run, resumable=True, kept=kept)
    return parser


def kept(args) -> str:
    """What an interrupted ``pretrain`` keeps, and the command that continues it."""
    return (f"the checkpoint of its last finished epoch (if any) is kept in {args.out}, and "
            f"the same command resumes it.")


def run(args) -> dict:
    from tftransfer import runs
    from tftransfer.training.pretrain import pretrain

    runs.require_committed_code(args.allow_dirty)
    defaults = PretrainConfig(out=args.out)
    data = dataclasses.replace(defaults.data, data_dir=args.data_dir, download=args.download,
                               augment=not args.no_augment)
    cfg = dataclasses.replace(defaults, data=data, attack=attack_config(args))
    cfg = apply_flags(cfg, args, PRETRAIN_FLAGS)
    return pretrain(apply_overrides(cfg, args.set))
