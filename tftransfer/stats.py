"""Results tables -> means, 95% intervals, paired differences, data efficiency, summary tables.

Pure pandas/scipy functions over the sweep's results table (one row per finished
fine-tuning run); no TensorFlow. The pipeline used by ``report`` is::

    table = read_results(results_dir)
    baseline = resolve_baseline(table, name_or_none)
    summary = summarize(table)                   # mean and CI per cell
    differences = paired_differences(table, baseline)
    efficiency = data_efficiency(summary, baseline)
    curves = epoch_curves(table)
    speedup = epochs_speedup(table, baseline)

Data-quality problems that do not stop the report (duplicate run keys, unpaired
seeds, rows without an accuracy) are raised as ``DataWarning`` so callers can show
them and keep them in the report.
"""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from tftransfer.errors import UserError

CONFIDENCE = 0.95
RESULTS_GLOB = "results*.csv"
NATURAL_ATTACK = "none"
REQUIRED_COLUMNS = ("run_key", "source", "source_attack", "target", "train_images",
                    "unfrozen_blocks", "seed", "test_accuracy")
INTEGER_COLUMNS = ("train_images", "unfrozen_blocks", "epochs", "seed")
FLOAT_COLUMNS = ("source_eps", "test_accuracy", "test_loss", "train_seconds")
EPOCH_COLUMN = re.compile(r"^test_accuracy_epoch_(\d+)$")
# Tolerance for "reaches the accuracy": means of identical numbers can differ in the last bit.
_REACH_TOL = 1e-9


class DataWarning(UserWarning):
    """A problem in the results that the report works around and mentions."""


# ----------------------------------------------------------------------------- reading


def find_result_files(results_dir) -> list[Path]:
    """The ``results*.csv`` files (shards included) in ``results_dir``, in natural order.

    Raises:
      UserError: when the directory does not exist or holds no results file.
    """
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise UserError(f"results directory {str(results_dir)!r} does not exist; "
                        f"pass the directory the sweep wrote its {RESULTS_GLOB} files to.")
    files = sorted(results_dir.glob(RESULTS_GLOB), key=_natural_key)
    if not files:
        raise UserError(f"no {RESULTS_GLOB} files in {str(results_dir)!r}; "
                        "pass the directory the sweep wrote its results to.")
    return files


def _natural_key(path: Path):
    # "shard-10" must sort after "shard-2" so the kept duplicate does not depend on digit count.
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def read_results(results_dir) -> pd.DataFrame:
    """Reads, merges and validates every results file in ``results_dir``.

    Args:
      results_dir: the sweep's output directory.

    Returns:
      One row per unique ``run_key``, with typed columns (see ``validate_results``).

    Raises:
      UserError: no files, unreadable files, no rows or missing/invalid columns.
    """
    files = find_result_files(results_dir)
    frames = [_read_csv(path) for path in files]
    frames = [frame for frame in frames if frame is not None]
    if not frames or all(frame.empty for frame in frames):
        names = ", ".join(path.name for path in files)
        raise UserError(f"the results files in {str(results_dir)!r} ({names}) hold no runs yet.")
    return validate_results(merge_shards(frames), source=str(results_dir))


def _read_csv(path: Path) -> pd.DataFrame | None:
    try:
        # Everything as text first: "None"/"NA" may be real names, and numbers are checked below.
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        warnings.warn(f"{path.name} is empty and was skipped.", DataWarning, stacklevel=3)
        return None
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise UserError(f"{str(path)!r} is not a readable CSV file ({error}).") from error


