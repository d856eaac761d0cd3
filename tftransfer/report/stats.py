"""Results table -> means, 95% intervals, paired differences and their trend over N.

Pure pandas/scipy functions over the sweep's results table (one row per finished
fine-tuning run; ``report.results_table``); no TensorFlow. The pipeline used by ``report`` is::

    table = read_results(results_dir)
    baseline = resolve_baseline(table, name_or_none)
    summary = summarize(table)                   # mean and CI per cell
    differences = paired_differences(table, baseline)
    trend = difference_trend(differences)
    curves = epoch_curves(table)
    efficiency = efficiency.data_efficiency(summary, baseline)
    speedup = efficiency.epochs_speedup(table, baseline)

and ``report.summary`` turns them into tables.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from tftransfer.errors import UserError
from tftransfer.report.significance import add_t_tests
# Re-exported: the callers of the statistics read the results through this module too.
from tftransfer.report.results_table import (EPOCH_COLUMN, NATURAL_ATTACK, DataWarning, epoch_columns,
                                      read_results, validate_results)

__all__ = ["cell_keys", "CONFIDENCE", "curve_keys", "DataWarning", "difference_trend",
           "epoch_curves", "epochs_is_a_variable", "epochs_per_cell", "interval_columns",
           "interval_table", "mixed_commit_pairs", "NATURAL_ATTACK", "pair_keys",
           "paired_differences", "read_results",
           "resolve_baseline", "source_info", "summarize", "t_half_width",
           "validate_results"]

CONFIDENCE = 0.95


# ----------------------------------------------------------------------------- cells


def cell_keys(table: pd.DataFrame) -> list[str]:
    """The columns that identify a grid cell: target, source, N, unfrozen blocks (+ epochs).

    ``epochs`` is part of the key when the table has it: runs with different epoch
    budgets are different experiments even if everything else matches.
    """
    keys = ["target", "source", "train_images", "unfrozen_blocks"]
    if "epochs" in table.columns:
        keys.append("epochs")
    return keys


def pair_keys(table: pd.DataFrame) -> list[str]:
    """The cell key without ``source``: what a natural and a robust run share."""
    return [key for key in cell_keys(table) if key != "source"]


def epochs_is_a_variable(frame: pd.DataFrame) -> bool:
    """Whether ``frame`` holds more than one epoch budget for the same cell (an experimental
    variable), rather than one budget per cell (the grid's schedule, which may change with N:
    e.g. more epochs where a small N converges slowly)."""
    if "epochs" not in frame.columns or frame.empty:
        return False
    cell = [key for key in ("target", "source", "train_images", "unfrozen_blocks")
            if key in frame.columns]
    return epochs_per_cell(frame, cell) is None


def epochs_per_cell(frame: pd.DataFrame, keys) -> dict | None:
    """Cell -> its one epoch budget, the cells being the groups of ``keys``; None when some
    cell holds several budgets. ``epochs`` is a validated integer column (never missing)."""
    budgets = frame.groupby(keys)["epochs"].unique()
    if any(len(values) > 1 for values in budgets):
        return None
    return {cell: values[0] for cell, values in budgets.items()}


def curve_keys(frame: pd.DataFrame) -> list[str]:
    """Besides target and source, the settings that define one curve across N: unfrozen
    blocks, and epochs only when it is a variable (``epochs_is_a_variable``); a per-N
    schedule keeps the sizes of one blocks setting on one curve."""
    return ["unfrozen_blocks"] + (["epochs"] if epochs_is_a_variable(frame) else [])


def source_info(table: pd.DataFrame) -> pd.DataFrame:
    """One row per source with its ``source_attack`` (and ``source_eps`` when present)."""
    columns = ["source", "source_attack"] + (["source_eps"] if "source_eps" in table else [])
    return table[columns].drop_duplicates("source").sort_values("source").reset_index(drop=True)


def resolve_baseline(table: pd.DataFrame, baseline: str | None = None) -> str:
    """The source every other source is compared with.

    Args:
      table: validated results.
      baseline: an explicit source name (``--baseline``), or None to use the one
        natural source (``source_attack == 'none'``).

    Returns:
      The baseline source name.

    Raises:
      UserError: the named source is absent, or there is no or more than one natural
        source and no name was given.
    """
    sources = sorted(table["source"].unique())
    if baseline is not None:
        if baseline not in sources:
            raise UserError(f"--baseline {baseline!r} is not a source in the results; "
                            f"choose one of: {', '.join(sources)}.")
        return baseline
    natural = sorted(table.loc[table["source_attack"] == NATURAL_ATTACK, "source"].unique())
    if len(natural) == 1:
        return natural[0]
    if not natural:
        raise UserError(f"no natural source (source_attack '{NATURAL_ATTACK}') in the results; "
                        f"pass --baseline with one of: {', '.join(sources)}.")
    raise UserError(f"the results have {len(natural)} natural sources ({', '.join(natural)}); "
                    "pass --baseline NAME to choose the one to compare against.")


# ----------------------------------------------------------------------------- intervals


def t_half_width(sd, n, confidence: float = CONFIDENCE):
    """Half-width of the Student-t confidence interval of a mean.

    Args:
      sd: sample standard deviation(s) (ddof=1).
      n: sample size(s).
      confidence: two-sided confidence level.

    Returns:
      ``t.ppf((1 + confidence) / 2, n - 1) * sd / sqrt(n)``; NaN where ``n < 2``
      (one run says nothing about the spread). Scalars in, scalar out; arrays in, array out.
    """
    sd = np.asarray(sd, dtype=float)
    n = np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        dof = np.where(n >= 2, n - 1, np.nan)
        half = scipy_stats.t.ppf(0.5 + confidence / 2, dof) * sd / np.sqrt(n)
    half = np.where(n >= 2, half, np.nan)
    return float(half) if half.ndim == 0 else half


def interval_table(table: pd.DataFrame, keys, value: str, prefix: str) -> pd.DataFrame:
    """Mean, sd, count and 95% t-interval of ``value`` per group of ``keys``.

    Args:
      table: rows to aggregate.
      keys: grouping columns.
      value: the numeric column summarized (NaNs are ignored).
      prefix: prefix of the output columns (``<prefix>_mean``, ``_sd``, ``_n``,
        ``_ci_half``, ``_ci_low``, ``_ci_high``).

    Returns:
      One row per group, keys as columns.
    """
    grouped = table.groupby(list(keys), sort=True)[value].agg(["mean", "std", "count"])
    grouped = grouped.reset_index().rename(columns={
        "mean": f"{prefix}_mean", "std": f"{prefix}_sd", "count": f"{prefix}_n"})
    half = t_half_width(grouped[f"{prefix}_sd"], grouped[f"{prefix}_n"])
    grouped[f"{prefix}_ci_half"] = half
    grouped[f"{prefix}_ci_low"] = grouped[f"{prefix}_mean"] - half
    grouped[f"{prefix}_ci_high"] = grouped[f"{prefix}_mean"] + half
    return grouped


def summarize(table: pd.DataFrame) -> pd.DataFrame:
    """Mean test accuracy and its 95% t-interval over seeds, per cell.

    Returns:
      One row per cell (``cell_keys``) with the source's attack settings,
      ``n_runs``, ``n_seeds``, ``accuracy_mean/_sd/_ci_half/_ci_low/_ci_high``
      and the mean test loss / training time when the table has them.
    """
    keys = cell_keys(table)
    summary = interval_table(table, keys, "test_accuracy", "accuracy")
    summary = summary.rename(columns={"accuracy_n": "n_runs"})
    seeds = table.groupby(keys)["seed"].nunique().rename("n_seeds").reset_index()
    summary = summary.merge(seeds, on=keys)
    for column in ("test_loss", "train_seconds"):
        if column in table.columns:
            means = table.groupby(keys)[column].mean().rename(f"{column}_mean").reset_index()
            summary = summary.merge(means, on=keys)
    summary = source_info(table).merge(summary, on="source")
    first = keys + [column for column in ("source_attack", "source_eps", "n_runs", "n_seeds")
                    if column in summary.columns]
    ordered = first + [column for column in summary.columns if column not in first]
    return summary[ordered].sort_values(keys).reset_index(drop=True)


# ----------------------------------------------------------------------------- differences


def paired_differences(table: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Source-minus-baseline test accuracy per cell, paired by seed.

    Pairing by seed removes the seed-to-seed variation the two runs share (same
    data subset and head initialization), which is what makes the interval honest
    and usually narrower than an unpaired one. Seeds that only one of the two
    sources has are excluded (counted in ``n_unpaired_seeds``, with a DataWarning).
    Replicates of one seed are averaged first.

    Args:
      table: validated results.
      baseline: the baseline source name (see ``resolve_baseline``).

    Returns:
      One row per (cell, non-baseline source): ``baseline``, ``n_pairs``,
      ``n_unpaired_seeds``, ``baseline_mean`` and ``source_mean`` over the paired
      seeds, ``difference_mean/_sd/_ci_half/_ci_low/_ci_high``, and the t-test's
      ``difference_df``, ``difference_p`` and Holm's ``difference_p_holm`` (``add_t_tests``).
    """
    keys = pair_keys(table)
    per_seed = _mean_per_seed(table, keys)
    base = (per_seed.loc[per_seed["source"] == baseline].drop(columns="source")
            .rename(columns={"test_accuracy": "baseline_accuracy"}))
    rows = [_pair_one_source(rows, base, keys)
            for _, rows in per_seed.loc[per_seed["source"] != baseline].groupby("source")]
    columns = keys[:1] + ["source"] + keys[1:] + ["baseline", "n_pairs", "n_unpaired_seeds",
                                                   "baseline_mean", "source_mean"]
    if not rows:
        return pd.DataFrame(columns=columns + [column for column in interval_columns(
            "difference") if column != "difference_n"]
            + ["difference_df", "difference_p", "difference_p_holm"])
    pairs = pd.concat(rows, ignore_index=True)
    pairs["baseline"] = baseline
    _warn_about_pairing(pairs)
    _warn_about_commits(table, keys, baseline)
    # One family for Holm's correction: every (cell, source) difference of this report.
    pairs = add_t_tests(pairs.loc[pairs["n_pairs"] > 0], "difference").drop(columns="difference_n")
    info = source_info(table)
    pairs = info.merge(pairs, on="source")
    columns = columns[:len(keys) + 1] + list(info.columns[1:]) + columns[len(keys) + 1:]
    ordered = columns + [column for column in pairs.columns if column not in columns]
    return pairs[ordered].sort_values(keys[:1] + ["source"] + keys[1:]).reset_index(drop=True)


