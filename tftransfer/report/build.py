"""The ``report`` command's work: sweep results -> summary CSVs, paper-style markdown tables and figures.

Reads every ``results*.csv`` shard in the results directory (``--results``), and writes
to the output directory (``--out``, default ``<results>/report``): ``summary.csv`` (mean
and 95% CI per cell), ``differences.csv`` (paired by seed), ``trend.csv`` (the
difference's change per doubling of N), ``efficiency.csv`` (training-image savings),
``speedup.csv`` (epochs to reach the baseline's accuracy), ``summary.md`` and PNG
figures. No TensorFlow is imported.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pandas as pd

from tftransfer import runs
from tftransfer.report import efficiency
from tftransfer.report import plot_parts, plots
from tftransfer.report import stats
from tftransfer.report import summary as summary_markdown
from tftransfer.errors import UserError


def _log(message: str) -> None:
    print(f"[report] {message}", file=sys.stderr, flush=True)


def build_report(results_dir, out_dir=None, baseline: str | None = None,
                 curve_images=None) -> dict:
    """Builds the report described in the module docstring.

    Args:
      results_dir: the sweep's output directory (its ``results*.csv`` shards).
      out_dir: where the report goes (default ``<results_dir>/report``).
      baseline: the source the others are compared with (default: the one natural source).
      curve_images: the N values of the accuracy-vs-epochs figures (default: smallest,
        middle and largest).

    Returns:
      ``{"report_dir", "runs", "cells", "sources", "baseline", "files", "warnings"}``.
    """
    results_dir = Path(results_dir)
    out_dir = Path(out_dir) if out_dir else results_dir / "report"
    tables, notes = _compute(results_dir, baseline)
    table = tables["table"]
    _check_curve_images(curve_images, table)
    _log(f"{len(table)} runs, {len(tables['summary'])} cells, baseline {tables['baseline']!r}")
    files = _write_tables(tables, out_dir)
    files += _write_figures(tables, out_dir, curve_images)
    files.append(_write_markdown(tables, notes, files, out_dir))
    _log(f"wrote {len(files)} files to {out_dir}")
    return {"report_dir": str(out_dir), "runs": len(table), "cells": len(tables["summary"]),
            "sources": sorted(table["source"].unique()), "baseline": tables["baseline"],
            "files": [str(path) for path in files], "warnings": len(notes)}


def _check_curve_images(curve_images, table: pd.DataFrame) -> None:
    """Refuses ``--curve-images`` sizes that no run has (they would draw empty panels)."""
    measured = sorted({int(n) for n in table["train_images"]})
    missing = sorted(set(curve_images or ()) - set(measured))
    if missing:
        raise UserError(f"--curve-images {', '.join(map(str, missing))}: no run has that N; "
                        f"the results have N = {', '.join(map(str, measured))}.")


def _compute(results_dir: Path, baseline: str | None) -> tuple[dict, list[str]]:
    """Runs the stats pipeline, collecting data warnings so they reach stderr and the report."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", stats.DataWarning)
        table = stats.read_results(results_dir)
        baseline = stats.resolve_baseline(table, baseline)
        curves = stats.epoch_curves(table)
        summary = stats.summarize(table)
        tables = {"table": table, "baseline": baseline, "summary": summary, "curves": curves,
                  "differences": (differences := stats.paired_differences(table, baseline)),
                  "trend": stats.difference_trend(differences),
                  "efficiency": efficiency.data_efficiency(summary, baseline),
                  "speedup": efficiency.epochs_speedup(table, baseline, curves)}
    notes = []
    for warning in caught:
        _log(f"warning: {warning.message}")
        if issubclass(warning.category, stats.DataWarning):
            notes.append(str(warning.message))
    return tables, notes


def _write_tables(tables: dict, out_dir: Path) -> list[Path]:
    files = []
    for name in ("summary", "differences", "trend", "efficiency", "speedup"):
        path = out_dir / f"{name}.csv"
        runs.write_text_atomic(path, tables[name].to_csv(index=False))
        files.append(path)
    return files