def merge_shards(frames) -> pd.DataFrame:
    """Concatenates result shards, keeping the first row of each ``run_key``.

    A run can appear twice when a shard was re-run or files were copied together;
    counting it twice would shrink the confidence intervals, so duplicates are dropped
    with a ``DataWarning`` (which says when the duplicates disagree).

    Args:
      frames: DataFrames in the order of precedence (earlier wins).

    Returns:
      The merged DataFrame with a fresh index.
    """
    table = pd.concat(list(frames), ignore_index=True, sort=False)
    if "run_key" not in table.columns:
        return table
    duplicated = table["run_key"].duplicated(keep="first")
    if duplicated.any():
        keys = table.loc[duplicated, "run_key"].unique()
        conflicting = [key for key in keys
                       if len(table.loc[table["run_key"] == key].drop_duplicates()) > 1]
        message = (f"{int(duplicated.sum())} duplicate row(s) of {len(keys)} run key(s) "
                   f"were dropped (the first occurrence is kept)")
        if conflicting:
            message += (f"; {len(conflicting)} of them had differing values, e.g. "
                        f"{', '.join(map(repr, conflicting[:3]))}")
        warnings.warn(message + ".", DataWarning, stacklevel=2)
        table = table.loc[~duplicated]
    return table.reset_index(drop=True)


def validate_results(table: pd.DataFrame, source: str = "the results") -> pd.DataFrame:
    """Checks the required columns and converts columns to their types.

    Args:
      table: merged results, possibly all-text.
      source: where the table came from, for error messages.

    Returns:
      A copy with integer/float columns converted, ``source_attack`` lower-cased and
      rows without a test accuracy removed (with a ``DataWarning``).

    Raises:
      UserError: a required column is missing, a value is not a number, an accuracy
        is outside [0, 1], or one source name has several attack settings.
    """
    missing = [column for column in REQUIRED_COLUMNS if column not in table.columns]
    if missing:
        raise UserError(f"{source} is missing column(s) {', '.join(missing)}; "
                        f"the report needs {', '.join(REQUIRED_COLUMNS)}.")
    table = table.copy()
    for column in ("run_key", "source", "target"):
        table[column] = table[column].astype(str).str.strip()
    table["source_attack"] = table["source_attack"].astype(str).str.strip().str.lower()
    for column in INTEGER_COLUMNS:
        if column in table.columns:
            table[column] = _to_integer(table, column, source)
    for column in list(FLOAT_COLUMNS) + epoch_columns(table):
        if column in table.columns:
            table[column] = pd.to_numeric(table[column], errors="coerce").astype(float)
    table = _drop_rows_without_accuracy(table)
    _check_fraction(table, source)
    _check_one_attack_per_source(table, source)
    return table.reset_index(drop=True)


def _to_integer(table: pd.DataFrame, column: str, source: str) -> pd.Series:
    values = pd.to_numeric(table[column], errors="coerce")
    bad = values.isna() | (values != values.round())
    if bad.any():
        row = table.loc[bad].iloc[0]
        raise UserError(f"{source}: column {column!r} must hold integers; found "
                        f"{row[column]!r} (run_key {row['run_key']!r}).")
    return values.astype("int64")


def _drop_rows_without_accuracy(table: pd.DataFrame) -> pd.DataFrame:
    missing = table["test_accuracy"].isna()
    if missing.any():
        keys = ", ".join(map(repr, table.loc[missing, "run_key"].head(3)))
        warnings.warn(f"{int(missing.sum())} row(s) without a numeric test_accuracy were "
                      f"ignored, e.g. {keys}.", DataWarning, stacklevel=3)
    return table.loc[~missing]


def _check_fraction(table: pd.DataFrame, source: str) -> None:
    columns = ["test_accuracy"] + epoch_columns(table)
    for column in columns:
        outside = (table[column] < 0) | (table[column] > 1)
        if outside.any():
            row = table.loc[outside].iloc[0]
            raise UserError(f"{source}: {column} must be a fraction in [0, 1]; found "
                            f"{row[column]!r} (run_key {row['run_key']!r}).")