def interval_columns(prefix: str) -> list[str]:
    """The columns ``interval_table`` writes for ``prefix`` (mean, sd, n and the interval)."""
    return [f"{prefix}_{name}" for name in ("mean", "sd", "n", "ci_half", "ci_low", "ci_high")]


def _mean_per_seed(table: pd.DataFrame, keys) -> pd.DataFrame:
    group = list(keys) + ["source", "seed"]
    counts = table.groupby(group).size()
    if (counts > 1).any():
        warnings.warn(f"{int((counts > 1).sum())} (cell, source, seed) combination(s) have "
                      "several runs; they are averaged before pairing.", DataWarning,
                      stacklevel=3)
    return table.groupby(group, as_index=False)["test_accuracy"].mean()


def _pair_one_source(rows: pd.DataFrame, base: pd.DataFrame, keys) -> pd.DataFrame:
    source = rows["source"].iloc[0]
    rows = rows.drop(columns="source")
    # Only the cells this source was run in; baseline-only cells are not its business.
    base = base.merge(rows[keys].drop_duplicates(), on=keys)
    merged = rows.merge(base, on=list(keys) + ["seed"], how="outer", indicator=True)
    merged["difference"] = merged["test_accuracy"] - merged["baseline_accuracy"]
    paired = merged.loc[merged["_merge"] == "both"]
    result = interval_table(paired, keys, "difference", "difference")
    means = paired.groupby(keys, as_index=False).agg(
        baseline_mean=("baseline_accuracy", "mean"), source_mean=("test_accuracy", "mean"))
    unpaired = (merged.assign(unpaired=merged["_merge"] != "both")
                .groupby(keys, as_index=False)["unpaired"].sum()
                .rename(columns={"unpaired": "n_unpaired_seeds"}))
    result = unpaired.merge(means, on=keys, how="left").merge(result, on=keys, how="left")
    result["n_pairs"] = result["difference_n"].fillna(0).astype("int64")
    result["source"] = source
    return result


