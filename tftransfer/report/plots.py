"""Figures of the results tables made by ``tftransfer.report.stats`` (PNG, no TensorFlow).

Every function returns a ``matplotlib.figure.Figure`` built without ``pyplot``: no
global figure registry (nothing leaks in a long sweep report) and no display
backend is needed; ``save_figure`` renders it with the Agg canvas.

The shared drawing pieces (colours, bands, legends, ``save_figure``) are in ``report.plot_parts``;
its public names are importable from here too.
"""

from __future__ import annotations

import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, MaxNLocator

from tftransfer.report import stats
from tftransfer.report.plot_parts import (ACCURACY_RANGE, DIFFERENCE_RANGE, LINESTYLES,
                                          block_panels, has_few_seeds, interval_bounds, legend,
                                          line_with_band, log_images_axis, series,
                                          source_colors)


def _images_figure(frame: pd.DataFrame, title: str, ylabel: str, draw) -> Figure:
    """One log-N panel per blocks setting; ``draw(ax, rows)`` adds the lines of one panel."""
    panels = block_panels(frame)
    figure = Figure(figsize=(5.6 * len(panels) + 0.8, 4.4))
    axes = figure.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    for ax, (panel_title, rows) in zip(axes, panels):
        draw(ax, rows)
        log_images_axis(ax, frame["train_images"] if not frame.empty else [1])
        ax.set_title(panel_title, fontsize="medium")
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel(ylabel)
    legend(axes[0], has_few_seeds(frame))
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def plot_accuracy_vs_images(summary: pd.DataFrame, target: str,
                            baseline: str | None = None, colors: dict | None = None) -> Figure:
    """Test accuracy (%) vs number of training images for one target, with 95% bands.

    Args:
      summary: output of ``stats.summarize``.
      target: the target dataset to plot.
      baseline: the baseline source (drawn first, in grey).
      colors: source -> colour (default ``source_colors``).

    Returns:
      The figure: one log-N axes per unfrozen-blocks setting, one line per source.
    """
    rows = summary.loc[summary["target"] == target]
    colors = colors or source_colors(summary["source"], baseline)

    def draw(ax, panel):
        for label, color, linestyle, line in series(panel, baseline, colors):
            line = line.sort_values("train_images")
            line_with_band(ax, line["train_images"], 100 * line["accuracy_mean"],
                           *interval_bounds(line, "accuracy", "n_seeds", ACCURACY_RANGE),
                           label, color, linestyle)

    return _images_figure(rows, f"{target}: test accuracy vs training images (95% CI)",
                          "Test accuracy (%)", draw)


def plot_difference_vs_images(differences: pd.DataFrame, target: str,
                              colors: dict | None = None) -> Figure:
    """Source-minus-baseline accuracy (percentage points) vs N, paired 95% bands, zero line.

    Args:
      differences: output of ``stats.paired_differences``.
      target: the target dataset to plot.
      colors: source -> colour (default ``source_colors``).

    Returns:
      The figure: one log-N axes per unfrozen-blocks setting, one line per source.
    """
    rows = differences.loc[differences["target"] == target]
    baseline = rows["baseline"].iloc[0] if not rows.empty else "baseline"
    colors = colors or source_colors(differences["source"])

    def draw(ax, panel):
        ax.axhline(0.0, color="black", linewidth=0.8)
        for label, color, linestyle, line in series(panel, None, colors):
            line = line.sort_values("train_images")
            line_with_band(ax, line["train_images"], 100 * line["difference_mean"],
                           *interval_bounds(line, "difference", "n_pairs", DIFFERENCE_RANGE),
                           label, color, linestyle)

    return _images_figure(rows, f"{target}: source − {baseline} (paired by seed, 95% CI)",
                          "Accuracy difference (percentage points)", draw)


