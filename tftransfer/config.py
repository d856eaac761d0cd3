"""Frozen, validated experiment configs and typed ``--set section.field=value`` overrides.

Configs are plain frozen dataclasses: they serialize to the ``config.json`` of every
run (``to_dict``) and validate themselves on construction, so an impossible config
stops with one sentence before any TensorFlow work starts.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import typing
from dataclasses import dataclass, field

from tftransfer import attack_methods
from tftransfer import architectures
from tftransfer.errors import UserError
from tftransfer.recipes import RECIPES

ATTACKS = ("none", "l2", "linf")
ARCHITECTURES = architectures.NAMES       # the registry imports no TensorFlow
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
DISTRIBUTIONS = ("none", "mirrored", "multi_worker_mirrored")
SCHEDULES = ("cosine", "step", "constant", "one_cycle")
SUBSET_METHODS = ("stratified", "random")
AUGMENT_POLICIES = ("pad_crop_flip", "utrera2021", "imagenet")
# --augment presets -> (data.augment, data.augment_policy); config.json keeps the policy names.
AUGMENT_PRESETS = {"none": (False, "pad_crop_flip"), "cifar": (True, "pad_crop_flip"),
                   "paper": (True, "utrera2021"), "imagenet": (True, "imagenet")}
# How an image becomes the evaluation input (data.Preprocessing, which checks the same names).
RESIZE_MODES = ("center_crop", "squash")
SWEEP_ORDERS = ("source", "train_images")
# Choices of the interpretation commands (here so that the CLI lists them without TensorFlow).
SALIENCY_RENDERINGS = ("abs", "image")
INFLUENCE_METHODS = ("auto", "exact", "cg")
INFLUENCE_RANKINGS = ("helpful", "absolute")
TUNERS = ("hyperband", "bayesian", "random")
TUNE_DEFAULT_MAX_TRIALS = 10                # random and bayesian; Hyperband sizes itself
# Seeds go to numpy's legacy seeding (np.random.seed via keras.utils.set_random_seed, and
# RandomState for --subset random), which takes only 0 <= seed < 2**32.
SEED_LIMIT = 2 ** 32


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise UserError(message)


def _check_finite(config) -> None:
    """Every float field of ``config`` (and float in a tuple field) must be finite: ``inf``
    and ``nan`` parse as floats (``--lr inf``), pass comparisons such as ``> 0``, and would
    train, save and report an all-NaN model."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        for item in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(item, numbers.Real) and not isinstance(item, numbers.Integral):
                _check(math.isfinite(item), f"{f.name} must be a finite number, got {item}.")


def check_seed(seed, name: str = "seed") -> None:
    """A seed must be a whole number in [0, 2**32) (``SEED_LIMIT``)."""
    valid = isinstance(seed, numbers.Integral) and not isinstance(seed, bool)
    _check(valid and 0 <= seed < SEED_LIMIT,
           f"{name} must be a whole number from 0 to {SEED_LIMIT - 1}, got {seed!r}.")


def _check_values(owner: str, name: str, values) -> None:
    """``values`` must be a non-empty tuple or list (a bare value is a common slip)."""
    _check(isinstance(values, (tuple, list)),
           f"{owner}: {name} must be a tuple or list, got {values!r}.")
    _check(len(values) > 0, f"{owner}: {name} is empty.")


