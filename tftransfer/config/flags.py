"""Command-line flags derived from config fields: each flag's default and type come from its
field, so a default changed in a config class reaches every command that shows it, and a
command line can be written back from a config (``command_line``).

``TRANSFER_FLAGS`` and ``PRETRAIN_FLAGS`` are the two training commands' flags (the field's
dotted path and the flag's help); ``add_flags`` adds them to a parser, ``apply_flags`` sets the
parsed values on a config, and ``typed_flags`` says which of them the command line gave (a
flag the user typed wins over a recipe; its default does not). No TensorFlow here: the CLI
parses without importing it.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from dataclasses import dataclass

from tftransfer.config.run import (DISTRIBUTIONS, FEATURE_CACHE_MODES, FROZEN_BN_MODES,
                                   HEAD_INITS, NORMALIZATIONS, PRECISIONS)
from tftransfer.config.sections import ARCHITECTURES, RESIZE_MODES, SCHEDULES, SUBSET_METHODS


@dataclass(frozen=True)
class Flag:
    """A flag that sets one config field.

    Attributes:
      path: the field's dotted path in the command's config, e.g. ``optim.learning_rate``.
      help: the flag's help text; argparse appends the field's default.
      name: the flag without dashes (default: the path's last part, ``_`` as ``-``).
      choices: the allowed values, when the field takes a fixed set.
      metavar: argparse's metavar.
    """

    path: str
    help: str
    name: str | None = None
    choices: tuple | None = None
    metavar: str | None = None

    @property
    def option(self) -> str:
        """``--learning-rate`` for the flag named ``learning_rate``."""
        return "--" + self.dest.replace("_", "-")

    @property
    def dest(self) -> str:
        """The argparse attribute that holds the flag's value."""
        return self.name or self.path.rsplit(".", 1)[-1]


# The parsed namespace's attribute holding the dests of the flags the command line gave.
TYPED_FLAGS = "typed_flags"


def _note_typed(namespace: argparse.Namespace, dest: str) -> None:
    setattr(namespace, TYPED_FLAGS, getattr(namespace, TYPED_FLAGS, frozenset()) | {dest})


class _TypedValue(argparse.Action):
    """argparse's plain store, noting that the command line gave the flag."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        _note_typed(namespace, self.dest)


class _TypedSwitch(argparse.BooleanOptionalAction):
    """``--name`` / ``--no-name``, noting that the command line gave the flag."""

    def __call__(self, parser, namespace, values, option_string=None):
        super().__call__(parser, namespace, values, option_string)
        _note_typed(namespace, self.dest)


def field_value(config, path: str):
    """The value at the dotted ``path`` of a (nested) config."""
    for part in path.split("."):
        config = getattr(config, part)
    return config


def field_type(cls, path: str) -> type:
    """The declared type of the field at ``path`` of config class ``cls``, without ``None``
    (``int | None`` gives ``int``)."""
    *sections, name = path.split(".")
    for section in sections:
        cls = typing.get_type_hints(cls)[section]
    annotation = typing.get_type_hints(cls)[name]
    options = [a for a in typing.get_args(annotation) if a is not type(None)]
    return options[0] if options else annotation


def add_flags(parser: argparse.ArgumentParser, defaults, flags: tuple[Flag, ...]) -> None:
    """Adds ``flags`` to ``parser``, each defaulting to its field's value in ``defaults``
    (a config holding the command's defaults)."""
    for flag in flags:
        kind = field_type(type(defaults), flag.path)
        default = field_value(defaults, flag.path)
        options = {"dest": flag.dest, "default": default, "metavar": flag.metavar,
                   "help": f"{flag.help} (default: {_shown(default)})".replace("%", "%%")}
        if kind is bool:
            parser.add_argument(flag.option, action=_TypedSwitch, **options)
        else:
            parser.add_argument(flag.option, action=_TypedValue, type=kind,
                                choices=flag.choices, **options)


def apply_flags(config, args: argparse.Namespace, flags: tuple[Flag, ...]):
    """``config`` with every flag's parsed value set on its field."""
    for flag in flags:
        config = replace_field(config, flag.path, getattr(args, flag.dest))
    return config


def typed_flags(args: argparse.Namespace, flags: tuple[Flag, ...]) -> tuple[Flag, ...]:
    """The ``flags`` that the command line parsed into ``args`` gave (typed by the user,
    even with their default's value), not those left at their default."""
    typed = getattr(args, TYPED_FLAGS, frozenset())
    return tuple(flag for flag in flags if flag.dest in typed)


def replace_field(config, path: str, value):
    """A copy of the frozen ``config`` with the field at the dotted ``path`` set to ``value``."""
    name, _, rest = path.partition(".")
    if rest:
        value = replace_field(getattr(config, name), rest, value)
    return dataclasses.replace(config, **{name: value})


def command_line(config, defaults, flags: tuple[Flag, ...]) -> list[str]:
    """The flags (and values) that turn ``defaults`` into ``config``: a command line that
    rebuilds it, listing only what differs from the command's defaults."""
    args: list[str] = []
    for flag in flags:
        value = field_value(config, flag.path)
        if value == field_value(defaults, flag.path):
            continue
        if isinstance(value, bool):
            args.append(flag.option if value else "--no-" + flag.option[2:])
        else:
            args += [flag.option, repr(value) if isinstance(value, float) else str(value)]
    return args


def _shown(value) -> str:
    return "unset" if value is None else str(value)


# The flags shared by both training commands (the same fields in both configs).
_COMMON = (
    Flag("data.batch_size", "training batch size"),
    Flag("data.image_size", "input size in pixels (unset: the source's for transfer, or for a "
         "32 px source on larger photos the size its first line states; the dataset's for "
         "pretrain)"),
    Flag("data.train_images", "number of training images in total, a stratified subset "
         "(unset: all)"),
    Flag("optim.learning_rate", "initial learning rate (SGD)", name="lr"),
    Flag("optim.weight_decay", "L2 penalty added to the loss (PyTorch's coupled weight decay)"),
    Flag("optim.schedule", "learning-rate schedule: step = x0.1 every epochs/3 (or "
         "optim.step_every); one_cycle = linear 0 -> lr -> 0 (Wong et al.'s cyclic schedule)",
         choices=SCHEDULES),
    Flag("seed", "seed of the training subset, the new weights, the batch order and the "
         "augmentation"),
    Flag("precision", "Keras dtype policy: auto = mixed_float16 when TensorFlow sees a GPU, "
         "float32 when not (said on stderr; config.json records the resolved one); whether "
         "mixed_bfloat16 is faster on a CPU depends on the CPU and the model "
         "(bench/photo_step.py measures it)",
         choices=PRECISIONS),
)

TRANSFER_FLAGS = _COMMON + (
    Flag("data.test_images", "evaluate on a fixed stratified subset of this many test images "
         "(unset: all)"),
    Flag("unfrozen_blocks", "fine-tune the head and the last N residual blocks (-1: all)"),
    Flag("unfrozen_stages", "fine-tune the head and the last K stages instead of blocks (their "
         "blocks from the architecture registry: ResNet-50's layer3 + layer4 is 2, i.e. 9 "
         "blocks); config.json records the blocks", metavar="K"),
    Flag("steps", "train for at least N SGD steps instead of --epochs: epochs = ceil(N / steps "
         "per epoch), which config.json records (at N = 100 and batch 128 an epoch is 1 step; "
         "the default --epochs auto is such a step budget too); a run that ends unconverged "
         "carries a warning either way", metavar="N"),
    Flag("head_warmup_epochs", "two-phase fine-tune (keras-io's transfer-learning guide): the "
         "first K of the epochs train the new head alone (the unfrozen blocks frozen, their "
         "BatchNorm in inference mode), the rest head and blocks at --unfrozen-lr-scale x "
         "the schedule's rate (0: one phase); needs unfrozen blocks and uses fit(), not the "
         "compiled loop", metavar="K"),
    Flag("unfrozen_lr_scale", "with --head-warmup-epochs, the learning rate after the "
         "warm-up as a multiple of the schedule's"),
    Flag("eval_every", "test accuracy every N epochs into history.csv (0: only the last; "
         "with --epochs auto the default 1 becomes epochs/20, a curve of at most 20 points)"),
    Flag("curve_test_images", "measure that per-epoch curve on a stratified K of the test "
         "images (faster; the final accuracy always uses all of them)", metavar="K"),
    Flag("head_init", "normal: N(0, --head-std^2), the paper's N(0, 1); glorot: Keras' default",
         choices=HEAD_INITS),
    Flag("head_std", "standard deviation of the normal head (sqrt(2048 / features) gives a "
         "narrow trunk the paper's initial logit size over ResNet-50's 2,048 features)"),
    Flag("frozen_bn", "frozen BatchNorm layers: inference mode (Keras) or updating statistics "
         "(the paper's PyTorch code)", choices=FROZEN_BN_MODES),
    Flag("optim.momentum", "SGD momentum"),
    Flag("optim.label_smoothing", "label smoothing of the cross-entropy (0: none)"),
    Flag("data.resize", "evaluation input and cached features: the shorter side resized and "
         "the centre square taken (aspect kept), or squash the whole image to the square; "
         "square images: the same", choices=RESIZE_MODES),
    Flag("data.crop_fraction", "with center_crop, the square's share of the resized shorter "
         "side (0.875 is ImageNet's 224 of 256)"),
    Flag("data.downsample", "resize every image down to this many pixels a side and back up "
         "to the input size (the paper's runs: 32 px upsampled to 224)", metavar="PX"),
    Flag("data.image_key", "TFDS feature holding the images (unset: the dataset's supervised "
         "keys, else its only image feature)"),
    Flag("data.label_key", "TFDS feature holding the class labels (unset: the supervised keys, "
         "else the only ClassLabel feature)"),
    Flag("data.train_split", "TFDS split (or slice, e.g. 'train[:80%]') to train on (unset: "
         "train)"),
    Flag("data.test_split", "TFDS split (or slice) to test on (unset: test, else validation)"),
    Flag("data.test_fraction", "held-out share of an image folder without a test/ sub-folder"),
    Flag("data.strict_images", "image folders: refuse files that decode but do not look like "
         "photos of the task (a placeholder's name such as 'image not found', a format the "
         "rest of the folder does not use, a byte-identical copy of another file), which are "
         "otherwise named in one warning line and used"),
    Flag("feature_cache", "compute the frozen trunk's outputs once and train on them (auto: "
         "whenever the frozen part sees the same input every epoch)",
         choices=FEATURE_CACHE_MODES),
    Flag("normalization", "input mean/std inside the model: the source's, the target's fixed "
         "per-dataset values as in the paper's code (mnist, fashion_mnist, kmnist, "
         "cifar10/100, svhn_cropped, food101, caltech101), or computed from the N training "
         "images (subset)", choices=NORMALIZATIONS),
    Flag("data.subset", "how the N training images are drawn: stratified and nested (every "
         "class at least once) or uniformly at random as the paper's code (robustness "
         "make_loaders)", choices=SUBSET_METHODS),
)

PRETRAIN_FLAGS = _COMMON + (
    Flag("data.dataset", "TFDS name or image folder"),
    Flag("model.arch", "network architecture", choices=ARCHITECTURES),
    Flag("model.width", "channel-count multiplier"),
    Flag("epochs", "training epochs; more than a finished run in --out had extends it "
         "(recorded as extended_from in config.json)"),
    Flag("optim.warmup_epochs", "linear learning-rate warm-up epochs (cosine schedule)"),
    Flag("eval_every", "test accuracy every N epochs into history.csv (always at the end)"),
    Flag("distribute", "tf.distribute strategy: mirrored = all local GPUs, "
         "multi_worker_mirrored = the workers TF_CONFIG names", choices=DISTRIBUTIONS),
    Flag("adversarial_fraction", "share of each batch replaced by adversarial examples"),
    Flag("free_replays", "--attack-method free: replay each minibatch M times (Shafahi et al., "
         "'Adversarial training for free!', NeurIPS 2019); --epochs is then the budget in "
         "epoch-equivalents: epochs / M passes over the data (epochs must be a multiple of M)",
         metavar="M"),
    Flag("early_stop", "guard against catastrophic overfitting (Wong, Rice & Kolter, 'Fast is "
         "better than free', ICLR 2020): after every epoch, PGD-10 accuracy on "
         "--early-stop-images held-out training images; a fall of more than --early-stop-drop "
         "below the best so far stops the run and keeps the best epoch"),
    Flag("early_stop_images", "training images held out for the early-stopping check"),
    Flag("early_stop_drop", "the collapse threshold, as a fraction of accuracy"),
)
