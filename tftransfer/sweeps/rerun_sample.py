"""The sample of committed sweep rows that ``rerun_check`` reruns: the rows of the
``results*.csv`` files under ``results/`` at ``HEAD`` (``committed_rows``), split into strata by
grid and source kind and drawn cheap-first, round-robin, with a seed (``sample_rows``; the rule
in words is ``SAMPLING_RULE``).
"""

from __future__ import annotations

import csv
import fnmatch
import io
import random
import statistics
import subprocess
from pathlib import Path

from tftransfer.errors import UserError

DEFAULT_GRIDS = ("replication", "replication-blocks", "replication-paper",
                 "replication-paper-ablation-*", "fast-adversarial-transfer")
RESULTS_ROOT = "results"
SAMPLING_RULE = (
    "rows of each (grid, source kind) stratum (natural: source_attack none; robust: any other), "
    "those whose committed train_seconds is at most the stratum's median first, each part in "
    "a random order drawn with --seed; strata taken round-robin, one row each per round, in "
    "grid order with the source kinds alternating between neighbouring grids, until --rows "
    "rows")


def checkout_root() -> Path:
    """The checkout this package runs from (its committed results are the ones checked)."""
    return Path(__file__).resolve().parent.parent.parent


def committed_rows(root=None) -> list[dict]:
    """Every row of every ``results*.csv`` under ``root/results`` as committed at ``HEAD``
    (the working tree's files outside git), each with ``_file``, its path."""
    root = Path(root) if root is not None else checkout_root()
    files = _committed_files(root)
    if files is None:  # not a git checkout: the files as they are
        files = {str(path.relative_to(root)): path.read_text()
                 for path in sorted((root / RESULTS_ROOT).rglob("results*.csv"))}
    rows = []
    for name, text in files.items():
        rows += [{**row, "_file": name} for row in csv.DictReader(io.StringIO(text))]
    return rows


def _committed_files(root: Path) -> dict[str, str] | None:
    try:
        listing = subprocess.run(["git", "ls-tree", "-r", "--name-only", "HEAD", "--",
                                  RESULTS_ROOT], cwd=root, capture_output=True, text=True,
                                 check=True, timeout=30).stdout.split("\n")
    except (OSError, subprocess.SubprocessError):
        return None
    names = sorted(n for n in listing if fnmatch.fnmatch(Path(n).name, "results*.csv"))
    return {name: subprocess.run(["git", "show", f"HEAD:{name}"], cwd=root,
                                 capture_output=True, text=True, check=True,
                                 timeout=30).stdout for name in names}


def source_kind(row: dict) -> str:
    """``natural`` for a row whose source was trained without an attack, else ``robust``."""
    return "natural" if row.get("source_attack", "none") in ("none", "") else "robust"


def matching_grids(patterns, registered) -> list[str]:
    """The registered grid names matching ``patterns`` (fnmatch), in the patterns' order.

    Raises:
      UserError: for a pattern that matches no registered grid.
    """
    found = []
    for pattern in patterns:
        names = sorted(n for n in registered if fnmatch.fnmatchcase(n, pattern))
        if not names:
            raise UserError(f"--grids {pattern}: no registered grid matches it (registered: "
                            f"{', '.join(sorted(registered))}).")
        found += [n for n in names if n not in found]
    return found


def candidate_rows(rows: list[dict], grids: list[str], grid_keys: dict[str, set]) -> dict:
    """The rows that can be rerun, and why others cannot.

    Args:
      rows: committed rows (``committed_rows``).
      grids: the grids to take rows from, in order.
      grid_keys: grid -> the keys of its cells at this checkout.

    Returns:
      ``rows``: the first row of each (grid, key) whose key is a cell of its grid now;
      ``missing``: the grids without a committed row; ``stale``: grid -> rows left out
      because their key is no longer a cell of the grid.
    """
    kept, seen, stale = [], set(), {}
    for row in rows:
        grid, key = row.get("sweep"), row.get("run_key")
        if grid not in grids or not key or (grid, key) in seen:
            continue
        seen.add((grid, key))
        if key not in grid_keys[grid]:
            stale[grid] = stale.get(grid, 0) + 1
            continue
        kept.append(row)
    present = {row["sweep"] for row in kept} | set(stale)
    return {"rows": kept, "missing": [g for g in grids if g not in present], "stale": stale}


def _seconds(row: dict) -> float:
    try:
        return float(row.get("train_seconds") or "inf")
    except ValueError:
        return float("inf")


def sample_rows(rows: list[dict], count: int, seed: int, grids: list[str]) -> list[dict]:
    """``count`` rows by the rule of the module docstring (``SAMPLING_RULE``), deterministic
    for ``seed``; ``grids`` gives the grid order.

    Raises:
      UserError: when ``count`` is below 1 or above the number of rows.
    """
    if count < 1:
        raise UserError(f"--rows must be at least 1, got {count}.")
    if count > len(rows):
        raise UserError(f"--rows {count}: the grids have only {len(rows)} committed rows to "
                        f"rerun.")
    rng = random.Random(seed)
    strata: dict[tuple, list[dict]] = {}
    for row in sorted(rows, key=lambda r: (r["sweep"], r["run_key"])):
        strata.setdefault((row["sweep"], source_kind(row)), []).append(row)
    queues = {}
    for stratum in sorted(strata, key=lambda s: (grids.index(s[0]), s[1])):
        members = strata[stratum]
        median = statistics.median(_seconds(r) for r in members)
        cheap = [r for r in members if _seconds(r) <= median]
        dear = [r for r in members if _seconds(r) > median]
        rng.shuffle(cheap)
        rng.shuffle(dear)
        queues[stratum] = cheap + dear
    present = [g for g in grids if any(s[0] == g for s in queues)]

    def turn(stratum):  # natural first in every other grid, robust first in the others
        position = present.index(stratum[0])
        return (stratum[1] != ("natural" if position % 2 == 0 else "robust"), position)
    order = sorted(queues, key=turn)
    taken = []
    while len(taken) < count:
        for stratum in order:
            if queues[stratum] and len(taken) < count:
                taken.append(queues[stratum].pop(0))
    return taken


def sample_counts(sample: list[dict], grids: list[str]) -> list[dict]:
    """Rows per grid and source kind, in grid order (grids without a sampled row left out)."""
    counts = []
    for grid in grids:
        rows = [r for r in sample if r["sweep"] == grid]
        if rows:
            counts.append({"grid": grid, "rows": len(rows),
                           "natural": sum(source_kind(r) == "natural" for r in rows),
                           "robust": sum(source_kind(r) == "robust" for r in rows)})
    return counts