@dataclass(frozen=True)
class DataConfig:
    """Which images, at what size, and how they are fed."""

    dataset: str = "cifar10"
    data_dir: str | None = None
    download: bool = True
    image_size: int | None = None          # None: the dataset's own size
    train_images: int | None = None        # None: the whole training split
    test_images: int | None = None         # None: the whole test split
    test_fraction: float = 0.2             # image folders without a test/ sub-folder
    augment: bool = True
    color_jitter: bool = False
    # pad_crop_flip: pad-and-crop + flip (+ color_jitter); utrera2021: the paper's target
    # augmentation (see data.paper_augment), none at all for grayscale targets; imagenet:
    # random-resized crop + flip (data.imagenet_augment).
    augment_policy: str = "pad_crop_flip"
    # Evaluation input (and cached features): the centre square of the shorter side resized to
    # image_size / crop_fraction, or the whole image squashed; square images: the same pixels.
    resize: str = "center_crop"
    crop_fraction: float = 1.0
    # TFDS feature keys and split names (None: supervised keys / train and test or validation).
    image_key: str | None = None
    label_key: str | None = None
    train_split: str | None = None
    test_split: str | None = None
    # stratified: every class at least once, nested in N; random: robustness' make_loaders
    # (uniform, numpy RandomState(seed).choice without replacement), as the paper's code.
    subset: str = "stratified"
    batch_size: int = 128

    def __post_init__(self):
        _check_finite(self)
        _check(self.image_size is None or self.image_size >= 8,
               f"image_size must be at least 8 pixels, got {self.image_size}.")
        _check(self.train_images is None or self.train_images >= 2,
               f"train_images must be at least 2, got {self.train_images}.")
        _check(self.test_images is None or self.test_images >= 1,
               f"test_images must be positive, got {self.test_images}.")
        _check(0.0 < self.test_fraction < 1.0,
               f"test_fraction must be between 0 and 1, got {self.test_fraction}.")
        _check(self.batch_size >= 1, f"batch_size must be positive, got {self.batch_size}.")
        _check(self.subset in SUBSET_METHODS,
               f"subset must be one of {', '.join(SUBSET_METHODS)}, got {self.subset!r}.")
        _check(self.augment_policy in AUGMENT_POLICIES,
               f"augment_policy must be one of {', '.join(AUGMENT_POLICIES)}, "
               f"got {self.augment_policy!r}.")
        _check(self.resize in RESIZE_MODES,
               f"resize must be one of {', '.join(RESIZE_MODES)}, got {self.resize!r}.")
        _check(0.0 < self.crop_fraction <= 1.0,
               f"crop_fraction must be in (0, 1], got {self.crop_fraction}.")

    def load_options(self) -> dict:
        """The keyword arguments of ``data.load`` beyond the name, directory and download:
        feature keys, splits and evaluation preprocessing."""
        return {"test_fraction": self.test_fraction, "image_key": self.image_key,
                "label_key": self.label_key, "train_split": self.train_split,
                "test_split": self.test_split, "resize": self.resize,
                "crop_fraction": self.crop_fraction}


@dataclass(frozen=True)
class AttackConfig:
    """A threat model in [0, 1] pixel space: a ``norm`` (``none`` is natural training) and
    a ``method`` from the registry ``attack_methods.METHODS`` (pgd, fgsm_rs, free).

    ``kind`` is the single field of configs written before the norm and the method were
    separate (``kind='l2'`` was L2 PGD); it is still accepted, here and in ``from_dict``.
    """

    norm: str = "none"
    eps: float = 0.5
    steps: int = 7
    step_size: float | None = None         # None: the method's default (PGD: 2.5 * eps / steps)
    random_start: bool = False             # PGD only; fgsm_rs always starts at random
    method: str = "pgd"
    kind: dataclasses.InitVar[str | None] = None

    def __post_init__(self, kind):
        if kind is not None:
            _check(self.norm in ("none", kind),
                   f"attack: give norm or the old kind, not both ({self.norm!r} vs {kind!r}).")
            object.__setattr__(self, "norm", kind)
        _check_finite(self)
        _check(self.norm in ATTACKS,
               f"attack must be one of {', '.join(ATTACKS)}, got {self.norm!r}.")
        method = attack_methods.get(self.method)
        if self.norm != "none":
            _check(self.eps > 0, f"eps must be positive for a {self.norm} attack, got {self.eps}.")
            _check(not method.uses_steps or self.steps >= 1,
                   f"attack steps must be at least 1, got {self.steps}.")
            _check(self.step_size is None or self.step_size > 0,
                   f"attack step size must be positive, got {self.step_size}.")

    @property
    def replays_batches(self) -> bool:
        """Whether training replays minibatches and carries the perturbation (free)."""
        return self.norm != "none" and attack_methods.get(self.method).replays_batches

    @property
    def resolved_step_size(self) -> float:
        """The step size, defaulting to the method's (PGD: the robustness library's
        2.5 * eps / steps)."""
        if self.step_size is not None:
            return self.step_size
        return attack_methods.get(self.method).default_step_size(self.eps, self.steps)

    def describe(self) -> dict:
        """The settings a result row records (PGD's columns as before methods existed)."""
        if self.norm == "none":
            return {"attack": "none"}
        row = {"attack": self.norm, "eps": self.eps}
        if self.method != "pgd":
            row["attack_method"] = self.method
        if attack_methods.get(self.method).uses_steps:
            row["attack_steps"] = self.steps
        row["attack_step_size"] = self.resolved_step_size
        if self.method == "pgd":
            row["random_start"] = self.random_start
        return row

    @classmethod
    def from_record(cls, row: dict) -> "AttackConfig":
        """The config of a ``describe()`` row (e.g. ``config.json``'s ``attack``)."""
        if row.get("attack", "none") == "none":
            return cls()
        return cls(norm=row["attack"], eps=row["eps"], method=row.get("attack_method", "pgd"),
                   steps=row.get("attack_steps", cls.steps),
                   step_size=row.get("attack_step_size"),
                   random_start=row.get("random_start", False))