def eps_sources(differences: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``differences`` whose source was trained against an attack with a known
    eps (a natural source other than the baseline carries eps 0 and is left out)."""
    if "source_eps" not in differences.columns:
        return differences.iloc[0:0]
    attacked = differences["source_attack"] != stats.NATURAL_ATTACK
    return differences.loc[attacked & differences["source_eps"].notna()]


def has_eps_trend(differences: pd.DataFrame, target: str) -> bool:
    """Whether ``target`` has sources of one attack at two or more eps: a trend to plot."""
    if "source_eps" not in differences.columns:
        return False
    rows = eps_sources(differences)
    rows = rows.loc[rows["target"] == target]
    return bool((rows.groupby("source_attack")["source_eps"].nunique() >= 2).any())


def plot_difference_vs_eps(differences: pd.DataFrame, target: str) -> Figure:
    """Source-minus-baseline accuracy (percentage points) vs the source's training eps, one
    line per N with paired 95% error bars: how the gain depends on the robustness of the
    source (too large an eps can transfer worse).

    Args:
      differences: output of ``stats.paired_differences`` (with ``source_eps``).
      target: the target dataset to plot.

    Returns:
      The figure: one axes per unfrozen-blocks setting; lines coloured by N (light = small);
      one line style per attack kind when there are several.
    """
    rows = eps_sources(differences)
    rows = rows.loc[rows["target"] == target]
    baseline = rows["baseline"].iloc[0] if not rows.empty else "baseline"
    sizes = sorted({int(n) for n in rows["train_images"]})
    attacks = sorted(rows["source_attack"].unique())
    eps_values = sorted(rows["source_eps"].unique())
    dodge = 0.012 * ((eps_values[-1] - eps_values[0]) if len(eps_values) > 1 else 1.0)
    panels = block_panels(rows)
    figure = Figure(figsize=(5.2 * len(panels) + 0.8, 4.4))
    axes = figure.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    for ax, (panel_title, panel) in zip(axes, panels):
        ax.axhline(0.0, color="black", linewidth=0.8)
        for (n, attack), line in _eps_lines(panel):
            label = f"N = {n}" + (f", {attack}" if len(attacks) > 1 else "")
            _difference_line(ax, line, "source_eps", n, sizes, dodge, label,
                             LINESTYLES[attacks.index(attack) % len(LINESTYLES)])
        ax.xaxis.set_major_locator(FixedLocator(eps_values))
        _finish_difference_panel(ax, "Source training eps", panel_title)
    return _finish_difference_figure(
        figure, axes, has_few_seeds(rows), f"{target}: source − {baseline} vs source eps (paired by seed, 95% CI)")


def plot_difference_vs_blocks(differences: pd.DataFrame, target: str) -> Figure:
    """Source-minus-baseline accuracy (percentage points) vs the number of fine-tuned blocks,
    one line per N with paired 95% error bars: how much of the gain survives fine-tuning.

    Args:
      differences: output of ``stats.paired_differences`` with several ``unfrozen_blocks``.
      target: the target dataset to plot.

    Returns:
      The figure: one axes per source; lines coloured by N (light = small).
    """
    rows = differences.loc[differences["target"] == target]
    baseline = rows["baseline"].iloc[0] if not rows.empty else "baseline"
    sizes = sorted({int(n) for n in rows["train_images"]})
    blocks = sorted({int(b) for b in rows["unfrozen_blocks"]})
    panels = list(rows.groupby("source", sort=True)) or [("", rows)]
    figure = Figure(figsize=(5.2 * len(panels) + 0.8, 4.4))
    axes = figure.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    for ax, (source, panel) in zip(axes, panels):
        ax.axhline(0.0, color="black", linewidth=0.8)
        for n, line in panel.groupby("train_images", sort=True):
            _difference_line(ax, line, "unfrozen_blocks", int(n), sizes, 0.06, f"N = {n}")
        ax.xaxis.set_major_locator(FixedLocator(blocks))
        _finish_difference_panel(ax, "Fine-tuned blocks (0 = head only)", source)
    return _finish_difference_figure(
        figure, axes, has_few_seeds(rows), f"{target}: source − {baseline}\nvs fine-tuned blocks (paired by seed, "
                      "95% CI)")  # two lines: one panel is too narrow for the long title


def _difference_line(ax, line: pd.DataFrame, x_column: str, n: int, sizes: list[int],
                     dodge: float, label: str, linestyle: str = "-") -> None:
    """One N's paired difference (points, 95% error bars) against ``x_column``, coloured by
    N (light = small) and nudged sideways by ``dodge`` per N so overlapping bars stay
    readable."""
    palette = colormaps["viridis_r"].resampled(max(len(sizes), 2))
    line = line.sort_values(x_column)
    mean = 100 * line["difference_mean"]
    # NaN bounds (fewer than MIN_SEEDS_FOR_INTERVAL pairs): errorbar draws no bar there.
    low, high = interval_bounds(line, "difference", "n_pairs", DIFFERENCE_RANGE)
    error = [mean - low, high - mean]
    shift = dodge * (sizes.index(n) - (len(sizes) - 1) / 2)
    ax.errorbar(line[x_column] + shift, mean, yerr=error, marker="o", markersize=4, capsize=3,
                label=label, color=palette(sizes.index(n)), linestyle=linestyle)


def _finish_difference_panel(ax, xlabel: str, title: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize="medium")
    ax.grid(True, alpha=0.3)


def _finish_difference_figure(figure: Figure, axes, few_seeds: bool, title: str) -> Figure:
    axes[0].set_ylabel("Accuracy difference (percentage points)")
    legend(axes[0], few_seeds, ncol=2)
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def _eps_lines(panel: pd.DataFrame):
    """Yields ``((N, attack), rows)``: the rows of one line of the eps figure."""
    for (n, attack), rows in panel.groupby(["train_images", "source_attack"], sort=True):
        yield (int(n), attack), rows


def default_curve_images(train_images) -> list[int]:
    """Up to three N values for the epoch figures: the smallest, middle and largest."""
    values = sorted({int(n) for n in train_images})
    if len(values) <= 3:
        return values
    return [values[0], values[len(values) // 2], values[-1]]


def plot_accuracy_vs_epochs(curves: pd.DataFrame, target: str, train_images=None,
                            baseline: str | None = None, colors: dict | None = None) -> Figure:
    """Test accuracy (%) vs epoch for one target: one row of panels per unfrozen-blocks
    setting (their schedules can differ in length), one panel per chosen N, one line per
    source.

    Args:
      curves: output of ``stats.epoch_curves``.
      target: the target dataset to plot.
      train_images: the N values to show (default ``default_curve_images``); values
        absent from the curves are skipped.
      baseline: the baseline source (drawn first, in grey).
      colors: source -> colour (default ``source_colors``).

    Returns:
      The figure (a grid of axes; each row shares its y axis, each panel has its own x axis).
    """
    rows = curves.loc[curves["target"] == target]
    available = sorted({int(n) for n in rows["train_images"]})
    chosen = [n for n in (train_images or default_curve_images(available)) if n in available]
    colors = colors or source_colors(curves["source"], baseline)
    panels = block_panels(rows)
    figure = Figure(figsize=(4.2 * max(len(chosen), 1) + 0.6, 3.9 * len(panels) + 0.5))
    grid = figure.subplots(len(panels), max(len(chosen), 1), sharey="row", squeeze=False)
    for axes, (panel_title, panel_rows) in zip(grid, panels):
        for ax, n in zip(axes, chosen):
            _draw_epoch_panel(ax, panel_rows.loc[panel_rows["train_images"] == n], baseline,
                              colors)
            ax.set_title(f"N = {n}" + (f", {panel_title}" if panel_title else ""),
                         fontsize="medium")
        axes[0].set_ylabel("Test accuracy (%)")
        if chosen:
            legend(axes[0], has_few_seeds(panel_rows))
    figure.suptitle(f"{target}: test accuracy vs epochs (95% CI)")
    figure.tight_layout()
    return figure


def _draw_epoch_panel(ax, rows: pd.DataFrame, baseline: str | None, colors: dict) -> None:
    for label, color, linestyle, line in series(rows, baseline, colors):
        line = line.sort_values("epoch")
        line_with_band(ax, line["epoch"], 100 * line["accuracy_mean"],
                       *interval_bounds(line, "accuracy", "accuracy_n", ACCURACY_RANGE),
                       label, color, linestyle)
    ax.set_xlabel("Epoch")
    ax.grid(True, alpha=0.3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
