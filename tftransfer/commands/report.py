"""``report``: sweep results -> 95% intervals, paired differences, tables and figures.

The work is in ``tftransfer.report.build`` (imported when the command runs, so the CLI's
start-up does not pay for pandas and matplotlib).
"""

from __future__ import annotations

from tftransfer.commands.common import positive_int

# The names of tftransfer.report.analyses.ANALYSES (here so that --help does not import pandas).
ANALYSIS_NAMES = ("answers", "paper-table", "blocks", "ablation", "fast-adversarial",
                  "why-no-gain", "photo-sizes", "length-check")


def register(subparsers):
    """Adds the ``report`` subcommand and returns its parser."""
    parser = subparsers.add_parser(
        "report", help="summarize sweep results: 95%% CIs, paired differences, figures",
        description="Merge the sweep's results*.csv shards and write per-cell means with 95% "
                    "t-intervals, robust-minus-natural differences paired by seed, data "
                    "efficiency, epochs speed-up, a markdown summary and PNG figures.")
    parser.add_argument("--results", required=True, metavar="DIR",
                        help="directory holding the sweep's results*.csv files")
    parser.add_argument("--out", metavar="DIR",
                        help="output directory (default: DIR/report)")
    parser.add_argument("--baseline", metavar="SOURCE",
                        help="source every other source is compared with (default: the one "
                             "natural source, source_attack == 'none')")
    parser.add_argument("--curve-images", metavar="N", type=positive_int, nargs="+",
                        help="training-set sizes shown in the accuracy-vs-epochs figures "
                             "(default: smallest, middle and largest)")
    parser.add_argument("--analysis", nargs="+", default=[], metavar="NAME",
                        choices=ANALYSIS_NAMES,
                        help="after the report, also write these analyses' markdown into DIR: "
                             "answers (answers.md), paper-table (paper_table.md), blocks "
                             "(blocks.md; on results/replication-blocks), ablation (ablation.md; "
                             "on results/replication-paper), fast-adversarial "
                             "(fast_adversarial.md, methods.csv, robust_vs_time.png; on "
                             "results/fast-adversarial; asked for alone, it builds no sweep "
                             "report), why-no-gain (causes.md and its CSVs and figure; on "
                             "results/why-no-gain; builds no sweep report), photo-sizes (sizes.md; on "
                             "results/photo/flowers12) and length-check (length.md; on "
                             "results/photo/length), neither building a sweep report")
    parser.set_defaults(run=run)
    return parser


def run(args) -> dict:
    from pathlib import Path

    from tftransfer.report import build as reporting
    from tftransfer.report.analyses import ANALYSES
    from tftransfer.runs import write_text_atomic

    if args.analysis and all(ANALYSES[name].standalone for name in args.analysis):
        result = {"results": str(args.results)}  # they read their own inputs: no sweep report
    else:
        result = reporting.build_report(args.results, args.out, args.baseline,
                                        args.curve_images)
    for name in args.analysis:
        analysis = ANALYSES[name]
        path = Path(args.results) / analysis.output
        write_text_atomic(path, analysis.markdown(Path(args.results)))
        result.setdefault("analyses", {})[name] = str(path)
    return result