@dataclass(frozen=True)
class OptimConfig:
    """SGD recipe. The defaults are the paper's fine-tuning recipe."""

    learning_rate: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    schedule: str = "step"                 # step: x0.1 every epochs/3 (the paper's)
    step_every: int | None = None          # epochs between x0.1 steps (None: epochs // 3)
    warmup_epochs: int = 0
    label_smoothing: float = 0.0

    def __post_init__(self):
        _check_finite(self)
        _check(self.learning_rate > 0, f"learning_rate must be positive, got {self.learning_rate}.")
        _check(0.0 <= self.momentum < 1.0, f"momentum must be in [0, 1), got {self.momentum}.")
        _check(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}.")
        _check(self.schedule in SCHEDULES,
               f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}.")
        _check(self.step_every is None or self.step_every >= 1,
               f"step_every must be at least 1 epoch, got {self.step_every}.")
        _check(self.warmup_epochs >= 0, f"warmup_epochs must be >= 0, got {self.warmup_epochs}.")
        _check(0.0 <= self.label_smoothing < 1.0,
               f"label_smoothing must be in [0, 1), got {self.label_smoothing}.")


@dataclass(frozen=True)
class ModelConfig:
    """A registered architecture (``tftransfer.architectures``), e.g. a torchvision-layout ResNet."""

    arch: str = "resnet20"
    width: float = 1.0
    small_inputs: bool | None = None       # None: yes for images of 64 pixels or fewer

    def __post_init__(self):
        _check_finite(self)
        _check(self.arch in ARCHITECTURES,
               f"arch must be one of {', '.join(ARCHITECTURES)}, got {self.arch!r}.")
        _check(self.width > 0, f"width must be positive, got {self.width}.")


@dataclass(frozen=True)
class PretrainConfig:
    """Training a source model, naturally or adversarially."""

    out: str
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(schedule="cosine"))
    epochs: int = 30
    seed: int = 0
    precision: str = "float32"
    distribute: str = "none"
    adversarial_fraction: float = 1.0      # share of each batch replaced by its adversarial copy
    eval_every: int = 1                    # test accuracy every N epochs (and at the end)
    # method free: each minibatch is replayed this many times, and ``epochs`` counts
    # epoch-equivalents of gradient computations: epochs / free_replays passes over the data.
    free_replays: int = 8                  # Shafahi et al.'s m (8 for CIFAR-10)
    # Wong et al.'s guard against catastrophic overfitting: PGD accuracy on held-out
    # training images after every epoch; a drop of more than early_stop_drop below the
    # best so far stops the run and keeps the best epoch's weights.
    early_stop: bool = False
    early_stop_images: int = 512
    early_stop_drop: float = 0.2

    def __post_init__(self):
        _check_finite(self)
        check_seed(self.seed)
        _check(self.epochs >= 1, f"epochs must be at least 1, got {self.epochs}.")
        _check(self.eval_every >= 1, f"eval_every must be at least 1, got {self.eval_every}.")
        _check(self.precision in PRECISIONS,
               f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}.")
        _check(self.distribute in DISTRIBUTIONS,
               f"distribute must be one of {', '.join(DISTRIBUTIONS)}, got {self.distribute!r}.")
        _check(0.0 < self.adversarial_fraction <= 1.0,
               f"adversarial_fraction must be in (0, 1], got {self.adversarial_fraction}.")
        self._check_method_options()

    def _check_method_options(self) -> None:
        _check(self.free_replays >= 1, f"free_replays must be at least 1, got {self.free_replays}.")
        if self.attack.replays_batches:
            _check(self.epochs % self.free_replays == 0,
                   f"free training runs epochs / free_replays passes over the data, so epochs "
                   f"({self.epochs}) must be a multiple of free_replays ({self.free_replays}).")
            _check(self.distribute == "none",
                   f"free training carries its perturbation on one device; use distribute "
                   f"none, got {self.distribute!r}.")
            _check(self.adversarial_fraction == 1.0,
                   f"free training perturbs every example; adversarial_fraction must be 1, got "
                   f"{self.adversarial_fraction}.")
        if self.early_stop:
            _check(self.attack.norm != "none",
                   "early_stop checks PGD accuracy and needs an attack (--attack l2 or linf).")
            _check(self.early_stop_images >= 1,
                   f"early_stop_images must be positive, got {self.early_stop_images}.")
            _check(0.0 < self.early_stop_drop <= 1.0,
                   f"early_stop_drop must be in (0, 1], got {self.early_stop_drop}.")

    @property
    def passes(self) -> int:
        """Passes over the training data: ``epochs``, or epochs / free_replays for free
        training (each of its passes replays every minibatch free_replays times)."""
        if self.attack.replays_batches:
            return self.epochs // self.free_replays
        return self.epochs


