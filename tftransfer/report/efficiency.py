"""Data and epoch efficiency: how many times fewer training images (or epochs) a source
needs to reach the baseline's accuracy."""

from __future__ import annotations

import math

import pandas as pd

from tftransfer.report.stats import curve_keys, epoch_curves, pair_keys

# Tolerance for "reaches the accuracy": means of identical numbers can differ in the last bit.
_REACH_TOL = 1e-9


def images_needed(train_images, accuracies, target_accuracy: float) -> tuple[float, str]:
    """The smallest N at which a mean-accuracy curve reaches ``target_accuracy``.

    The curve is interpolated linearly in log N between the measured sizes (the
    sweep's N values are log-spaced, and accuracy grows roughly linearly in log N).

    Args:
      train_images: the measured training-set sizes.
      accuracies: the mean accuracy at each size (NaNs are ignored).
      target_accuracy: the accuracy to reach.

    Returns:
      ``(n, status)``: status ``"ok"`` with the interpolated N; ``"below_range"``
      (NaN) when the curve is already above the target at its smallest N, so the
      true N is smaller than measured; ``"not_reached"`` (NaN) when it never reaches
      the target up to its largest N; ``"no_data"`` (NaN) for an empty curve.
    """
    curve = pd.DataFrame({"n": train_images, "acc": accuracies}).dropna().sort_values("n")
    ns, accs = curve["n"].to_numpy(float), curve["acc"].to_numpy(float)
    if ns.size == 0:
        return math.nan, "no_data"
    goal = target_accuracy - _REACH_TOL
    if accs[0] >= goal:
        # Exactly at the first point counts as reached there; clearly above it means
        # the crossing lies somewhere below the measured range.
        return (float(ns[0]), "ok") if accs[0] <= target_accuracy + _REACH_TOL \
            else (math.nan, "below_range")
    for i in range(1, ns.size):
        if accs[i] >= goal:
            fraction = (target_accuracy - accs[i - 1]) / (accs[i] - accs[i - 1])
            fraction = min(max(fraction, 0.0), 1.0)
            log_n = math.log(ns[i - 1]) + fraction * (math.log(ns[i]) - math.log(ns[i - 1]))
            return math.exp(log_n), "ok"
    return math.nan, "not_reached"


def data_efficiency(summary: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """How many times fewer training images each source needs to match the baseline.

    For every baseline cell (target, ``curve_keys``, N) the baseline's mean accuracy is
    looked up on the other source's mean-accuracy-vs-N curve.

    Args:
      summary: output of ``summarize``.
      baseline: the baseline source name.

    Returns:
      One row per (target, unfrozen_blocks, [epochs], source, N): ``baseline_accuracy``,
      ``images_needed``, ``ratio`` (= N / images_needed, NaN unless status is
      ``ok``), ``status`` (see ``images_needed``) and ``ratio_text`` (e.g. ``4.0``,
      ``>8.0`` when reached below the smallest N, ``<0.5`` when not reached by the
      largest N).
    """
    group = ["target"] + curve_keys(summary)
    rows = []
    for values, cells in summary.groupby(group, sort=True):
        natural = cells.loc[cells["source"] == baseline].sort_values("train_images")
        for source, curve in cells.loc[cells["source"] != baseline].groupby("source"):
            for _, cell in natural.iterrows():
                rows.append({**dict(zip(group, values)), "source": source,
                             "baseline": baseline,
                             **_efficiency_row(cell["train_images"], cell["accuracy_mean"],
                                               curve)})
    columns = group[:1] + ["source"] + group[1:] + [
        "baseline", "train_images", "baseline_accuracy", "images_needed", "ratio", "status",
        "ratio_text"]
    return pd.DataFrame(rows, columns=columns)


def _efficiency_row(n_baseline: int, accuracy: float, curve: pd.DataFrame) -> dict:
    needed, status = images_needed(curve["train_images"], curve["accuracy_mean"], accuracy)
    ratio = n_baseline / needed if status == "ok" else math.nan
    if status == "ok":
        text = f"{ratio:.1f}"
    elif status == "below_range":
        text = f">{n_baseline / curve['train_images'].min():.1f}"
    elif status == "not_reached":
        text = f"<{n_baseline / curve['train_images'].max():.1f}"
    else:
        text = "n/a"
    return {"train_images": int(n_baseline), "baseline_accuracy": accuracy,
            "images_needed": needed, "ratio": ratio, "status": status, "ratio_text": text}


def first_epoch_reaching(curve: pd.DataFrame, accuracy: float) -> float:
    """The first evaluated epoch whose mean accuracy reaches ``accuracy`` (NaN if none)."""
    reached = curve.loc[curve["accuracy_mean"] >= accuracy - _REACH_TOL, "epoch"]
    return float(reached.min()) if not reached.empty else math.nan


def epochs_speedup(table: pd.DataFrame, baseline: str,
                   curves: pd.DataFrame | None = None) -> pd.DataFrame:
    """How many times fewer epochs a source needs to reach the baseline's final accuracy.

    For each cell the goal is the baseline's mean accuracy at its last evaluated epoch
    (its final accuracy, on the images the curves were measured on); the speed-up
    is (first epoch where the baseline's own mean curve reaches it) / (first epoch
    where the source's mean curve reaches it). Only evaluated epochs count, so the
    epochs are as coarse as the evaluation schedule.

    Args:
      table: validated results.
      baseline: the baseline source name.
      curves: ``epoch_curves(table)`` if already computed.

    Returns:
      One row per (cell, non-baseline source): ``baseline_final_accuracy``,
      ``baseline_epoch``, ``source_epoch``, ``speedup`` and ``status`` (``ok`` or
      ``not_reached``); empty without per-epoch columns.
    """
    keys = pair_keys(table)
    curves = epoch_curves(table) if curves is None else curves
    columns = keys[:1] + ["source"] + keys[1:] + [
        "baseline", "baseline_final_accuracy", "baseline_epoch", "source_epoch", "speedup",
        "status"]
    if curves.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    for values, cell_curves in curves.groupby(keys, sort=True):
        values = values if isinstance(values, tuple) else (values,)
        base_curve = cell_curves.loc[cell_curves["source"] == baseline]
        if base_curve.empty:
            continue
        # The curve's own last point, not test_accuracy: a sweep may measure its curves on a
        # part of the test set (curve_test_images), and the goal must be on the same images.
        goal = float(base_curve.sort_values("epoch")["accuracy_mean"].iloc[-1])
        base_epoch = first_epoch_reaching(base_curve, goal)
        for source, curve in cell_curves.loc[cell_curves["source"] != baseline].groupby("source"):
            epoch = first_epoch_reaching(curve, goal)
            ok = not (math.isnan(epoch) or math.isnan(base_epoch))
            rows.append({**dict(zip(keys, values)), "source": source, "baseline": baseline,
                         "baseline_final_accuracy": goal, "baseline_epoch": base_epoch,
                         "source_epoch": epoch,
                         "speedup": base_epoch / epoch if ok else math.nan,
                         "status": "ok" if ok else "not_reached"})
    return pd.DataFrame(rows, columns=columns)
