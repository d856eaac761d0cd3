"""The replication's four questions, answered for every robust source from the report's CSVs.

``python main.py report --results results/replication --analysis answers`` writes the markdown
to ``results/replication/answers.md``: one section per question, each source in its own column,
labelled by its training eps:
  (a) robust minus natural per N, paired by seed, ± the 95% half-width (bold: clear of zero),
      beside the paper's difference (3 blocks);
  (b) the change of that difference per doubling of N (95% interval);
  (c) how many times fewer images reach the natural source's accuracy (the paper's own
      ratios computed the same way from its table);
  (d) the epochs to reach the natural source's final accuracy;
  (e) the trend with eps: every other robust source minus the eps 0.5 one, paired by seed
      (read from the results CSV beside REPORT_DIR), so "does a larger eps transfer worse?"
      has its own interval rather than two intervals against the natural source.
"""

from __future__ import annotations

import functools
import io
from pathlib import Path

import pandas as pd

from tftransfer import runs
from tftransfer.report import stats
from tftransfer.report.analyses.paper_table import PAPER
from tftransfer.report.efficiency import data_efficiency

BLOCKS = {0: "head only", 3: "last stage"}
TARGETS = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST"}


def source_label(row) -> str:
    return f"eps {row.source_eps:g}" if pd.notna(row.source_eps) else row.source


def columns(frame: pd.DataFrame) -> list[tuple]:
    """``(blocks, source, label)`` per column: head only first, sources by eps."""
    sources = (frame[["source", "source_eps"]].drop_duplicates()
               .sort_values(["source_eps", "source"]))
    return [(blocks, row.source, f"{BLOCKS[blocks]}, {source_label(row)}")
            for blocks in BLOCKS for row in sources.itertuples()]