def to_dict(config) -> dict:
    """A config as plain JSON-ready data."""
    return dataclasses.asdict(config)


def from_dict(cls, data: dict):
    """Rebuilds a (nested) config from ``to_dict`` output, ignoring unknown keys."""
    hints = typing.get_type_hints(cls)
    # Init-only fields too: a config's old spelling (AttackConfig's ``kind``) still loads.
    names = [f.name for f in dataclasses.fields(cls)] + [
        name for name, hint in hints.items() if isinstance(hint, dataclasses.InitVar)]
    kwargs = {}
    for name in names:
        if name not in data:
            continue
        value = data[name]
        if dataclasses.is_dataclass(hints[name]) and isinstance(value, dict):
            value = from_dict(hints[name], value)
        kwargs[name] = value
    return cls(**kwargs)


def apply_overrides(config, assignments) -> object:
    """Returns ``config`` with ``section.field=value`` assignments applied.

    Values are cast by the field's declared type (int, float, bool, str, optional
    versions of those); nothing is evaluated as code.

    Args:
      config: a frozen config dataclass.
      assignments: strings such as ``"optim.learning_rate=0.01"`` or ``"epochs=20"``.
    """
    for assignment in assignments or ():
        if "=" not in assignment:
            raise UserError(f"--set expects FIELD=VALUE, got {assignment!r}.")
        path, raw = assignment.split("=", 1)
        config = _set_path(config, path.strip().split("."), raw.strip(), path)
    return config


def apply_recipe(cfg: "TransferConfig", name: str | None) -> "TransferConfig":
    """``cfg`` with the named recipe's assignments (``recipes.RECIPES``) applied and
    ``recipe`` set to ``name``; ``cfg`` itself for None."""
    if name is None:
        return cfg
    if name not in RECIPES:
        raise UserError(f"Unknown recipe {name!r}; known recipes: {', '.join(sorted(RECIPES))}.")
    return dataclasses.replace(apply_overrides(cfg, RECIPES[name]), recipe=name)


def _set_path(config, parts, raw, full_path):
    hints = typing.get_type_hints(type(config))
    name = parts[0]
    if name not in hints:
        valid = ", ".join(f.name for f in dataclasses.fields(config))
        raise UserError(f"--set {full_path}: {type(config).__name__} has no field {name!r} "
                        f"(fields: {valid}).")
    if len(parts) > 1:
        child = getattr(config, name)
        if not dataclasses.is_dataclass(child):
            raise UserError(f"--set {full_path}: {name!r} is not a section.")
        return dataclasses.replace(config, **{name: _set_path(child, parts[1:], raw, full_path)})
    return dataclasses.replace(config, **{name: _cast(raw, hints[name], full_path)})


def _cast(raw: str, annotation, full_path):
    options = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    if type(None) in typing.get_args(annotation) and raw.lower() in ("none", "null", ""):
        return None
    target = options[0]
    try:
        if target is bool:
            if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(raw)
            return raw.lower() in ("true", "1", "yes")
        if target in (int, float, str):
            return target(raw)
    except ValueError:
        raise UserError(f"--set {full_path}: {raw!r} is not a valid {target.__name__}.") from None
    raise UserError(f"--set {full_path}: fields of type {annotation} cannot be set from the CLI.")


HEAD_INITS = ("normal", "glorot")
FROZEN_BN_MODES = ("inference", "train")
FEATURE_CACHE_MODES = ("auto", "on", "off")
# Cached trunk features held in memory; beyond it they go to files on disk (feature_store).
DEFAULT_FEATURE_CACHE_MEMORY = "2GB"
_SIZE_UNITS = {"": 1, "B": 1, "KB": 10 ** 3, "MB": 10 ** 6, "GB": 10 ** 9, "TB": 10 ** 12,
               "KIB": 2 ** 10, "MIB": 2 ** 20, "GIB": 2 ** 30, "TIB": 2 ** 40}
