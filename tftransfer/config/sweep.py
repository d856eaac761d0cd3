"""The config of a sweep: a grid of fine-tuning runs and its per-cell exceptions."""

from __future__ import annotations

import re
from dataclasses import dataclass

from tftransfer.config.checks import check, check_seed, check_values, check_whole_number
from tftransfer.config.overrides import apply_overrides
from tftransfer.config.recipes import RECIPES
from tftransfer.config.run import TransferConfig

SWEEP_ORDERS = ("source", "train_images")
# A sweep's name is a folder name (results/NAME by default): no path separator, no leading dot
# (so no ".."), and short enough for the file system with room for what goes under it.
SWEEP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}")


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
        check_values("cell override", "train_images", self.train_images)
        for name in ("seeds", "unfrozen_blocks"):
            if getattr(self, name) is not None:
                check_values("cell override", name, getattr(self, name))
        for seed in self.seeds or ():
            check_seed(seed, "cell override: each of seeds")
        for name in ("train_images", "unfrozen_blocks"):
            for value in getattr(self, name) or ():
                check_whole_number(value, f"cell override: each of {name}")
        if self.epochs is not None:
            check_whole_number(self.epochs, "cell override: epochs")
        check(self.epochs is None or self.epochs >= 1,
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
        check(isinstance(self.name, str) and SWEEP_NAME.fullmatch(self.name),
              f"sweep name {self.name!r} must be a plain name: up to 100 letters, digits, "
              f"'.', '_', '+' or '-', starting with a letter or digit.")
        for name in ("sources", "targets", "train_images", "unfrozen_blocks", "seeds"):
            check_values(f"sweep {self.name!r}", name, getattr(self, name))
        self._check_types()
        for seed in self.seeds:
            check_seed(seed, f"sweep {self.name!r}: each of seeds")
        check(self.epochs >= 1, f"sweep {self.name!r}: epochs must be at least 1.")
        check(all(n >= 2 for n in self.train_images),
              f"sweep {self.name!r}: every train_images value must be at least 2.")
        check(all(b >= -1 for b in self.unfrozen_blocks),
              f"sweep {self.name!r}: unfrozen_blocks values must be -1 or >= 0.")
        check(isinstance(self.overrides, (tuple, list)),
              f"sweep {self.name!r}: overrides must be a tuple of CellOverride objects.")
        for override in self.overrides:
            check(isinstance(override, CellOverride),
                  f"sweep {self.name!r}: overrides must be CellOverride objects.")
            self._check_override_in_grid(override)
        check(self.order in SWEEP_ORDERS, f"sweep {self.name!r}: order must be one of "
                                          f"{', '.join(SWEEP_ORDERS)}, got {self.order!r}.")
        check(self.preset is None or self.preset in RECIPES,
              f"sweep {self.name!r}: preset must be one of {', '.join(sorted(RECIPES))}, "
              f"got {self.preset!r}.")
        for assignment in self.recipe:
            apply_overrides(TransferConfig(target="x"), [assignment])  # validates each one

    def _check_types(self) -> None:
        # Before the range checks: a string in a comparison would end in a TypeError naming
        # no field, and a float such as 100.5 would pass them and fail inside each run.
        owner = f"sweep {self.name!r}"
        for name in ("sources", "targets"):
            for value in getattr(self, name):
                check(isinstance(value, str) and value and "\0" not in value,
                      f"{owner}: each of {name} must be a non-empty name, got {value!r}.")
        for name in ("train_images", "unfrozen_blocks"):
            for value in getattr(self, name):
                check_whole_number(value, f"{owner}: each of {name}")
        for name in ("epochs", "eval_every"):
            check_whole_number(getattr(self, name), f"{owner}: {name}")
        for name in ("test_images", "curve_test_images"):  # None: all test images
            if getattr(self, name) is not None:
                check_whole_number(getattr(self, name), f"{owner}: {name}")

    def _check_override_in_grid(self, override: CellOverride) -> None:
        # A value outside the grid can never match a cell: most likely a typo, silently a no-op.
        for name in ("train_images", "unfrozen_blocks"):
            grid = getattr(self, name)
            outside = [value for value in getattr(override, name) or () if value not in grid]
            check(not outside, f"sweep {self.name!r}: override {name} value(s) {outside} are "
                               f"not in the grid {tuple(grid)}, so they would never apply.")
