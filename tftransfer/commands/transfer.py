"""``transfer``: fine-tune a source model on a target and report test accuracy.

The last stdout line is a compact JSON summary (``summary``); the full result row, the
per-epoch test curve included, is the run directory's ``metrics.json`` (and ``history.csv``
holds one row per epoch).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from tftransfer.commands.common import add_data_arguments
from tftransfer.config import (AUGMENT_PRESETS, DEFAULT_FEATURE_CACHE_MEMORY, TransferConfig,
                               apply_overrides, apply_recipe, parse_size)
from tftransfer.config.flags import TRANSFER_FLAGS, add_flags, apply_flags, typed_flags
from tftransfer.config.length import (AUTO_MAX_EPOCHS, AUTO_MIN_EPOCHS, AUTO_MIN_STEPS,
                                      AUTO_MIN_STEPS_HEAD_ONLY, parse_epochs)
from tftransfer.config.recipes import RECIPES
from tftransfer.errors import UnsavedResult, UserError

DEFAULT_EPOCHS = TransferConfig.epochs
# Flags that shape the run: with `--resume RUN_DIR` and no --target the run's own recorded
# values are used, so giving one of these (other than --epochs) is refused, never ignored.
# (--feature-cache changes how, not what, a run computes.)
RUN_FLAGS = tuple(flag.dest for flag in TRANSFER_FLAGS if flag.dest != "feature_cache") + (
    "source", "out", "augment", "recipe", "set")


def register(subparsers):
    from tftransfer.sources.registry import DEFAULT_SOURCE, PHOTO_SOURCE, SMALL_IMAGE_MAX

    parser = subparsers.add_parser(
        "transfer", help="fine-tune a source model on a target dataset",
        description="Put a new head on a source network, fine-tune it and the last N residual "
                    "blocks on a target, and report test accuracy (the paper's recipe by "
                    "default: SGD lr 0.1, momentum 0.9, weight decay 5e-4, batch 128, lr x0.1 "
                    "every epochs/3, normal(0, 1) head). Every run writes a checkpoint after each "
                    "epoch (or compiled stretch of epochs): --resume continues a killed run "
                    "where it stopped, and --resume with a larger --epochs extends a finished "
                    "one (epochs after the extension point follow the new total's learning-"
                    "rate schedule; config.json records extended_from). Without --resume the "
                    "same command restarts the run from epoch 0, replacing that run's files "
                    "in --out whole; an --out holding a finished run of another "
                    "configuration, or a source model, is refused. The last line of stdout "
                    "is a compact JSON summary (test accuracy, per-class accuracy range, run "
                    "directory, time); the full result with the per-epoch curve is the run "
                    "directory's metrics.json.")
    parser.add_argument("--target", default=None,
                        help="TFDS name or image folder (required unless --resume RUN_DIR)")
    parser.add_argument("--source", default=None,
                        help=f"a source name (`python main.py sources` lists them, local and "
                             f"published) or a model path (default: {DEFAULT_SOURCE} for "
                             f"targets of at most {SMALL_IMAGE_MAX} px, {PHOTO_SOURCE} for "
                             f"larger ones; the run's first line says which and why)")
    parser.add_argument("--epochs", type=parse_epochs, default=None, metavar="N|auto",
                        help=f"training epochs, or auto: the epochs of at least "
                             f"{AUTO_MIN_STEPS} SGD steps ({AUTO_MIN_STEPS_HEAD_ONLY} with the "
                             f"head only), at least {AUTO_MIN_EPOCHS} and at "
                             f"most {AUTO_MAX_EPOCHS}, resolved before training (the learning-"
                             f"rate schedule needs the number) and recorded with the rule "
                             f"(epochs_rule in metrics.json) (default: {DEFAULT_EPOCHS}; with "
                             f"--resume RUN_DIR the run's own; more than a finished run's "
                             f"extends it)")
    parser.add_argument("--out", default=None,
                        help="run directory (default: runs/transfer/<target>__<source>__n<N>"
                             "__b<blocks>__s<seed>); refused if it holds a finished run of "
                             "another configuration, or while another run uses it")
    parser.add_argument("--resume", nargs="?", const=True, default=None, metavar="RUN_DIR",
                        help="continue the run in RUN_DIR (or in --out / the default run "
                             "directory) from its checkpoint: a killed run ends where an "
                             "uninterrupted one would; with a larger --epochs a finished run "
                             "is extended. RUN_DIR alone reuses the run's recorded options")
    parser.add_argument("--quiet", action="store_true",
                        help="no per-epoch or feature-extraction progress on stderr")
    parser.add_argument("--augment", nargs="?", const="cifar", default=None,
                        choices=sorted(AUGMENT_PRESETS),
                        help="augment the training images (default: none; disables feature "
                             "caching): cifar = pad-and-crop + flip (also plain --augment), "
                             "paper = the paper's random crop (padding 4), flip, colour jitter "
                             "0.25 and rotation 2 degrees for colour targets (none for "
                             "grayscale), imagenet = random-resized crop + flip (as "
                             "microsoft/robust-models-transfer); digits are never flipped")
    parser.add_argument("--feature-cache-memory", type=parse_size,
                        default=DEFAULT_FEATURE_CACHE_MEMORY, metavar="SIZE",
                        help="cached trunk features held in memory (e.g. 500MB, 8GB); the rest "
                             "go to memory-mapped files in a temporary folder ($TMPDIR) and "
                             "stream back, with the same result")
    parser.add_argument("--recipe", choices=sorted(RECIPES), default=None,
                        help="a named protocol that sets several fields at once, recorded in "
                             "config.json; utrera2021 = the paper's code: --frozen-bn train, "
                             "--normalization target, 150 epochs (lr x0.1 every 50), --subset "
                             "random, the paper's augmentation for colour targets (none for "
                             "grayscale). A flag you type (--normalization subset, "
                             "--epochs 20, --augment cifar, ...) or --set wins over it")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override any config field, e.g. --set optim.nesterov=true")
    add_flags(parser, TransferConfig(target="-"), TRANSFER_FLAGS)
    add_data_arguments(parser)
    parser.set_defaults(run=run, resumable=True, kept=kept)
    parser.set_defaults(flag_defaults={name: parser.get_default(name) for name in RUN_FLAGS})
    return parser


def config_from_args(args) -> TransferConfig:
    """The TransferConfig that the command line describes."""
    if args.steps is not None and args.epochs is not None:
        raise UserError("Give --epochs or --steps, not both.")
    if args.unfrozen_stages is not None and args.unfrozen_blocks:
        raise UserError("Give --unfrozen-blocks or --unfrozen-stages, not both.")
    defaults = TransferConfig(target=args.target)
    data = dataclasses.replace(defaults.data, dataset=args.target, data_dir=args.data_dir,
                               download=args.download, **_augment_fields(args.augment))
    cfg = dataclasses.replace(defaults, source=args.source, out=args.out, data=data,
                              epochs=DEFAULT_EPOCHS if args.epochs is None else args.epochs)
    cfg = apply_flags(cfg, args, TRANSFER_FLAGS)
    return apply_overrides(_typed_over_recipe(apply_recipe(cfg, args.recipe), args), args.set)


def _typed_over_recipe(cfg: TransferConfig, args) -> TransferConfig:
    """``cfg`` with what the user typed set again after the recipe: a typed flag wins over
    the recipe, as --set does; a flag left at its default does not (otherwise the recipe
    would override the --normalization subset that its own error recommends)."""
    cfg = apply_flags(cfg, args, typed_flags(args, TRANSFER_FLAGS))
    if args.epochs is not None:
        cfg = dataclasses.replace(cfg, epochs=args.epochs)
    if args.augment is not None:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(
            cfg.data, **_augment_fields(args.augment)))
    return cfg


def _augment_fields(preset: str | None) -> dict:
    """DataConfig's augment and augment_policy for an --augment preset (None: none)."""
    augment, policy = AUGMENT_PRESETS[preset or "none"]
    return {"augment": augment, "augment_policy": policy}