# source: keep the source's normalize layer; target: the target's fixed per-dataset statistics
# (data.TARGET_STATISTICS, the paper's); subset: computed from the run's N training images.
NORMALIZATIONS = ("source", "target", "subset")
# auto: the compiled multi-epoch loop (compiled_loop.py) on cached features, fit() otherwise.
TRAINING_LOOPS = ("auto", "fit", "compiled")


def parse_size(text: str) -> int:
    """Bytes in ``text``: a number with an optional unit, ``2GB``, ``500MB``, ``1.5GiB``,
    ``0`` (KB/MB/GB are powers of 1000, KiB/MiB/GiB of 1024)."""
    raw = str(text).strip().upper().replace(" ", "")
    number = raw.rstrip("KMGTIB")
    unit = raw[len(number):]
    try:
        value = float(number)
    except ValueError:
        value = -1.0
    _check(unit in _SIZE_UNITS and math.isfinite(value) and value >= 0,
           f"{text!r} is not a size; give bytes with an optional unit, e.g. 2GB or 500MB.")
    return int(value * _SIZE_UNITS[unit])


@dataclass(frozen=True)
class TransferConfig:
    """Fine-tuning a source model on a target: the paper's variables and recipe.

    Defaults follow the paper: SGD lr 0.1, momentum 0.9, weight decay 5e-4, batch 128,
    learning rate x0.1 every epochs/3, a normal(0, 1) head. No augmentation by default:
    the paper's variable is the number of training images, and without augmentation the
    frozen trunk's features can be computed once (feature caching).
    """

    target: str
    source: str | None = None              # None: the registered default source
    out: str | None = None                 # run directory (None: runs/transfer/<auto name>)
    data: DataConfig = field(default_factory=lambda: DataConfig(augment=False))
    optim: OptimConfig = field(default_factory=OptimConfig)
    unfrozen_blocks: int = 0               # 0 head only; -1 everything
    # The last K stages (architectures.Stage) instead; fine_tune resolves it to their blocks.
    unfrozen_stages: int | None = None
    head_init: str = "normal"
    frozen_bn: str = "inference"
    epochs: int = 10
    # SGD steps instead of epochs: fine_tune sets epochs to ceil(steps / steps per epoch).
    steps: int | None = None
    eval_every: int = 1
    curve_test_images: int | None = None   # per-epoch curve on a stratified part of the test set
    seed: int = 0
    precision: str = "float32"
    feature_cache: str = "auto"
    normalization: str = "source"
    recipe: str | None = None              # the preset applied (recipes.RECIPES), recorded
    training_loop: str = "auto"

    def __post_init__(self):
        _check(self.training_loop in TRAINING_LOOPS, f"training_loop must be one of "
               f"{', '.join(TRAINING_LOOPS)}, got {self.training_loop!r}.")
        _check(self.recipe is None or self.recipe in RECIPES,
               f"recipe must be one of {', '.join(sorted(RECIPES))}, got {self.recipe!r}.")
        _check(self.normalization in NORMALIZATIONS,
               f"normalization must be one of {', '.join(NORMALIZATIONS)}, "
               f"got {self.normalization!r}.")
        _check(self.unfrozen_blocks >= -1,
               f"unfrozen_blocks must be -1 (everything) or >= 0, got {self.unfrozen_blocks}.")
        _check(self.head_init in HEAD_INITS,
               f"head_init must be one of {', '.join(HEAD_INITS)}, got {self.head_init!r}.")
        _check(self.frozen_bn in FROZEN_BN_MODES,
               f"frozen_bn must be one of {', '.join(FROZEN_BN_MODES)}, got {self.frozen_bn!r}.")
        _check(self.epochs >= 1, f"epochs must be at least 1, got {self.epochs}.")
        _check(self.steps is None or self.steps >= 1,
               f"steps must be at least 1, got {self.steps}.")
        _check(self.unfrozen_stages is None or self.unfrozen_stages >= 0,
               f"unfrozen_stages must be >= 0, got {self.unfrozen_stages}.")
        _check(self.eval_every >= 0, f"eval_every must be >= 0, got {self.eval_every}.")
        _check(self.curve_test_images is None or self.curve_test_images >= 1,
               f"curve_test_images must be positive, got {self.curve_test_images}.")
        _check(self.precision in PRECISIONS,
               f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}.")
        _check(self.feature_cache in FEATURE_CACHE_MODES,
               f"feature_cache must be one of {', '.join(FEATURE_CACHE_MODES)}, "
               f"got {self.feature_cache!r}.")
        _check_finite(self)
        check_seed(self.seed)