def _check_one_attack_per_source(table: pd.DataFrame, source: str) -> None:
    columns = ["source_attack"] + (["source_eps"] if "source_eps" in table.columns else [])
    settings = table.drop_duplicates(["source"] + columns)
    repeated = settings["source"].duplicated(keep=False)
    if repeated.any():
        name = settings.loc[repeated, "source"].iloc[0]
        found = settings.loc[settings["source"] == name, columns].to_dict("records")
        raise UserError(f"{source}: source {name!r} appears with different attack settings "
                        f"{found}; give each source model its own name.")


def epoch_columns(table: pd.DataFrame) -> list[str]:
    """The ``test_accuracy_epoch_<k>`` columns of ``table``, ordered by epoch."""
    found = [(int(match.group(1)), column) for column in table.columns
             if (match := EPOCH_COLUMN.match(column))]
    return [column for _, column in sorted(found)]


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
    return _epochs_per_cell(frame, cell) is None


def _epochs_per_cell(frame: pd.DataFrame, keys) -> dict | None:
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
      seeds, and ``difference_mean/_sd/_ci_half/_ci_low/_ci_high``.
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
        return pd.DataFrame(columns=columns + [column for column in _interval_columns(
            "difference") if column != "difference_n"])
    pairs = pd.concat(rows, ignore_index=True)
    pairs["baseline"] = baseline
    _warn_about_pairing(pairs)
    pairs = pairs.loc[pairs["n_pairs"] > 0].drop(columns="difference_n")
    info = source_info(table)
    pairs = info.merge(pairs, on="source")
    columns = columns[:len(keys) + 1] + list(info.columns[1:]) + columns[len(keys) + 1:]
    ordered = columns + [column for column in pairs.columns if column not in columns]
    return pairs[ordered].sort_values(keys[:1] + ["source"] + keys[1:]).reset_index(drop=True)


def _interval_columns(prefix: str) -> list[str]:
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
      those two sizes, and ``slope_per_doubling`` with ``slope_ci_half/_low/_high``.
    """
    keys = ["target", "source"] + curve_keys(differences)
    rows = [_trend_row(dict(zip(keys, group if isinstance(group, tuple) else (group,))), cells)
            for group, cells in differences.groupby(keys, sort=True)] if len(differences) else []
    columns = keys + ["n_sizes", "smallest_n", "largest_n", "difference_at_smallest_n",
                      "difference_at_largest_n", "slope_per_doubling", "slope_ci_half",
                      "slope_ci_low", "slope_ci_high"]
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
            "slope_ci_low": slope - half, "slope_ci_high": slope + half}


def trend_table_markdown(trend: pd.DataFrame) -> str:
    """One markdown table of ``difference_trend``, in percentage points."""
    if trend.empty:
        return "_Nothing to compare: no source beside the baseline._"

    def points(value):
        return "n/a" if pd.isna(value) else f"{100 * value:+.1f}"
    lines = ["| target | source | unfrozen blocks | difference at smallest N | at largest N "
             "| change per doubling of N (95% CI) |", "|---|---|---:|---:|---:|---:|"]
    for row in trend.itertuples():
        slope = points(row.slope_per_doubling)
        if not pd.isna(row.slope_ci_half):
            slope += (f" ({points(row.slope_ci_low)} to {points(row.slope_ci_high)})")
        lines.append(f"| {row.target} | {row.source} | {row.unfrozen_blocks} "
                     f"| {points(row.difference_at_smallest_n)} (N = {row.smallest_n}) "
                     f"| {points(row.difference_at_largest_n)} (N = {row.largest_n}) | {slope} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- efficiency


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
        return pd.DataFrame(columns=keys + ["epoch"] + _interval_columns("accuracy"))
    long = table.melt(id_vars=keys + ["seed"], value_vars=columns, var_name="column",
                      value_name="accuracy").dropna(subset=["accuracy"])
    long["epoch"] = long["column"].str.extract(EPOCH_COLUMN.pattern, expand=False).astype(int)
    return interval_table(long, keys + ["epoch"], "accuracy", "accuracy")


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


# ----------------------------------------------------------------------------- markdown


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
    per_n = _epochs_per_cell(rows, "train_images")
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
