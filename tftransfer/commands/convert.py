"""``convert``: PyTorch ResNet checkpoints -> Keras model directories.

    python main.py convert --checkpoint imagenet_l2_3_0.pt --arch resnet50 --out saved_models/r50
    python main.py convert --published robust-resnet50-l2-eps3 [--trust-pickle]
                                                               [--skip-behaviour-check]
    python main.py convert --list
"""

from __future__ import annotations

import argparse

from tftransfer.errors import UserError

_ATTACKS = ("none", "l2", "linf")


def register(subparsers) -> argparse.ArgumentParser:
    """Adds the ``convert`` subcommand and returns its parser."""
    parser = subparsers.add_parser(
        "convert", help="import a PyTorch ResNet checkpoint (robustness library, "
                        "robust-models-transfer, torchvision) as a Keras model",
        description="Convert a PyTorch ResNet checkpoint into a model directory that every "
                    "other command accepts, or fetch and convert a published ImageNet model.")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--checkpoint", metavar="FILE", help="the PyTorch checkpoint to convert")
    what.add_argument("--published", metavar="NAME",
                      help="download (once) and convert a published model; see --list")
    what.add_argument("--list", action="store_true", help="print the published models")
    parser.add_argument("--arch", default="resnet50",
                        choices=("resnet18", "resnet34", "resnet50", "resnet101"),
                        help="architecture of --checkpoint (default resnet50)")
    parser.add_argument("--width", type=float, default=1.0,
                        help="channel multiplier of --checkpoint (1.0 = torchvision's)")
    parser.add_argument("--image-size", type=int, default=224,
                        help="input size of the Keras model (default 224)")
    parser.add_argument("--out", metavar="DIR",
                        help="model directory to write (required with --checkpoint; "
                             "default for --published: the cache)")
    parser.add_argument("--attack", choices=_ATTACKS,
                        help="threat model --checkpoint was trained against (recorded only)")
    parser.add_argument("--eps", type=float,
                        help="training eps of --checkpoint in [0, 1] pixel units (recorded only)")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="allow a full, unsafe unpickling of files the safe loader refuses "
                             "(the robustness library's dill-pickled .pt files); only for "
                             "files you trust")
    parser.add_argument("--no-verify", dest="verify", action="store_false",
                        help="skip comparing the converted logits with PyTorch's")
    parser.add_argument("--skip-behaviour-check", action="store_true",
                        help="with --published: save the model even if it fails the "
                             "behavioural check (a top-5 class of the right group for three "
                             "scikit-image photos: a cat, a cup of coffee, a rocket); the "
                             "result is recorded and the model is listed as unverified")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> dict:
    """Runs ``convert``; returns the result row the CLI prints."""
    if args.list:
        return _list_published()
    if args.published:
        return _convert_published(args)
    return _convert_checkpoint(args)


def _list_published() -> dict:
    from tftransfer.sources import published

    print(published.table())
    return {"published": published.names(), "cache": str(published.cache_root())}


def _convert_published(args: argparse.Namespace) -> dict:
    from tftransfer.sources import behaviour
    from tftransfer.sources import published
    from tftransfer.sources import saving

    entry = published.get(args.published)
    if entry is None:
        raise UserError(f"No published model called {args.published!r}; choose one of "
                        f"{', '.join(published.names())}.")
    directory = published.ensure_converted(entry, trust_pickle=args.trust_pickle,
                                           out_dir=args.out,
                                           skip_behaviour_check=args.skip_behaviour_check)
    config = saving.read_config(directory)
    source = config.get("source", {})
    return {"out": str(directory), "name": entry.name, "arch": config.get("arch"),
            "num_classes": config.get("num_classes"), "format": source.get("format"),
            "sha256": source.get("sha256"),
            "max_abs_diff": source.get("max_abs_diff_vs_pytorch"),
            "behaviour_check": behaviour.status(config)}


def _convert_checkpoint(args: argparse.Namespace) -> dict:
    from tftransfer import convert
    from tftransfer.sources import saving

    if not args.out:
        raise UserError("--out DIR is required with --checkpoint (where to write the model).")
    extra = {}
    if args.attack is not None:
        extra["attack"] = args.attack
    if args.eps is not None:
        extra["eps"] = args.eps
    converted = convert.convert(args.checkpoint, arch=args.arch, width=args.width,
                                image_size=args.image_size, trust_pickle=args.trust_pickle,
                                check=args.verify, extra_config=extra)
    convert.report_phase(f"saving the model to {args.out}")
    saving.save_model_dir(converted.model, args.out, converted.config)
    return {"out": str(args.out), **converted.row}