@dataclass(frozen=True)
class CellOverride:
    """Per-cell exceptions of a sweep: cells with these N (and, if given, these numbers of
    unfrozen blocks) get other seeds and/or epochs. Later overrides win."""

    train_images: tuple
    seeds: tuple | None = None
    epochs: int | None = None
    unfrozen_blocks: tuple | None = None   # None: any

    def __post_init__(self):
        # A bare int would fail later in ``in`` with a TypeError; an empty tuple never matches
        # (N, blocks) or leaves a cell without runs (seeds).
        _check_values("cell override", "train_images", self.train_images)
        for name in ("seeds", "unfrozen_blocks"):
            if getattr(self, name) is not None:
                _check_values("cell override", name, getattr(self, name))
        for seed in self.seeds or ():
            check_seed(seed, "cell override: each of seeds")
        _check(self.epochs is None or self.epochs >= 1,
               f"cell override: epochs must be at least 1, got {self.epochs}.")

    def matches(self, train_images: int, unfrozen_blocks: int) -> bool:
        """Whether this override applies to cells with this N and number of blocks."""
        return train_images in self.train_images and (
            self.unfrozen_blocks is None or unfrozen_blocks in self.unfrozen_blocks)


@dataclass(frozen=True)
class SweepConfig:
    """A grid of fine-tuning runs: sources x targets x N x unfrozen blocks x seeds.

    ``recipe`` holds ``--set``-style assignments applied to every run's TransferConfig
    (e.g. ``"optim.learning_rate=0.01"``).
    """

    name: str
    sources: tuple
    targets: tuple
    train_images: tuple
    unfrozen_blocks: tuple
    seeds: tuple
    epochs: int
    test_images: int | None = None
    eval_every: int = 1
    curve_test_images: int | None = None   # the per-epoch curve on this many test images
    overrides: tuple = ()
    recipe: tuple = ()
    preset: str | None = None              # a named recipe (recipes.RECIPES) under ``recipe``
    # source: cells grouped by source and target (consecutive runs share cached features);
    # train_images: smallest N first, so a long grid has every source's small-N cells early.
    order: str = "source"
    description: str = ""

    def __post_init__(self):
        for name in ("sources", "targets", "train_images", "unfrozen_blocks", "seeds"):
            _check_values(f"sweep {self.name!r}", name, getattr(self, name))
        for seed in self.seeds:
            check_seed(seed, f"sweep {self.name!r}: each of seeds")
        _check(self.epochs >= 1, f"sweep {self.name!r}: epochs must be at least 1.")
        _check(all(n >= 2 for n in self.train_images),
               f"sweep {self.name!r}: every train_images value must be at least 2.")
        _check(all(b >= -1 for b in self.unfrozen_blocks),
               f"sweep {self.name!r}: unfrozen_blocks values must be -1 or >= 0.")
        _check(isinstance(self.overrides, (tuple, list)),
               f"sweep {self.name!r}: overrides must be a tuple of CellOverride objects.")
        for override in self.overrides:
            _check(isinstance(override, CellOverride),
                   f"sweep {self.name!r}: overrides must be CellOverride objects.")
            self._check_override_in_grid(override)
        _check(self.order in SWEEP_ORDERS, f"sweep {self.name!r}: order must be one of "
                                           f"{', '.join(SWEEP_ORDERS)}, got {self.order!r}.")
        _check(self.preset is None or self.preset in RECIPES,
               f"sweep {self.name!r}: preset must be one of {', '.join(sorted(RECIPES))}, "
               f"got {self.preset!r}.")
        for assignment in self.recipe:
            apply_overrides(TransferConfig(target="x"), [assignment])  # validates each one

    def _check_override_in_grid(self, override: CellOverride) -> None:
        # A value outside the grid can never match a cell: most likely a typo, silently a no-op.
        for name in ("train_images", "unfrozen_blocks"):
            grid = getattr(self, name)
            outside = [value for value in getattr(override, name) or () if value not in grid]
            _check(not outside, f"sweep {self.name!r}: override {name} value(s) {outside} are "
                                f"not in the grid {tuple(grid)}, so they would never apply.")
