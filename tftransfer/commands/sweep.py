"""``sweep``: run a registered grid of fine-tuning runs (resumable, shardable)."""

from __future__ import annotations

import sys
from pathlib import Path

from tftransfer import runs
from tftransfer.commands.common import add_data_arguments
from tftransfer.errors import UserError
from tftransfer.sweeps.cell_runs import DEFAULT_SEED_BATCH


def register(subparsers):
    parser = subparsers.add_parser(
        "sweep", help="run a registered grid of fine-tuning runs (resumable, shardable)",
        description="Runs every unfinished cell of a sweep config from pipelines/ and appends "
                    "one row per finished run to DIR/results.csv. Re-running skips finished "
                    "cells (the rows of every DIR/results*.csv count: keep backups under "
                    "another name); --shard i/n splits the grid across machines. Any number of "
                    "processes may run on one DIR at once (a second worker, a rerun while one "
                    "is going, shards, --sources): each claims a cell before running it "
                    "(DIR/runs/.claims/), so every cell runs once and every row is kept; a "
                    "killed process's cell is taken over by the next run. Exits with 1 when "
                    "any run failed (the others still ran; re-running retries the failed).")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--config", help="registered sweep name (--list shows them)")
    which.add_argument("--grid", metavar="FILE",
                       help="a grid file (TOML or JSON with the fields of a registered grid; "
                            "see pipelines/grids/*.toml and the README)")
    which.add_argument("--list", action="store_true",
                       help="list the registered sweeps with a description and exit")
    which.add_argument("--check-locks", metavar="DIR",
                       help="check that flock excludes between two processes on DIR (a "
                            "shared results folder; says when an NFS mount keeps locks local "
                            "to each host) and how far the file server's clock is from this "
                            "host's, then exit (1 when the lock did not exclude)")
    parser.add_argument("--results", default=None,
                        help="results directory (default: results/NAME, NAME the grid's name)")
    parser.add_argument("--shard", default=None, metavar="i/n",
                        help="run only shard i of n; auto: a Kubernetes Indexed Job pod's "
                             "(JOB_COMPLETION_INDEX + 1 of JOB_COMPLETIONS, "
                             "docs/scale-out.md)")
    parser.add_argument("--sources", nargs="+", default=None, metavar="NAME",
                        help="run only the cells of these sources (e.g. the ones trained so "
                             "far); rows go to the same results file")
    parser.add_argument("--max-runs", type=int, default=None, metavar="K",
                        help="stop after K runs (K >= 1)")
    parser.add_argument("--seed-batch", type=int, default=DEFAULT_SEED_BATCH, metavar="K",
                        help="train up to K seeds of a cell together in one compiled loop, "
                             "each with the result it gets alone, where the cell's runs "
                             "allow (cached trunk features); 1: one run at a time "
                             "(default: %(default)s)")
    parser.add_argument("--allow-dirty", action="store_true",
                        help="record rows from code with uncommitted changes (marked +dirty "
                             "in git_commit); without it a sweep refuses, so that every row "
                             "traces to one commit")
    parser.add_argument("--save-models", action="store_true",
                        help="also save every fine-tuned model (large)")
    add_data_arguments(parser)
    parser.set_defaults(run=run, resumable=True, exit_code=exit_code, kept=kept)
    return parser


def run(args) -> dict:
    from tftransfer.sweeps import registry as grid_registry
    from tftransfer.sweeps.grid_files import load_grid
    from tftransfer.sweeps.runner import run_sweep

    if args.list:
        return list_sweeps()
    if args.check_locks:
        from tftransfer.sweeps.lock_check import check_locks

        return check_locks(args.check_locks)
    sweep = load_grid(args.grid) if args.grid else grid_registry.get(args.config)
    runs.require_committed_code(args.allow_dirty)
    results = args.results = args.results or f"results/{sweep.name}"  # for `kept`, too
    check_results_dir(results)
    result = run_sweep(sweep, results, args.shard, args.max_runs, args.data_dir, args.download,
                       args.save_models, sources=args.sources,
                       seed_batch=args.seed_batch)
    say_when_nothing_ran(result, results)
    return result


def check_results_dir(results: str) -> None:
    """Refuses a ``--results`` that is a file, before any work."""
    if Path(results).exists() and not Path(results).is_dir():
        raise UserError(f"--results {results} is a file, not a results folder; give the "
                        f"folder the sweep writes its results.csv to.")


def kept(args) -> str:
    """What an interrupted ``sweep`` keeps, and the command that continues it."""
    where = args.results or "its results folder"
    return (f"the rows of finished runs are kept in {where}, the running cell's claim is "
            f"released, and the same command runs the cells left.")


def say_when_nothing_ran(result: dict, results: str) -> None:
    """Says on stderr why a sweep whose cells all have rows did nothing, and how to see it
    run: results/tiny/ ships finished, so a newcomer's first ``sweep --config tiny`` would
    otherwise end silently with "0 to run now"."""
    if result["ran"] or result["failed"] or result["remaining"] or not result["cells"]:
        return
    print(f"sweep {result['sweep']}: all {result['cells']} cells already have a row under "
          f"{results} (a re-run never repeats a finished cell), so nothing ran. To watch it "
          f"run, give it a fresh directory: --results runs/{result['sweep']}", file=sys.stderr)


def list_sweeps() -> dict:
    """Prints each registered sweep's name and description (to stderr, like ``datasets``)."""
    from tftransfer.sweeps import registry as grid_registry

    sweeps = [{"name": name, "description": grid_registry.get(name).description}
              for name in grid_registry.names()]
    print("Registered sweeps (sweep --config NAME):", file=sys.stderr)
    width = max(len(entry["name"]) for entry in sweeps)
    for entry in sweeps:
        print(f"  {entry['name']:<{width}} {entry['description']}", file=sys.stderr)
    return {"sweeps": sweeps}


def exit_code(result: dict) -> int:
    """1 when any run failed (or --check-locks found flock not excluding), so Slurm arrays
    and CI see it; the counts go to stderr."""
    if result.get("ok") is False:
        return 1
    failed = result.get("failed", 0)
    if not failed:
        return 0
    print(f"sweep {result['sweep']}: {failed} of {failed + result['ran']} runs failed (errors "
          "above); the same command retries them.", file=sys.stderr)
    return 1
