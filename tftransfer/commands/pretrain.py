"""``pretrain``: train a source model naturally or adversarially (resumable)."""

from __future__ import annotations

from tftransfer.commands.common import (add_attack_arguments, add_data_arguments,
                                        add_precision_argument, attack_config)
from tftransfer.config import (ARCHITECTURES, DISTRIBUTIONS, SCHEDULES, DataConfig, ModelConfig,
                               OptimConfig, PretrainConfig, apply_overrides)


def register(subparsers):
    parser = subparsers.add_parser(
        "pretrain", help="train a source model (naturally, or adversarially with --attack)",
        description="Train a torchvision-layout ResNet with fit(). Re-running the same command "
                    "after an interruption resumes from the last finished epoch. Adversarial "
                    "training: --attack l2|linf with --attack-method pgd (default), fgsm_rs "
                    "(fast: one step from a random start, Wong et al. 2020; pair it with "
                    "--schedule one_cycle and --early-stop, as they did) or free (Shafahi et "
                    "al. 2019, with --free-replays).")
    parser.add_argument("--dataset", default="cifar10", help="TFDS name or image folder")
    parser.add_argument("--arch", choices=ARCHITECTURES, default="resnet20",
                        help="network architecture")
    parser.add_argument("--width", type=float, default=1.0, help="channel-count multiplier")
    parser.add_argument("--out", required=True, help="run directory (e.g. saved_models/NAME)")
    parser.add_argument("--allow-dirty", action="store_true",
                        help="train from code with uncommitted changes (the model's "
                             "git_commit is then marked +dirty); without it pretrain refuses")
    parser.add_argument("--epochs", type=int, default=30,
                        help="training epochs; more than a finished run in --out had extends "
                             "it (recorded as extended_from in config.json)")
    parser.add_argument("--batch-size", type=int, default=128, help="training batch size")
    parser.add_argument("--lr", type=float, default=0.1, help="peak learning rate (SGD)")
    parser.add_argument("--weight-decay", type=float, default=5e-4,
                        help="L2 penalty added to the loss")
    parser.add_argument("--schedule", choices=SCHEDULES, default="cosine",
                        help="one_cycle: linear 0 -> --lr -> 0, peaking at --warmup-epochs "
                             "(default 2/5 of the run; Wong et al.'s cyclic schedule)")
    parser.add_argument("--warmup-epochs", type=int, default=0,
                        help="linear learning-rate warm-up epochs (cosine schedule)")
    parser.add_argument("--image-size", type=int, default=None,
                        help="input size in pixels (default: the dataset's)")
    parser.add_argument("--train-images", type=int, default=None,
                        help="train on a stratified subset of this many images (default: all)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the weights, the subset, the batch order and augmentation")
    parser.add_argument("--eval-every", type=int, default=1,
                        help="test accuracy every N epochs into history.csv (always at the end)")
    parser.add_argument("--no-augment", action="store_true",
                        help="no pad-and-crop / flip augmentation")
    parser.add_argument("--distribute", choices=DISTRIBUTIONS, default="none",
                        help="tf.distribute strategy: mirrored = all local GPUs, "
                             "multi_worker_mirrored = the workers TF_CONFIG names")
    parser.add_argument("--adversarial-fraction", type=float, default=1.0,
                        help="share of each batch replaced by adversarial examples")
    parser.add_argument("--free-replays", type=int, default=8, metavar="M",
                        help="--attack-method free: replay each minibatch M times (Shafahi et "
                             "al., 'Adversarial training for free!', NeurIPS 2019); --epochs "
                             "is then the budget in epoch-equivalents: epochs / M passes over "
                             "the data, M optimizer steps per minibatch (epochs must be a "
                             "multiple of M; history rows count passes)")
    parser.add_argument("--early-stop", action="store_true",
                        help="guard against catastrophic overfitting (Wong, Rice & Kolter, "
                             "'Fast is better than free', ICLR 2020): after every epoch, "
                             "PGD-10 accuracy on --early-stop-images training images held "
                             "out of training; a fall of more than --early-stop-drop below "
                             "the best so far stops the run and keeps the best epoch")
    parser.add_argument("--early-stop-images", type=int, default=512,
                        help="training images held out for the early-stopping check")
    parser.add_argument("--early-stop-drop", type=float, default=0.2,
                        help="the collapse threshold, as a fraction of accuracy")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override any config field, e.g. --set optim.nesterov=true")
    add_attack_arguments(parser, default_steps=7)
    add_precision_argument(parser)
    add_data_arguments(parser)
    parser.set_defaults(run=run, resumable=True)
    return parser


def run(args) -> dict:
    from tftransfer import runs
    from tftransfer.training.pretrain import pretrain

    runs.require_committed_code(args.allow_dirty)
    cfg = PretrainConfig(
        out=args.out,
        data=DataConfig(dataset=args.dataset, data_dir=args.data_dir, download=args.download,
                        image_size=args.image_size, train_images=args.train_images,
                        augment=not args.no_augment, batch_size=args.batch_size),
        model=ModelConfig(arch=args.arch, width=args.width),
        attack=attack_config(args),
        optim=OptimConfig(learning_rate=args.lr, weight_decay=args.weight_decay,
                          schedule=args.schedule, warmup_epochs=args.warmup_epochs),
        epochs=args.epochs, seed=args.seed, precision=args.precision,
        distribute=args.distribute, adversarial_fraction=args.adversarial_fraction,
        eval_every=args.eval_every, free_replays=args.free_replays, early_stop=args.early_stop,
        early_stop_images=args.early_stop_images, early_stop_drop=args.early_stop_drop)
    return pretrain(apply_overrides(cfg, args.set))
