"""The configs of the two kinds of run: training a source (``PretrainConfig``) and
fine-tuning it on a target (``TransferConfig``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tftransfer.config.checks import check, check_finite, check_seed
from tftransfer.config.length import EPOCHS_AUTO
from tftransfer.config.recipes import RECIPES
from tftransfer.config.sections import AttackConfig, DataConfig, ModelConfig, OptimConfig

# auto (the default): mixed_float16 where TensorFlow sees a GPU, float32 where it does not,
# resolved when a run starts (training.runtime.resolve_precision); a run records the resolved
# policy, never auto, so runs recorded before auto (float32) compare equal on a CPU.
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
DISTRIBUTIONS = ("none", "mirrored", "multi_worker_mirrored")
HEAD_INITS = ("normal", "glorot")
FROZEN_BN_MODES = ("inference", "train")
FEATURE_CACHE_MODES = ("auto", "on", "off")
# Cached trunk features held in memory; beyond it they go to files on disk (feature_store).
DEFAULT_FEATURE_CACHE_MEMORY = "2GB"
# source: keep the source's normalize layer; target: the target's fixed per-dataset statistics
# (data.TARGET_STATISTICS, the paper's); subset: computed from the run's N training images.
NORMALIZATIONS = ("source", "target", "subset")
# auto: the compiled multi-epoch loop (compiled_loop.py) on cached features, fit() otherwise.
TRAINING_LOOPS = ("auto", "fit", "compiled")


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
    precision: str = "auto"
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
        check_finite(self)
        check_seed(self.seed)
        check(self.epochs >= 1, f"epochs must be at least 1, got {self.epochs}.")
        check(self.eval_every >= 1, f"eval_every must be at least 1, got {self.eval_every}.")
        check(self.precision in PRECISIONS,
              f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}.")
        check(self.distribute in DISTRIBUTIONS,
              f"distribute must be one of {', '.join(DISTRIBUTIONS)}, got {self.distribute!r}.")
        check(0.0 < self.adversarial_fraction <= 1.0,
              f"adversarial_fraction must be in (0, 1], got {self.adversarial_fraction}.")
        self._check_method_options()

    def _check_method_options(self) -> None:
        check(self.free_replays >= 1, f"free_replays must be at least 1, got {self.free_replays}.")
        if self.attack.replays_batches:
            check(self.epochs % self.free_replays == 0,
                  f"free training runs epochs / free_replays passes over the data, so epochs "
                  f"({self.epochs}) must be a multiple of free_replays ({self.free_replays}).")
            check(self.distribute == "none",
                  f"free training carries its perturbation on one device; use distribute "
                  f"none, got {self.distribute!r}.")
            check(self.adversarial_fraction == 1.0,
                  f"free training perturbs every example; adversarial_fraction must be 1, got "
                  f"{self.adversarial_fraction}.")
        if self.early_stop:
            check(self.attack.norm != "none",
                  "early_stop checks PGD accuracy and needs an attack (--attack l2 or linf).")
            check(self.early_stop_images >= 1,
                  f"early_stop_images must be positive, got {self.early_stop_images}.")
            check(0.0 < self.early_stop_drop <= 1.0,
                  f"early_stop_drop must be in (0, 1], got {self.early_stop_drop}.")

    @property
    def passes(self) -> int:
        """Passes over the training data: ``epochs``, or epochs / free_replays for free
        training (each of its passes replays every minibatch free_replays times)."""
        if self.attack.replays_batches:
            return self.epochs // self.free_replays
        return self.epochs


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
    # The standard deviation of the ``normal`` head's kernel: 1 is the paper's N(0, 1) over
    # ResNet-50's 2,048 features; sqrt(2048 / width) gives a narrower trunk the same initial
    # logit size when its features have similar magnitudes.
    head_std: float = 1.0
    frozen_bn: str = "inference"
    # A number, or auto: a step budget (config.length: at least 500 SGD steps and 10
    # epochs); fine_tune resolves it to a number before training, which config.json records.
    epochs: int | str = EPOCHS_AUTO
    # SGD steps instead of epochs: fine_tune sets epochs to ceil(steps / steps per epoch).
    steps: int | None = None
    # Two-phase fine-tuning (keras-io's transfer-learning guide): the first head_warmup_epochs
    # of the epochs train the new head alone (the unfrozen blocks frozen, their BatchNorm in
    # inference mode), the rest train head and blocks at unfrozen_lr_scale x the schedule's
    # learning rate, so that the blocks are not moved by a random head's large gradients.
    # 0: one phase, as the paper's recipe.
    head_warmup_epochs: int = 0
    unfrozen_lr_scale: float = 0.1
    eval_every: int = 1
    curve_test_images: int | None = None   # per-epoch curve on a stratified part of the test set
    seed: int = 0
    precision: str = "auto"
    feature_cache: str = "auto"
    normalization: str = "source"
    recipe: str | None = None              # the preset applied (recipes.RECIPES), recorded
    training_loop: str = "auto"

    def __post_init__(self):
        check(self.training_loop in TRAINING_LOOPS, f"training_loop must be one of "
              f"{', '.join(TRAINING_LOOPS)}, got {self.training_loop!r}.")
        check(self.recipe is None or self.recipe in RECIPES,
              f"recipe must be one of {', '.join(sorted(RECIPES))}, got {self.recipe!r}.")
        check(self.normalization in NORMALIZATIONS,
              f"normalization must be one of {', '.join(NORMALIZATIONS)}, "
              f"got {self.normalization!r}.")
        check(self.unfrozen_blocks >= -1,
              f"unfrozen_blocks must be -1 (everything) or >= 0, got {self.unfrozen_blocks}.")
        check(self.head_init in HEAD_INITS,
              f"head_init must be one of {', '.join(HEAD_INITS)}, got {self.head_init!r}.")
        check(self.head_std > 0, f"head_std must be positive, got {self.head_std}.")
        check(self.head_std == 1.0 or self.head_init == "normal",
              f"head_std sets the normal head's scale; head_init is {self.head_init!r}.")
        check(self.frozen_bn in FROZEN_BN_MODES,
              f"frozen_bn must be one of {', '.join(FROZEN_BN_MODES)}, got {self.frozen_bn!r}.")
        check(self.epochs == EPOCHS_AUTO or (isinstance(self.epochs, int) and self.epochs >= 1),
              f"epochs must be at least 1 (or {EPOCHS_AUTO!r}), got {self.epochs!r}.")
        check(self.steps is None or self.steps >= 1,
              f"steps must be at least 1, got {self.steps}.")
        self._check_head_warmup()
        check(self.unfrozen_stages is None or self.unfrozen_stages >= 0,
              f"unfrozen_stages must be >= 0, got {self.unfrozen_stages}.")
        check(self.eval_every >= 0, f"eval_every must be >= 0, got {self.eval_every}.")
        check(self.curve_test_images is None or self.curve_test_images >= 1,
              f"curve_test_images must be positive, got {self.curve_test_images}.")
        check(self.precision in PRECISIONS,
              f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}.")
        check(self.feature_cache in FEATURE_CACHE_MODES,
              f"feature_cache must be one of {', '.join(FEATURE_CACHE_MODES)}, "
              f"got {self.feature_cache!r}.")
        check_finite(self)
        check_seed(self.seed)

    def _check_head_warmup(self) -> None:
        check(self.head_warmup_epochs >= 0,
              f"head_warmup_epochs must be >= 0, got {self.head_warmup_epochs}.")
        check(self.unfrozen_lr_scale > 0,
              f"unfrozen_lr_scale must be positive, got {self.unfrozen_lr_scale}.")
        if not self.head_warmup_epochs:
            check(self.unfrozen_lr_scale == TransferConfig.unfrozen_lr_scale,
                  f"unfrozen_lr_scale sets the rate after a head warm-up; give "
                  f"head_warmup_epochs too (got {self.unfrozen_lr_scale} without it).")
            return
        check(self.unfrozen_blocks != 0 or bool(self.unfrozen_stages),
              "head_warmup_epochs trains the head before the unfrozen blocks; unfreeze some "
              "(unfrozen_blocks or unfrozen_stages).")
        # With steps or auto, epochs are only known when fine_tune resolves them (and checks
        # again).
        check(self.steps is not None or self.epochs == EPOCHS_AUTO
              or self.head_warmup_epochs < self.epochs,
              f"head_warmup_epochs ({self.head_warmup_epochs}) must be fewer than the "
              f"epochs ({self.epochs}), so that the unfrozen blocks train.")
