"""The sections of a run's config: which data, which threat model, which optimizer, which model.

Frozen dataclasses that validate themselves on construction; ``config.run`` nests them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from tftransfer.models import architectures
from tftransfer.config import attack_methods
from tftransfer.config.checks import check, check_finite
from tftransfer.config.overrides import from_dict

ATTACKS = ("none", "l2", "linf")
ARCHITECTURES = architectures.NAMES       # the registry imports no TensorFlow
SCHEDULES = ("cosine", "step", "constant", "one_cycle")
SUBSET_METHODS = ("stratified", "random")
AUGMENT_POLICIES = ("pad_crop_flip", "utrera2021", "imagenet")
# --augment presets -> (data.augment, data.augment_policy); config.json keeps the policy names.
AUGMENT_PRESETS = {"none": (False, "pad_crop_flip"), "cifar": (True, "pad_crop_flip"),
                   "paper": (True, "utrera2021"), "imagenet": (True, "imagenet")}
# How an image becomes the evaluation input (data.Preprocessing, which checks the same names).
RESIZE_MODES = ("center_crop", "squash")


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
    # Every image (train and test) resized down to this many pixels a side and back up to the
    # input size, as the paper's runs did (32 px, then 224): the detail a low-resolution target
    # has. None: not done.
    downsample: int | None = None
    # TFDS feature keys and split names (None: supervised keys / train and test or validation).
    image_key: str | None = None
    label_key: str | None = None
    train_split: str | None = None
    test_split: str | None = None
    # stratified: every class at least once, nested in N; random: robustness' make_loaders
    # (uniform, numpy RandomState(seed).choice without replacement), as the paper's code.
    subset: str = "stratified"
    batch_size: int = 128
    # Image folders: files that decode but do not look like photos of the task (a placeholder's
    # name, an odd format, a byte-identical copy) stop the load instead of a warning.
    strict_images: bool = False

    def __post_init__(self):
        check_finite(self)
        check(self.image_size is None or self.image_size >= 8,
              f"image_size must be at least 8 pixels, got {self.image_size}.")
        check(self.train_images is None or self.train_images >= 2,
              f"train_images must be at least 2, got {self.train_images}.")
        check(self.test_images is None or self.test_images >= 1,
              f"test_images must be positive, got {self.test_images}.")
        check(0.0 < self.test_fraction < 1.0,
              f"test_fraction must be between 0 and 1, got {self.test_fraction}.")
        check(self.batch_size >= 1, f"batch_size must be positive, got {self.batch_size}.")
        check(self.subset in SUBSET_METHODS,
              f"subset must be one of {', '.join(SUBSET_METHODS)}, got {self.subset!r}.")
        check(self.augment_policy in AUGMENT_POLICIES,
              f"augment_policy must be one of {', '.join(AUGMENT_POLICIES)}, "
              f"got {self.augment_policy!r}.")
        check(self.resize in RESIZE_MODES,
              f"resize must be one of {', '.join(RESIZE_MODES)}, got {self.resize!r}.")
        check(0.0 < self.crop_fraction <= 1.0,
              f"crop_fraction must be in (0, 1], got {self.crop_fraction}.")
        check(self.downsample is None or self.downsample >= 2,
              f"downsample must be at least 2 pixels, got {self.downsample}.")

    def load_options(self) -> dict:
        """The keyword arguments of ``data.load`` beyond the name, directory and download:
        feature keys, splits and evaluation preprocessing."""
        return {"test_fraction": self.test_fraction, "image_key": self.image_key,
                "label_key": self.label_key, "train_split": self.train_split,
                "test_split": self.test_split, "resize": self.resize,
                "crop_fraction": self.crop_fraction, "downsample": self.downsample}


# What a model's preprocessing is, whichever dataset it is applied to (the rest of a run's data
# options name its own dataset's keys and splits).
PREPROCESSING_OPTIONS = ("resize", "crop_fraction", "downsample")


def recorded_load_options(run_config: dict | None, dataset: str | None = None) -> dict:
    """The ``data.load`` options a run recorded (its ``config.json``'s ``resolved_config``), for
    loading ``dataset`` with the model that run wrote.

    The evaluation preprocessing and the test fraction always carry over: they are how the
    model was fed and which images it held out. The TFDS feature keys and split names carry
    over only when ``dataset`` is the run's own dataset (None: it is); another dataset's
    names mean nothing here. A config without a resolved data section gives ``{}``, so
    ``data.load``'s defaults apply (a converted checkpoint, an old export).
    """
    resolved = (run_config or {}).get("resolved_config")
    settings = resolved.get("data") if isinstance(resolved, dict) else None
    if not isinstance(settings, dict):
        return {}
    options = from_dict(DataConfig, settings).load_options()
    own = resolved.get("target") or settings.get("dataset")
    if dataset is not None and not _same_dataset(dataset, own):
        options = {key: options[key] for key in ("test_fraction", *PREPROCESSING_OPTIONS)}
    return options


def _same_dataset(a: str, b: str | None) -> bool:
    """Whether two dataset names (TFDS names or folders, spelled either way) are one dataset."""
    if a == b:
        return True
    if b is None:
        return False
    first, second = Path(a).expanduser(), Path(b).expanduser()
    return first.exists() and second.exists() and first.resolve() == second.resolve()


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
            check(self.norm in ("none", kind),
                  f"attack: give norm or the old kind, not both ({self.norm!r} vs {kind!r}).")
            object.__setattr__(self, "norm", kind)
        check_finite(self)
        check(self.norm in ATTACKS,
              f"attack must be one of {', '.join(ATTACKS)}, got {self.norm!r}.")
        method = attack_methods.get(self.method)
        if self.norm != "none":
            check(self.eps > 0, f"eps must be positive for a {self.norm} attack, got {self.eps}.")
            check(not method.uses_steps or self.steps >= 1,
                  f"attack steps must be at least 1, got {self.steps}.")
            check(self.step_size is None or self.step_size > 0,
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
        check_finite(self)
        check(self.learning_rate > 0, f"learning_rate must be positive, got {self.learning_rate}.")
        check(0.0 <= self.momentum < 1.0, f"momentum must be in [0, 1), got {self.momentum}.")
        check(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}.")
        check(self.schedule in SCHEDULES,
              f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}.")
        check(self.step_every is None or self.step_every >= 1,
              f"step_every must be at least 1 epoch, got {self.step_every}.")
        check(self.warmup_epochs >= 0, f"warmup_epochs must be >= 0, got {self.warmup_epochs}.")
        check(0.0 <= self.label_smoothing < 1.0,
              f"label_smoothing must be in [0, 1), got {self.label_smoothing}.")


@dataclass(frozen=True)
class ModelConfig:
    """A registered architecture (``tftransfer.models.architectures``), e.g. a torchvision ResNet."""

    arch: str = "resnet20"
    width: float = 1.0
    small_inputs: bool | None = None       # None: yes for images of 64 pixels or fewer

    def __post_init__(self):
        check_finite(self)
        check(self.arch in ARCHITECTURES,
              f"arch must be one of {', '.join(ARCHITECTURES)}, got {self.arch!r}.")
        check(self.width > 0, f"width must be positive, got {self.width}.")