def grid(frame: pd.DataFrame, target: str, cell_text, paper: dict | None = None) -> str:
    """Rows N, one column per (blocks, source) of ``target``; ``cell_text(row)`` fills it;
    ``paper`` ((target, N) -> text) adds the paper's column."""
    rows = frame[frame.target == target]
    lookup = {(r.train_images, r.unfrozen_blocks, r.source): r for r in rows.itertuples()}
    cols = columns(rows)
    header = ["N"] + [label for _, _, label in cols] + (["paper (3 blocks)"] if paper else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
    for n in sorted(rows.train_images.unique()):
        cells = [str(n)] + [cell_text(lookup[(n, b, s)]) if (n, b, s) in lookup else "-"
                            for b, s, _ in cols]
        if paper:
            cells.append(paper.get((target, n), "-"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paper_differences() -> dict:
    """(target, N) -> the paper's robust-minus-natural difference, as it reports it."""
    return {(target, n): f"{values[2]:+.1f}" for target, by_n in PAPER.items()
            for n, values in by_n.items()}


def paper_efficiency() -> dict:
    """(target, N) -> the paper's times-fewer-images ratio, computed from its table exactly
    as ``report`` computes ours (``efficiency.data_efficiency``: interpolation in log N)."""
    rows = [{"target": target, "source": source, "train_images": n, "unfrozen_blocks": 3,
             "accuracy_mean": accuracy / 100}
            for target, by_n in PAPER.items() for n, (natural, robust, _) in by_n.items()
            for source, accuracy in (("natural", natural), ("robust", robust))]
    efficiency = data_efficiency(pd.DataFrame(rows), "natural")
    return {(row.target, row.train_images): row.ratio_text for row in efficiency.itertuples()}


def difference_text(row) -> str:
    text = f"{100 * row.difference_mean:+.1f}"
    if pd.notna(row.difference_ci_half):
        text += f" ± {100 * row.difference_ci_half:.1f}"
    clear = row.difference_ci_low > 0 or row.difference_ci_high < 0
    return f"**{text}**" if clear else text


def speedup_text(row) -> str:
    base = "-" if pd.isna(row.baseline_epoch) else f"{row.baseline_epoch:.0f}"
    if row.status != "ok":
        return f"{base} → not reached"
    return f"{base} → {row.source_epoch:.0f} ({row.speedup:.1f}x)"


def trend_table(trend: pd.DataFrame, differences: pd.DataFrame) -> str:
    """One row per target and blocks setting, one column per source: slope (95% interval)."""
    eps = differences[["source", "source_eps"]].drop_duplicates()
    trend = trend.merge(eps, on="source")
    sources = eps.sort_values(["source_eps", "source"]).itertuples()
    sources = [(row.source, source_label(row)) for row in sources]
    lines = ["| target | blocks | " + " | ".join(label for _, label in sources) + " |",
             "|---|---|" + "---:|" * len(sources)]
    for (target, blocks), rows in trend.groupby(["target", "unfrozen_blocks"]):
        by_source = {r.source: r for r in rows.itertuples()}
        cells = [_slope_text(by_source.get(source)) for source, _ in sources]
        lines.append(f"| {TARGETS.get(target, target)} | {BLOCKS.get(blocks, blocks)} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def _slope_text(row) -> str:
    if row is None:
        return "-"
    return (f"{100 * row.slope_per_doubling:+.2f} ({100 * row.slope_ci_low:+.2f} to "
            f"{100 * row.slope_ci_high:+.2f})")


def with_eps(frame: pd.DataFrame, differences: pd.DataFrame) -> pd.DataFrame:
    return frame.merge(differences[["source", "source_eps"]].drop_duplicates(), on="source")


REFERENCE_EPS = 0.5  # about the paper's eps 3 at 224 px (see README)


def eps_differences(results_dir: Path, reference_eps: float = REFERENCE_EPS) -> pd.DataFrame:
    """Each robust source minus the robust source trained at ``reference_eps``, per cell,
    paired by seed (``stats.paired_differences`` with that source as the baseline).

    Every source's run of a seed uses the same training images and head initialization, so
    the pairing removes that shared variation here as it does against the natural source.
    Empty when there is no reference source or no second robust source.
    """
    table = stats.read_results(results_dir)
    robust = table[table.source_eps > 0]
    reference = robust.loc[robust.source_eps == reference_eps, "source"].unique()
    if len(reference) != 1 or robust.source.nunique() < 2:
        return pd.DataFrame()
    return stats.paired_differences(robust, reference[0])


def eps_section(results_dir: Path, targets, emit) -> None:
    differences = eps_differences(results_dir)
    emit(f"## (e) The trend with eps: each robust source minus eps {REFERENCE_EPS:g}\n")
    if differences.empty:
        emit(f"Needs the eps {REFERENCE_EPS:g} source and another robust source.\n")
        return
    emit(f"Test accuracy (points), paired by seed, ± the 95% t half-width; **bold**: the "
          f"interval excludes zero (negative: worse than eps {REFERENCE_EPS:g}).\n")
    for target in targets:
        emit(f"### {TARGETS[target]}\n\n{grid(differences, target, difference_text)}\n")


def curve_text(results_csv: Path) -> str:
    """How the runs' test curves were measured, read from their rows: "curves every 5
    epochs on 2,000 test images" (the smallest spacing and set of the grid's rows)."""
    if not results_csv.exists():
        return "curves as the grid measured them"
    rows = pd.read_csv(results_csv)
    epochs = sorted(int(c.rsplit("_", 1)[1]) for c in rows if c.startswith("test_accuracy_epoch_"))
    every = min((b - a for a, b in zip(epochs, epochs[1:])), default=epochs[0] if epochs else 0)
    images = int(rows["curve_test_images"].min())
    return f"curves every {every} epochs on {images:,} test images"


def markdown(report_dir) -> str:
    """The answers as markdown, from ``report_dir`` (a ``report`` output directory)."""
    stream = io.StringIO()
    emit = functools.partial(print, file=stream)
    report = Path(report_dir)
    differences = pd.read_csv(report / "differences.csv")
    if differences.empty:
        emit("No robust source beside the natural one in this report yet: nothing to answer.")
        return stream.getvalue()
    efficiency = with_eps(pd.read_csv(report / "efficiency.csv"), differences)
    speedup = with_eps(pd.read_csv(report / "speedup.csv"), differences)
    trend = pd.read_csv(report / "trend.csv")
    baseline = differences.baseline.iloc[0]
    targets = [t for t in TARGETS if t in set(differences.target)]
    emit(f"# Answers (a)-(d): robust sources vs `{baseline}`\n")
    emit(f"Written by `python main.py report --results {runs.checkout_relative(report.parent)} "
         "--analysis answers` "
         "from [report/](report/summary.md)"
          " (do not edit by hand). Columns: the unfrozen blocks and the source's training eps.\n")
    emit("## (a) Robust minus natural test accuracy (points)\n")
    emit("Paired by seed, ± the 95% t half-width; **bold**: the interval excludes zero. "
          "The paper's column: its L2 eps 3 minus natural, 3 blocks.\n")
    for target in targets:
        emit(f"### {TARGETS[target]}\n\n{grid(differences, target, difference_text, paper_differences())}\n")
    emit("## (b) Change of the difference per doubling of N (points, 95% interval)\n")
    emit(trend_table(trend, differences) + "\n")
    emit("## (c) Times fewer training images to reach the natural source's accuracy at N\n")
    emit("`>x`: the robust source's smallest N already reaches it; `<x`: not reached by the "
          "largest N.\n")
    for target in targets:
        emit(f"### {TARGETS[target]}\n\n"
              f"{grid(efficiency, target, lambda row: str(row.ratio_text), paper_efficiency())}\n")
    emit("## (d) Epochs to reach the natural source's final accuracy\n")
    emit("Natural's first epoch at its own final mean accuracy → the robust source's "
          f"(speed-up); {curve_text(report.parent / 'results.csv')}.\n")
    for target in targets:
        emit(f"### {TARGETS[target]}\n\n{grid(speedup, target, speedup_text)}\n")
    eps_section(report.parent, targets, emit)
    return stream.getvalue()
