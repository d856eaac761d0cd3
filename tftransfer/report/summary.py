"""The report's markdown tables: paired differences, their trend, data efficiency and epoch
speed-up, one table per setting and source (rows N, columns targets)."""

from __future__ import annotations

import pandas as pd

from tftransfer.report.stats import curve_keys, epochs_per_cell


def difference_cell_text(row) -> str:
    """``"68.7 / 83.8 (+15.1 ± 2.3)"``: baseline / source accuracy (%) and their difference.

    The ``±`` part is the half-width of the paired 95% interval; it is left out when
    there is a single pair.
    """
    text = (f"{100 * row['baseline_mean']:.1f} / {100 * row['source_mean']:.1f} "
            f"({100 * row['difference_mean']:+.1f}")
    half = row["difference_ci_half"]
    if not pd.isna(half):
        text += f" ± {100 * half:.1f}"
    return text + ")"


def markdown_grid(rows: pd.DataFrame, text_column: str, corner: str = "N") -> str:
    """A markdown table: one row per ``train_images``, one column per ``target``.

    Args:
      rows: at most one row per (train_images, target), with ``text_column``.
      text_column: the cell text.
      corner: the header of the first column.

    Returns:
      The table as markdown (missing cells show an en dash).
    """
    grid = rows.pivot(index="train_images", columns="target", values=text_column)
    grid = grid.sort_index().reindex(sorted(grid.columns), axis=1)
    epochs = _epochs_by_n(rows)
    header = f"| {corner} | " + " | ".join(map(str, grid.columns)) + " |"
    rule = "|---:|" + "|".join(":---:" for _ in grid.columns) + "|"
    lines = [header, rule]
    for n, values in grid.iterrows():
        cells = ["–" if pd.isna(value) else str(value) for value in values]
        label = f"{n} ({epochs[n]} epochs)" if epochs else str(n)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _epochs_by_n(rows: pd.DataFrame) -> dict:
    """N -> epochs when the rows' epochs follow a schedule over N (one value per N, not the
    same for all); {} otherwise (nothing worth a label)."""
    if "epochs" not in rows.columns or rows["epochs"].nunique() < 2:
        return {}
    per_n = epochs_per_cell(rows, "train_images")
    return {} if per_n is None else {n: int(epochs) for n, epochs in per_n.items()}


def table_groups(frame: pd.DataFrame):
    """Yields ``(title_suffix, rows)`` per ``curve_keys`` setting and source."""
    group = curve_keys(frame) + ["source"]
    for values, rows in frame.groupby(group, sort=True):
        setting = dict(zip(group, values))
        suffix = f"{setting['source']}, {setting['unfrozen_blocks']} unfrozen block(s)"
        if "epochs" in setting:
            suffix += f", {setting['epochs']} epochs"
        elif "epochs" in rows.columns and rows["epochs"].nunique() == 1:
            suffix += f", {rows['epochs'].iloc[0]} epochs"  # else markdown_grid labels each N
        yield suffix, rows


def summary_tables_markdown(differences: pd.DataFrame) -> str:
    """The paper-style summary tables of ``paired_differences`` output, as markdown.

    One table per ``curve_keys`` setting and per non-baseline source;
    rows are N, columns are targets, cells ``"baseline / source (difference ± CI)"``
    in percent with one decimal.
    """
    if differences.empty:
        return "_No source to compare with the baseline._"
    sections = []
    for suffix, rows in table_groups(differences):
        baseline = rows["baseline"].iloc[0]
        rows = rows.assign(text=rows.apply(difference_cell_text, axis=1))
        sections.append(f"#### {baseline} / {suffix}\n\n" + markdown_grid(rows, "text"))
    return "\n\n".join(sections)


def multiple_comparisons_text(differences: pd.DataFrame, level: float = 0.05) -> str:
    """How many differences are clear of zero, against how many would be by chance.

    With k independent 95% intervals and no real difference anywhere, about 0.05 k
    would exclude zero; Holm's correction over all k (``stats.add_t_tests``) keeps the
    chance of any false "clear of zero" below 5%.
    """
    tested = differences.dropna(subset=["difference_p"])
    if tested.empty:
        return "_No difference with an interval (each needs two or more seed pairs)._"
    clear = int((tested["difference_p"] < level).sum())
    survive = int((tested["difference_p_holm"] < level).sum())
    return (f"{clear} of the {len(tested)} differences with an interval are clear of zero at "
            f"95%; about {level * len(tested):.1f} would be by chance if no difference were "
            f"real. {survive} remain clear after Holm's correction over all {len(tested)} "
            "(`difference_p`, `difference_p_holm` in differences.csv).")


def efficiency_tables_markdown(efficiency: pd.DataFrame) -> str:
    """Tables of ``data_efficiency`` ratios: rows are the baseline's N, columns targets."""
    if efficiency.empty:
        return "_No source to compare with the baseline._"
    sections = []
    for suffix, rows in table_groups(efficiency):
        sections.append(f"#### {suffix}\n\n" + markdown_grid(rows, "ratio_text"))
    return "\n\n".join(sections)


def speedup_tables_markdown(speedup: pd.DataFrame) -> str:
    """Tables of ``epochs_speedup``: cells ``"baseline epoch → source epoch (ratio×)"``."""
    if speedup.empty:
        return ("_Nothing to compare: no source beside the baseline, or no per-epoch accuracy "
                "columns in the results._")
    speedup = speedup.assign(text=speedup.apply(_speedup_text, axis=1))
    sections = []
    for suffix, rows in table_groups(speedup):
        sections.append(f"#### {suffix}\n\n" + markdown_grid(rows, "text"))
    return "\n\n".join(sections)


def _speedup_text(row) -> str:
    base = "–" if pd.isna(row["baseline_epoch"]) else f"{row['baseline_epoch']:.0f}"
    if row["status"] != "ok":
        return f"{base} → not reached"
    return f"{base} → {row['source_epoch']:.0f} ({row['speedup']:.1f}×)"


def trend_table_markdown(trend: pd.DataFrame) -> str:
    """One markdown table of ``difference_trend``, in percentage points."""
    if trend.empty:
        return "_Nothing to compare: no source beside the baseline._"

    def points(value):
        return "n/a" if pd.isna(value) else f"{100 * value:+.1f}"
    lines = ["| target | source | unfrozen blocks | difference at smallest N | at largest N "
             "| change per doubling of N (95% CI, df) |", "|---|---|---:|---:|---:|---:|"]
    for row in trend.itertuples():
        slope = points(row.slope_per_doubling)
        if not pd.isna(row.slope_ci_half):
            slope += (f" ({points(row.slope_ci_low)} to {points(row.slope_ci_high)}, "
                      f"{row.slope_df:.0f})")
        lines.append(f"| {row.target} | {row.source} | {row.unfrozen_blocks} "
                     f"| {points(row.difference_at_smallest_n)} (N = {row.smallest_n}) "
                     f"| {points(row.difference_at_largest_n)} (N = {row.largest_n}) | {slope} |")
    return "\n".join(lines)
