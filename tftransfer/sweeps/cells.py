"""A sweep's grid: its cells in a deterministic order, shards and source subsets of them,
and the TransferConfig of each cell."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from pathlib import Path

from tftransfer.config import SweepConfig, TransferConfig, apply_overrides, apply_recipe
from tftransfer.errors import UserError
from tftransfer.sweeps.shard_auto import auto_shard

# Larger grids are refused before their cells are built: a mistyped list (a grid of 10^6
# cells took 37 s and 1.2 GB before its first run) is far beyond a sweep that could finish.
MAX_CELLS = 100_000
# Run directories and claim markers are named after the key; a long target path would pass
# the usual 255-byte limit of a file name (with room left for ".json" and a temporary suffix).
MAX_FILE_NAME_BYTES = 200


@dataclasses.dataclass(frozen=True)
class Cell:
    """One run of a sweep."""

    source: str
    target: str
    train_images: int
    unfrozen_blocks: int
    seed: int
    epochs: int

    @property
    def key(self) -> str:
        """A stable identifier of the cell (the ``run_key`` column)."""
        return (f"{self.target}|{self.source}|n{self.train_images}|b{self.unfrozen_blocks}"
                f"|s{self.seed}|e{self.epochs}")

    @property
    def file_name(self) -> str:
        """The key as a file name (the run directory's and the claim's); one longer than
        ``MAX_FILE_NAME_BYTES`` keeps its two ends around a hash of the whole key."""
        name = self.key.replace("|", "__").replace("/", "_")
        if len(name.encode()) <= MAX_FILE_NAME_BYTES:
            return name
        digest = hashlib.sha256(self.key.encode()).hexdigest()[:16]
        keep = (MAX_FILE_NAME_BYTES - len(digest) - 2) // 2
        encoded = name.encode()
        # errors="ignore": a cut through a multi-byte character drops that character.
        return (f"{encoded[:keep].decode(errors='ignore')}-{digest}-"
                f"{encoded[-keep:].decode(errors='ignore')}")


def cells(sweep: SweepConfig) -> list[Cell]:
    """Every cell of the grid, in a deterministic order (grouped by source and target, so
    consecutive runs share cached features).

    Raises:
      UserError: the grid has more than ``MAX_CELLS`` cells (before any is built).
    """
    check_grid_size(sweep)
    grid = []
    for source in sweep.sources:
        for target in sweep.targets:
            for n in sweep.train_images:
                for blocks in sweep.unfrozen_blocks:
                    seeds, epochs = _cell_settings(sweep, n, blocks)
                    grid += [Cell(source, target, n, blocks, s, epochs) for s in seeds]
    if sweep.order == "train_images":
        grid.sort(key=lambda cell: cell.train_images)  # stable: the order above within each N
    return grid


def check_grid_size(sweep: SweepConfig) -> None:
    """Refuses a grid of more than ``MAX_CELLS`` cells, counted without building them."""
    pairs = len(sweep.sources) * len(sweep.targets)
    count = pairs * len(sweep.train_images) * len(sweep.unfrozen_blocks)
    if count <= MAX_CELLS:  # else too many already: every (N, blocks) has a seed or more
        count = pairs * sum(len(_cell_settings(sweep, n, blocks)[0])
                            for n in sweep.train_images for blocks in sweep.unfrozen_blocks)
    if count > MAX_CELLS:
        raise UserError(f"sweep {sweep.name!r} has at least {count:,} cells, more than the "
                        f"{MAX_CELLS:,} a grid may have; split it into smaller grids.")


def _cell_settings(sweep: SweepConfig, n: int, blocks: int):
    seeds, epochs = sweep.seeds, sweep.epochs
    for override in sweep.overrides:
        if override.matches(n, blocks):
            seeds = override.seeds if override.seeds is not None else seeds
            epochs = override.epochs if override.epochs is not None else epochs
    return tuple(seeds), epochs


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"i/n"`` -> (i, n) with 1 <= i <= n; None -> (1, 1); ``"auto"``: a Kubernetes
    Indexed Job pod's shard (``sweeps.shard_auto``)."""
    if not text:
        return 1, 1
    if text == "auto":
        text = auto_shard()
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise UserError(f"--shard expects i/n (e.g. 2/4), got {text!r}.") from None
    if not 1 <= index <= count:
        raise UserError(f"--shard {text}: i must be between 1 and n.")
    return index, count


def shard_cells(grid: list[Cell], index: int, count: int) -> list[Cell]:
    """The cells of shard ``index`` of ``count`` (every count-th cell, round-robin)."""
    return [cell for position, cell in enumerate(grid) if position % count == index - 1]


def select_sources(grid: list[Cell], sweep: SweepConfig, sources) -> list[Cell]:
    """The cells whose source is in ``sources`` (all cells when None), so a grid can run
    source by source as its models become available; an unknown name is a UserError."""
    if not sources:
        return grid
    unknown = sorted(set(sources) - set(sweep.sources))
    if unknown:
        raise UserError(f"--sources {', '.join(unknown)}: not in sweep {sweep.name!r}, whose "
                        f"sources are {', '.join(sweep.sources)}.")
    return [cell for cell in grid if cell.source in sources]


def transfer_config(sweep: SweepConfig, cell: Cell, run_dir: Path, data_dir=None,
                    download=True) -> TransferConfig:
    """The TransferConfig of one cell: the sweep's preset (a named recipe), then the cell's
    own values, then the sweep's recipe assignments."""
    base = _preset_config(cell.target, sweep.preset)
    cfg = dataclasses.replace(base, source=cell.source, out=str(run_dir),
                              unfrozen_blocks=cell.unfrozen_blocks, epochs=cell.epochs,
                              eval_every=sweep.eval_every, seed=cell.seed,
                              curve_test_images=sweep.curve_test_images)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(
        cfg.data, dataset=cell.target, data_dir=data_dir, download=download,
        train_images=cell.train_images, test_images=sweep.test_images))
    return apply_overrides(cfg, sweep.recipe)


@functools.lru_cache(maxsize=64)
def _preset_config(target: str, preset: str | None) -> TransferConfig:
    # Built once per target: applying a recipe takes milliseconds, and a rerun's check
    # (``sweeps.same_config``) builds the config of every recorded cell.
    return apply_recipe(TransferConfig(target=target), preset)