def _write_figures(tables: dict, out_dir: Path, curve_images) -> list[Path]:
    summary, baseline = tables["summary"], tables["baseline"]
    colors = plot_parts.source_colors(summary["source"], baseline)
    files = []
    for target in sorted(summary["target"].unique()):
        # Target names become file names; the committed figures are named this way.
        slug = runs.slug(target, keep="._-", fallback="target")
        figures = {f"accuracy_vs_images_{slug}.png":
                   plots.plot_accuracy_vs_images(summary, target, baseline, colors)}
        if (tables["differences"]["target"] == target).any():
            figures[f"difference_vs_images_{slug}.png"] = plots.plot_difference_vs_images(
                tables["differences"], target, colors)
        if plots.has_eps_trend(tables["differences"], target):
            figures[f"difference_vs_eps_{slug}.png"] = plots.plot_difference_vs_eps(
                tables["differences"], target)
        if (tables["curves"]["target"] == target).any():
            figures[f"accuracy_vs_epochs_{slug}.png"] = plots.plot_accuracy_vs_epochs(
                tables["curves"], target, curve_images, baseline, colors)
        for name, figure in figures.items():
            files.append(plot_parts.save_figure(figure, out_dir / name))
        _log(f"figures for {target}: {', '.join(figures)}")
    return files


def _write_markdown(tables: dict, notes: list[str], files: list[Path], out_dir: Path) -> Path:
    path = out_dir / "summary.md"
    runs.write_text_atomic(path, report_markdown(tables, notes, files))
    return path


def report_markdown(tables: dict, notes: list[str], files) -> str:
    """The ``summary.md`` text: overview, notes, tables and links to the figures."""
    baseline = tables["baseline"]
    parts = ["# Transfer sweep report", _overview(tables),
             "## Notes\n\n" + "\n".join(f"- {note}" for note in notes) if notes else "",
             f"## Test accuracy: {baseline} / other source (difference)\n\n"
             "Cells: mean test accuracy (%) of the baseline / the other source over the seeds "
             "both have, and the difference in percentage points ± the half-width of its 95% "
             "Student-t interval over the paired seeds (no ± with a single pair).\n\n"
             + summary_markdown.summary_tables_markdown(tables["differences"]) + "\n\n"
             + summary_markdown.multiple_comparisons_text(tables["differences"]),
             "## Does the difference shrink as N grows?\n\n"
             "The least-squares slope of the mean paired difference (percentage points) on "
             "log2 N: its change per doubling of the training images, with a 95% t-interval "
             "from the scatter of the cells about the line (3 or more sizes; k - 2 degrees "
             "of freedom for k sizes, the df in brackets).\n\n"
             + summary_markdown.trend_table_markdown(tables["trend"]),
             f"## Data efficiency: times fewer training images than {baseline}\n\n"
             f"Cells: N_{baseline} / N_source, where N_source is the number of images at which "
             f"the source's mean accuracy (interpolated linearly in log N) reaches {baseline}'s "
             "mean accuracy at N. `>x`: already reached at the smallest N measured (the ratio is "
             "at least x); `<x`: not reached by the largest N measured.\n\n"
             + summary_markdown.efficiency_tables_markdown(tables["efficiency"]),
             f"## Epochs to reach {baseline}'s final accuracy\n\n"
             f"Cells: first evaluated epoch at which {baseline}'s mean curve reaches its own final "
             "mean accuracy → the same for the source (speed-up).\n\n"
             + summary_markdown.speedup_tables_markdown(tables["speedup"]),
             "## Files\n\n" + "\n".join(f"- [{Path(p).name}]({Path(p).name})" for p in files)]
    return "\n\n".join(part for part in parts if part) + "\n"


def _overview(tables: dict) -> str:
    table, summary = tables["table"], tables["summary"]
    sources = stats.source_info(table)
    lines = [f"- runs: {len(table)}; cells (target × source × N × blocks"
             f"{' × epochs' if 'epochs' in table else ''}): {len(summary)}",
             f"- baseline: {tables['baseline']}",
             "- sources: " + "; ".join(_describe_source(row) for _, row in sources.iterrows()),
             f"- targets: {', '.join(sorted(table['target'].unique()))}",
             f"- training images N: {', '.join(map(str, sorted(table['train_images'].unique())))}",
             f"- seeds per cell: {summary['n_seeds'].min()}–{summary['n_seeds'].max()}"]
    if "git_commit" in table:
        commits = sorted(table["git_commit"].astype(str).unique())
        lines.append(f"- git commit(s): {', '.join(commits[:5])}"
                     + (f" and {len(commits) - 5} more" if len(commits) > 5 else ""))
    return "\n".join(lines)


def _describe_source(row: pd.Series) -> str:
    if row["source_attack"] == stats.NATURAL_ATTACK:
        return f"{row['source']} (natural)"
    eps = f", eps {row['source_eps']:g}" if "source_eps" in row and pd.notna(
        row["source_eps"]) else ""
    return f"{row['source']} ({row['source_attack']}{eps})"
