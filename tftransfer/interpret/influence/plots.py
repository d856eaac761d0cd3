"""The influence analysis' figures: the paper's Figures 5 (most influential images) and 6
(label match rates)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tftransfer.interpret.influence.ranking import ranking_scores, top_influential


_COLORS = ("tab:blue", "tab:red", "tab:green", "tab:orange", "tab:purple", "tab:brown")


def save(figure, path) -> Path:
    """Writes ``figure`` to ``path`` (as every figure of the toolkit is written)."""
    from tftransfer.report.plot_parts import save_figure

    return save_figure(figure, path)


def plot_match_rates(rates: pd.DataFrame, rank: str = "helpful"):
    """The paper's Figure 6: label match rate of the k-th most influential training image,
    one panel for test images as targets and one for training images, one line per model."""
    from matplotlib.figure import Figure

    panels = [t for t in ("test", "train") if (rates["targets"] == t).any()]
    figure = Figure(figsize=(5.2 * len(panels) + 0.6, 4.2))
    axes = figure.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    models = list(dict.fromkeys(rates["model"]))
    for ax, targets in zip(axes, panels):
        part = rates[rates["targets"] == targets]
        for i, model in enumerate(models):
            line = part[part["model"] == model]
            color = _COLORS[i % len(_COLORS)]
            ax.plot(line["k"], 100 * line["match_rate"], color=color, linewidth=1.4,
                    marker="o" if len(line) <= 20 else None, markersize=3, label=model)
            ax.axhline(100 * line["chance"].iloc[0], color=color, linestyle=":", linewidth=1)
        ax.set_title(f"{targets} images as targets"
                     + (" (self excluded)" if targets == "train" else ""), fontsize="medium")
        ax.set_xlabel(f"k (k-th most {'helpful' if rank == 'helpful' else 'influential (|I|)'} "
                      f"training image)")
        ax.set_ylim(0, 102)
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("Same label as the target (%)")
    axes[0].legend(fontsize="small", title="dotted: chance", title_fontsize="small")
    figure.suptitle("Label match rate of the k-th most influential training image")
    figure.tight_layout()
    return figure


def plot_most_influential(analyses, rows: int = 4, rank: str = "helpful", top: int = 5):
    """The paper's Figure 5: per model, a few test images and their ``top`` most influential
    training images with labels; frames are green when the label matches, red when not."""
    from matplotlib.figure import Figure

    rows = max(1, min(rows, min(len(a.run.test_labels) for a in analyses)))
    cell, header = 1.25, 0.8   # inches: one image, the two title lines above the grids
    width = len(analyses) * (top + 1) * cell + 0.4 * (len(analyses) - 1)
    height = rows * (cell + 0.35) + header
    figure = Figure(figsize=(width, height))
    subfigures = np.atleast_1d(figure.subfigures(1, len(analyses), wspace=0.04))
    for sub, analysis in zip(subfigures, analyses):
        _draw_influence_block(sub, analysis, rows, rank, top, 1.0 - header / height)
    figure.suptitle(f"Most {'helpful' if rank == 'helpful' else 'influential (|I|)'} training "
                    f"images for test images (green frame: same label)", fontsize="medium",
                    y=1.0 - 0.08 / height, va="top")
    return figure


def _draw_influence_block(sub, analysis, rows: int, rank: str, top: int,
                          grid_top: float) -> None:
    from tftransfer import data

    run = analysis.run
    order = top_influential(ranking_scores(analysis.influence.on_test[:rows], rank), top)
    test_images, _ = data.subset_arrays(run.target.test, run.test_indices[:rows],
                                        run.image_size, batch_size=64)
    train_images, _ = data.subset_arrays(run.target.train, run.train_indices[np.unique(order)],
                                         run.image_size, batch_size=64)
    lookup = {int(j): image for j, image in zip(np.unique(order), train_images)}
    axes = sub.subplots(rows, order.shape[1] + 1, squeeze=False)
    names = run.class_names
    for i in range(rows):
        truth = int(run.test_labels[i])
        _show(axes[i, 0], test_images[i], f"test: {names[truth]}", "black")
        for j, index in enumerate(order[i]):
            label = int(run.train_labels[index])
            color = "tab:green" if label == truth else "tab:red"
            _show(axes[i, j + 1], lookup[int(index)], f"#{j + 1}: {names[label]}", color)
    accuracy = analysis.summary["test_accuracy_head"]
    sub.suptitle(f"{run.name} (test accuracy {accuracy:.0%} on the {len(run.test_labels)} "
                 f"test images)", fontsize="medium", fontweight="bold",
                 y=grid_top + 0.45 * (1.0 - grid_top), va="center")
    sub.subplots_adjust(left=0.02, right=0.98, top=grid_top - 0.02, bottom=0.01, wspace=0.12,
                        hspace=0.45)


def _show(ax, image, title: str, frame_color: str) -> None:
    ax.imshow(np.clip(image, 0.0, 1.0), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=8, color=frame_color if frame_color != "black" else "black")
    for spine in ax.spines.values():
        spine.set_edgecolor(frame_color)
        spine.set_linewidth(2.5 if frame_color != "black" else 1.0)
