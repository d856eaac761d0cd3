"""``sweep``: run a registered grid of fine-tuning runs (resumable, shardable)."""

from __future__ import annotations

from tftransfer.commands.common import add_data_arguments


def register(subparsers):
    parser = subparsers.add_parser(
        "sweep", help="run a registered grid of fine-tuning runs (resumable, shardable)",
        description="Runs every unfinished cell of a sweep config from pipelines/ and appends "
                    "one row per finished run to DIR/results.csv. Re-running skips finished "
                    "cells; --shard i/n splits the grid across machines.")
    parser.add_argument("--config", required=True, help="registered sweep name (--list shows them)")
    parser.add_argument("--results", default=None, help="results directory (default: results/NAME)")
    parser.add_argument("--shard", default=None, metavar="i/n", help="run only shard i of n")
    parser.add_argument("--sources", nargs="+", default=None, metavar="NAME",
                        help="run only the cells of these sources (e.g. the ones trained so "
                             "far); rows go to the same results file")
    parser.add_argument("--max-runs", type=int, default=None, help="stop after K runs")
    parser.add_argument("--save-models", action="store_true",
                        help="also save every fine-tuned model (large)")
    add_data_arguments(parser)
    parser.set_defaults(run=run)
    return parser


def run(args) -> dict:
    import pipelines
    from tftransfer.sweeps import run_sweep

    sweep = pipelines.get(args.config)
    results = args.results or f"results/{sweep.name}"
    return run_sweep(sweep, results, args.shard, args.max_runs, args.data_dir, args.download,
                     args.save_models, sources=args.sources)
