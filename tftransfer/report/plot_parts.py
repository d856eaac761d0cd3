"""The pieces every results figure is drawn with (``plots``): colours and line styles per
source, one line per source and setting, 95% bands clipped to the possible range (none with
fewer than ``MIN_SEEDS_FOR_INTERVAL`` seeds), legends saying so, panels per unfrozen-blocks
setting, the log axis of N, and ``save_figure`` (the Agg canvas, no ``pyplot``).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from tftransfer.report import stats

DPI = 120
LINESTYLES = ("-", "--", ":", "-.")
BASELINE_COLOR = "0.25"
COLORS = ("tab:red", "tab:blue", "tab:green", "tab:orange", "tab:purple", "tab:brown",
          "tab:pink", "tab:olive", "tab:cyan")
# A t-interval from 2 seeds uses t(0.975, 1 dof) = 12.7 and spans hundreds of points: it says
# how little two seeds show, not where the mean lies, so such cells get a point and no interval.
MIN_SEEDS_FOR_INTERVAL = 3
NO_INTERVAL_NOTE = f"no 95% CI where < {MIN_SEEDS_FOR_INTERVAL} seeds"
ACCURACY_RANGE = (0.0, 100.0)  # percent
DIFFERENCE_RANGE = (-100.0, 100.0)  # percentage points: a difference of two accuracies


def save_figure(figure: Figure, path, dpi: int = DPI) -> Path:
    """Writes ``figure`` as a PNG file (creating the directory) and returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure)  # attaches the Agg canvas explicitly, whatever the default backend
    figure.savefig(path, dpi=dpi, format="png")
    return path


def source_colors(sources, baseline: str | None = None) -> dict:
    """A fixed colour per source (the baseline in dark grey), stable across figures."""
    others = sorted(source for source in set(sources) if source != baseline)
    colors = {source: COLORS[i % len(COLORS)] for i, source in enumerate(others)}
    if baseline is not None:
        colors[baseline] = BASELINE_COLOR
    return colors


def style_columns(frame: pd.DataFrame) -> list[str]:
    """The setting columns besides the source that vary in ``frame`` (each gets a line style)."""
    # Settings other than the source that vary in this figure get their own line style;
    # epochs only as a variable, not as a schedule that changes with N.
    return [column for column in stats.curve_keys(frame)
            if column in frame.columns and frame[column].nunique() > 1]


def series(frame: pd.DataFrame, baseline: str | None, colors: dict):
    """Yields ``(label, color, linestyle, rows)``: one line per source and varying setting."""
    styles = style_columns(frame)
    settings = sorted(frame[styles].drop_duplicates().itertuples(index=False, name=None)) \
        if styles else [()]
    linestyle = {setting: LINESTYLES[i % len(LINESTYLES)] for i, setting in enumerate(settings)}
    sources = sorted(frame["source"].unique(), key=lambda name: (name != baseline, name))
    for source in sources:
        for setting in settings:
            mask = frame["source"] == source
            for column, value in zip(styles, setting):
                mask &= frame[column] == value
            if not mask.any():
                continue
            label = source + "".join(
                f", {_SHORT.get(column, column)}={value}" for column, value in zip(styles, setting))
            yield label, colors.get(source, "black"), linestyle[setting], frame.loc[mask]


_SHORT = {"unfrozen_blocks": "blocks", "epochs": "epochs"}


def log_images_axis(ax, train_images) -> None:
    """Log x axis with one labelled tick per measured N and no minor ticks."""
    ticks = sorted({int(n) for n in train_images})
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.xaxis.set_minor_locator(NullLocator())
    if len(ticks) == 1:
        # A single N would give a zero-width log range.
        ax.set_xlim(ticks[0] / 2, ticks[0] * 2)
    ax.set_xlabel("Training images N (log scale)")


def interval_bounds(line: pd.DataFrame, prefix: str, count: str,
                    limits: tuple[float, float]) -> tuple[pd.Series, pd.Series]:
    """The 95% interval of ``<prefix>_ci_low/_ci_high`` in percent, as drawn.

    Args:
      line: rows of one plotted line (a stats table).
      prefix: ``accuracy`` or ``difference``.
      count: the column with each row's number of seeds (or seed pairs).
      limits: the possible range in percent; a t-interval can pass it, the value cannot.

    Returns:
      ``(low, high)``: NaN (nothing drawn) where fewer than ``MIN_SEEDS_FOR_INTERVAL``
      seeds, else clipped to ``limits``.
    """
    enough = line[count] >= MIN_SEEDS_FOR_INTERVAL
    low = (100 * line[f"{prefix}_ci_low"]).clip(*limits).where(enough)
    high = (100 * line[f"{prefix}_ci_high"]).clip(*limits).where(enough)
    return low, high


def seed_count_column(frame: pd.DataFrame) -> str:
    """The column of ``frame`` that counts the seeds behind each row."""
    # summarize() counts seeds in n_seeds, epoch_curves() counts runs in accuracy_n,
    # paired_differences() counts seed pairs in n_pairs.
    for column in ("n_pairs", "n_seeds", "accuracy_n"):
        if column in frame.columns:
            return column
    raise KeyError("the table has no seed count (n_pairs, n_seeds or accuracy_n)")


def has_few_seeds(frame: pd.DataFrame) -> bool:
    """Whether some row of ``frame`` is drawn without its interval."""
    if frame.empty:
        return False
    return bool((frame[seed_count_column(frame)] < MIN_SEEDS_FOR_INTERVAL).any())


def legend(ax, few_seeds: bool, **kwargs) -> None:
    """The axes' legend, with a last entry saying why some points have no interval."""
    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return
    if few_seeds:
        handles.append(Line2D([], [], linestyle="none"))
        labels.append(NO_INTERVAL_NOTE)
    ax.legend(handles, labels, fontsize="small", **kwargs)


def line_with_band(ax, x, mean, low, high, label, color, linestyle) -> None:
    """A mean line with its 95% interval as a shaded band of the same colour."""
    # Markers show where measurements are; on long curves they would merge into a thick line.
    marker = "o" if len(x) <= 40 else None
    ax.plot(x, mean, marker=marker, markersize=4, label=label, color=color, linestyle=linestyle)
    # NaN bounds (one seed) leave a gap rather than a fake zero-width band.
    ax.fill_between(x, low, high, color=color, alpha=0.18, linewidth=0)


def block_panels(frame: pd.DataFrame):
    """``(title, rows)`` per unfrozen-blocks setting: separate panels keep the bands readable."""
    if "unfrozen_blocks" not in frame.columns or frame.empty:
        return [("", frame)]
    return [(f"{blocks} unfrozen block(s)", rows)
            for blocks, rows in frame.groupby("unfrozen_blocks", sort=True)]
