"""``transfer``: fine-tune a source model on a target and report test accuracy."""

from __future__ import annotations

from tftransfer.commands.common import add_data_arguments, add_precision_argument
from tftransfer.config import (FEATURE_CACHE_MODES, FROZEN_BN_MODES, HEAD_INITS, NORMALIZATIONS,
                               SCHEDULES, SUBSET_METHODS, DataConfig, OptimConfig,
                               TransferConfig, apply_overrides, apply_recipe)
from tftransfer.recipes import RECIPES


def register(subparsers):
    from tftransfer.sources import DEFAULT_SOURCE

    parser = subparsers.add_parser(
        "transfer", help="fine-tune a source model on a target dataset",
        description="Put a new head on a source network, fine-tune it and the last N residual "
                    "blocks on a target, and report test accuracy (the paper's recipe by "
                    "default: SGD lr 0.1, momentum 0.9, weight decay 5e-4, batch 128, lr x0.1 "
                    "every epochs/3, normal(0, 1) head). transfer does not resume a killed "
                    "run: the same command run again restarts it from epoch 0, replacing "
                    "that run's files in --out whole; an --out holding a finished run of "
                    "another configuration, or a source model, is refused.")
    parser.add_argument("--target", required=True, help="TFDS name or image folder")
    parser.add_argument("--source", default=None,
                        help=f"registered name or model path (default: {DEFAULT_SOURCE})")
    parser.add_argument("--train-images", type=int, default=None,
                        help="number of training images in total (default: all)")
    parser.add_argument("--test-images", type=int, default=None,
                        help="evaluate on a fixed stratified subset of the test split")
    parser.add_argument("--unfrozen-blocks", type=int, default=0,
                        help="fine-tune the head and the last N residual blocks (-1: all)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--eval-every", type=int, default=1,
                        help="test accuracy every N epochs into history.csv (0: only the last)")
    parser.add_argument("--curve-test-images", type=int, default=None, metavar="K",
                        help="measure that per-epoch curve on a stratified K of the test images "
                             "(faster; the final accuracy always uses all of them)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None,
                        help="run directory (default: runs/transfer/<target>__<source>__n<N>"
                             "__b<blocks>__s<seed>); refused if it holds a finished run of "
                             "another configuration")
    parser.add_argument("--head-init", choices=HEAD_INITS, default="normal",
                        help="normal: the paper's N(0, 1); glorot: Keras' default")
    parser.add_argument("--frozen-bn", choices=FROZEN_BN_MODES, default="inference",
                        help="frozen BatchNorm layers: inference mode (Keras) or updating "
                             "statistics (the paper's PyTorch code)")
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--schedule", choices=SCHEDULES, default="step")
    parser.add_argument("--label-smoothing", type=float, default=0.0)
    parser.add_argument("--image-size", type=int, default=None,
                        help="input size (default: the source's)")
    parser.add_argument("--augment", action="store_true",
                        help="pad-and-crop / flip the training images (disables feature caching)")
    parser.add_argument("--test-fraction", type=float, default=0.2,
                        help="held-out share of an image folder without a test/ sub-folder")
    parser.add_argument("--feature-cache", choices=FEATURE_CACHE_MODES, default="auto")
    parser.add_argument("--normalization", choices=NORMALIZATIONS, default="source",
                        help="input mean/std inside the model: the source's (default), the "
                             "target's fixed per-dataset values as in the paper's code "
                             "(mnist, fashion_mnist, kmnist, cifar10/100, svhn_cropped, food101, "
                             "caltech101), or computed from the N training images (subset)")
    parser.add_argument("--subset", choices=SUBSET_METHODS, default="stratified",
                        help="how the N training images are drawn: stratified and nested "
                             "(default; every class at least once) or uniformly at random as "
                             "the paper's code (robustness make_loaders)")
    parser.add_argument("--recipe", choices=sorted(RECIPES), default=None,
                        help="a named protocol that sets several fields at once, recorded in "
                             "config.json; utrera2021 = the paper's code: --frozen-bn train, "
                             "--normalization target, 150 epochs (lr x0.1 every 50), --subset "
                             "random, the paper's augmentation for colour targets (none for "
                             "grayscale). It overrides those flags; change one with --set")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override any config field, e.g. --set optim.nesterov=true")
    add_precision_argument(parser)
    add_data_arguments(parser)
    parser.set_defaults(run=run)
    return parser


def config_from_args(args) -> TransferConfig:
    """The TransferConfig that the command line describes."""
    cfg = TransferConfig(
        target=args.target, source=args.source, out=args.out,
        data=DataConfig(dataset=args.target, data_dir=args.data_dir, download=args.download,
                        image_size=args.image_size, train_images=args.train_images,
                        test_images=args.test_images, test_fraction=args.test_fraction,
                        augment=args.augment, batch_size=args.batch_size,
                        subset=args.subset),
        optim=OptimConfig(learning_rate=args.lr, momentum=args.momentum,
                          weight_decay=args.weight_decay, schedule=args.schedule,
                          label_smoothing=args.label_smoothing),
        unfrozen_blocks=args.unfrozen_blocks, head_init=args.head_init,
        frozen_bn=args.frozen_bn, epochs=args.epochs, eval_every=args.eval_every,
        curve_test_images=args.curve_test_images, seed=args.seed, precision=args.precision,
        feature_cache=args.feature_cache, normalization=args.normalization)
    return apply_overrides(apply_recipe(cfg, args.recipe), args.set)


def run(args) -> dict:
    from tftransfer.transfer import fine_tune

    # A user's --out may hold a finished result: refuse, rather than replace, a different one.
    return fine_tune(config_from_args(args), existing_run="refuse")