def run(args) -> dict:
    """Runs ``transfer``; returns the compact summary the CLI prints (see ``summary``)."""
    from tftransfer.finetune.run import fine_tune

    cfg = _resumed_config(args) if args.target is None else config_from_args(args)
    # A user's --out may hold a finished result: refuse, rather than replace, a different one.
    try:
        return summary(fine_tune(cfg, existing_run="refuse", checkpoint=True,
                                 resume=bool(args.resume), verbose=not args.quiet,
                                 feature_cache_memory=args.feature_cache_memory))
    except UnsavedResult as error:
        compact = summary(error.result)  # the line the CLI still prints
        compact.pop("metrics")           # not written
        raise UnsavedResult(f"{error}; its result is the last line of standard output, and "
                            f"{_resuming(args)} saves it.", compact) from error


def kept(args) -> str:
    """What an interrupted ``transfer`` keeps, and the command that continues it (the CLI
    prints it after "interrupted" or "terminated")."""
    where = args.resume if isinstance(args.resume, str) else args.out or "its run directory"
    return (f"the checkpoint of its last finished epoch (if any) is kept in {where}, and "
            f"{_resuming(args)} continues from it.")


def _resuming(args) -> str:
    return "the same command" if args.resume else "the same command with --resume"


def _resumed_config(args) -> TransferConfig:
    """The recorded configuration of ``--resume RUN_DIR`` (with ``--epochs`` if given)."""
    from tftransfer.training import checkpoints
    from tftransfer.config import from_dict

    if not isinstance(args.resume, str):
        raise UserError("transfer needs --target (or --resume RUN_DIR to continue a run).")
    given = [name for name, default in args.flag_defaults.items()
             if getattr(args, name) != default]
    if given:
        raise UserError(f"--resume {args.resume} without --target continues the run with its "
                        f"recorded options; drop --{given[0].replace('_', '-')} (or give "
                        f"--target and every option to check them against the run).")
    state = checkpoints.load(args.resume)
    if state is None:
        raise UserError(f"--resume {args.resume}: there is no transfer checkpoint "
                        f"({checkpoints.CHECKPOINT_FILE}) there to continue from.")
    cfg = from_dict(TransferConfig, state.config)
    return dataclasses.replace(cfg, out=args.resume,
                               epochs=cfg.epochs if args.epochs is None else args.epochs)


def summary(result: dict) -> dict:
    """The compact result line: accuracy and the mean per-class accuracy beside it, loss,
    the worst class's accuracy, the run's main variables, the convergence warning if any, run
    directory and time. The curve (``test_accuracy_epoch_K``) and the per-class accuracies
    stay in ``metrics.json`` (and ``history.csv``)."""
    keys = ("test_accuracy", "mean_class_accuracy", "test_loss", "worst_class",
            "worst_class_accuracy", "target", "source", "train_images", "test_images",
            "unfrozen_blocks", "unfrozen_stages", "epochs", "epochs_rule", "steps",
            "sgd_steps", "seed", "extended_from", "train_accuracy", "warning",
            "train_seconds", "run_dir")
    compact = {key: result[key] for key in keys if key in result}
    compact["metrics"] = str(Path(result["run_dir"]) / "metrics.json")
    return compact