def _warn_about_pairing(pairs: pd.DataFrame) -> None:
    unpaired = int(pairs["n_unpaired_seeds"].sum())
    if unpaired:
        warnings.warn(f"{unpaired} run(s) had no run of the same seed in the other source "
                      "and were left out of the paired differences.", DataWarning, stacklevel=3)
    empty = int((pairs["n_pairs"] == 0).sum())
    if empty:
        warnings.warn(f"{empty} (cell, source) combination(s) share no seed with the baseline "
                      "and have no difference.", DataWarning, stacklevel=3)


def mixed_commit_pairs(table: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """The seed pairs whose two runs were not produced by one committed code state.

    A paired difference assumes the two runs differ only in their source: same subset,
    head draw and batch order. Runs at different commits (or from uncommitted code,
    ``+dirty``) may also differ in the code, which the pairing cannot see.

    Returns:
      One row per pair (the pair keys, ``source``, ``seed``, ``source_commit``,
      ``baseline_commit``) where the commits differ or either is ``+dirty``; empty when
      the table has no ``git_commit`` column.
    """
    keys = pair_keys(table)
    columns = keys + ["source", "seed", "source_commit", "baseline_commit"]
    if "git_commit" not in table.columns:
        return pd.DataFrame(columns=columns)
    commits = (table.assign(git_commit=table["git_commit"].astype(str))
               .groupby(keys + ["source", "seed"], as_index=False)["git_commit"]
               .agg(lambda values: "|".join(sorted(set(values)))))
    base = (commits.loc[commits["source"] == baseline].drop(columns="source")
            .rename(columns={"git_commit": "baseline_commit"}))
    pairs = (commits.loc[commits["source"] != baseline]
             .rename(columns={"git_commit": "source_commit"})
             .merge(base, on=keys + ["seed"]))
    mixed = ((pairs["source_commit"] != pairs["baseline_commit"])
             | pairs["source_commit"].str.contains(r"\+dirty|\|")
             | pairs["baseline_commit"].str.contains(r"\+dirty|\|"))
    return pairs.loc[mixed, columns].reset_index(drop=True)


def _warn_about_commits(table: pd.DataFrame, keys, baseline: str) -> None:
    mixed = mixed_commit_pairs(table, baseline)
    if mixed.empty:
        return
    dirty = (mixed["source_commit"] + mixed["baseline_commit"]).str.contains(r"\+dirty")
    first = mixed.iloc[0]
    example = ", ".join(f"{key} {first[key]}" for key in keys + ["source", "seed"])
    warnings.warn(f"{len(mixed)} seed pair(s) were not run at one clean commit "
                  f"({int(dirty.sum())} include a run from uncommitted code (+dirty)), so their "
                  f"difference may include a code change; e.g. {example}: "
                  f"{first['source_commit']} vs {first['baseline_commit']}.",
                  DataWarning, stacklevel=3)


# ----------------------------------------------------------------------------- trend


def difference_trend(differences: pd.DataFrame) -> pd.DataFrame:
    """Does the source-minus-baseline difference shrink as N grows?

    Per (target, source, ``curve_keys``): the least-squares slope of the mean
    paired difference on log2 N, i.e. the change of the difference per doubling of the
    training images, with a 95% t-interval from the scatter of the cells about the line
    (k - 2 degrees of freedom for k training-set sizes; NaN below 3 sizes). The interval
    ignores each cell's own uncertainty beyond that scatter: read it with the per-cell
    intervals beside it.

    Returns:
      One row per group: ``n_sizes``, ``smallest_n``, ``largest_n``, the differences at
      those two sizes, and ``slope_per_doubling`` with ``slope_ci_half/_low/_high`` and
      its degrees of freedom ``slope_df`` (k - 2).
    """
    keys = ["target", "source"] + curve_keys(differences)
    rows = [_trend_row(dict(zip(keys, group if isinstance(group, tuple) else (group,))), cells)
            for group, cells in differences.groupby(keys, sort=True)] if len(differences) else []
    columns = keys + ["n_sizes", "smallest_n", "largest_n", "difference_at_smallest_n",
                      "difference_at_largest_n", "slope_per_doubling", "slope_ci_half",
                      "slope_ci_low", "slope_ci_high", "slope_df"]
    return pd.DataFrame(rows, columns=columns)


def _trend_row(group: dict, cells: pd.DataFrame) -> dict:
    cells = cells.sort_values("train_images")
    x = np.log2(cells["train_images"].to_numpy(dtype=float))
    y = cells["difference_mean"].to_numpy(dtype=float)
    slope, half = np.nan, np.nan
    if len(cells) >= 2:
        fit = scipy_stats.linregress(x, y)  # its stderr is the slope's, on k - 2 dof
        slope = fit.slope
        if len(cells) >= 3:
            half = scipy_stats.t.ppf(0.5 + CONFIDENCE / 2, len(cells) - 2) * fit.stderr
    return {**group, "n_sizes": len(cells), "smallest_n": int(cells["train_images"].iloc[0]),
            "largest_n": int(cells["train_images"].iloc[-1]),
            "difference_at_smallest_n": y[0], "difference_at_largest_n": y[-1],
            "slope_per_doubling": slope, "slope_ci_half": half,
            "slope_ci_low": slope - half, "slope_ci_high": slope + half,
            "slope_df": len(cells) - 2 if len(cells) >= 3 else np.nan}


# ----------------------------------------------------------------------------- epochs


def epoch_curves(table: pd.DataFrame) -> pd.DataFrame:
    """Mean test accuracy and 95% interval per cell and evaluated epoch.

    Returns:
      Long table: cell keys, ``epoch`` (1-based) and ``accuracy_mean/_sd/_n/_ci_*``;
      empty (with those columns) when the table has no per-epoch columns.
    """
    keys = cell_keys(table)
    columns = epoch_columns(table)
    if not columns:
        return pd.DataFrame(columns=keys + ["epoch"] + interval_columns("accuracy"))
    long = table.melt(id_vars=keys + ["seed"], value_vars=columns, var_name="column",
                      value_name="accuracy").dropna(subset=["accuracy"])
    long["epoch"] = long["column"].str.extract(EPOCH_COLUMN.pattern, expand=False).astype(int)
    return interval_table(long, keys + ["epoch"], "accuracy", "accuracy")
