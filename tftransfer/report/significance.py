"""Significance over many cells: t-test p-values and Holm's correction for a family of
intervals (a report's paired differences, or the why-no-gain causes)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

__all__ = ["add_t_tests", "holm"]


def add_t_tests(table: pd.DataFrame, prefix: str) -> pd.DataFrame:
    """Adds ``<prefix>_df``, the two-sided one-sample t-test p of mean 0 (``<prefix>_p``)
    and Holm's adjusted p across all the table's rows (``<prefix>_p_holm``).

    ``table`` is an ``interval_table`` output. The rows are one family: with k rows tested
    at 5%, about 0.05 k would be "clear of zero" by chance when no difference is real;
    Holm's p controls the chance of any false one. Rows with fewer than 2 values get NaN.
    """
    table = table.copy()
    n, sd, mean = table[f"{prefix}_n"], table[f"{prefix}_sd"], table[f"{prefix}_mean"]
    table[f"{prefix}_df"] = (n - 1).where(n >= 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = pd.Series(2 * scipy_stats.t.sf(np.abs(mean / (sd / np.sqrt(n))), n - 1),
                      table.index, dtype=float)
    table[f"{prefix}_p"] = p.where(n >= 2)
    table[f"{prefix}_p_holm"] = holm(table[f"{prefix}_p"])
    return table


def holm(p) -> np.ndarray:
    """Holm's step-down adjusted p-values; NaN (no test) stays NaN and is not in the family."""
    p = np.asarray(p, dtype=float)
    adjusted = np.full_like(p, np.nan)
    tested = np.flatnonzero(~np.isnan(p))
    running = 0.0
    for rank, index in enumerate(tested[np.argsort(p[tested], kind="stable")]):
        running = max(running, min(1.0, (len(tested) - rank) * p[index]))
        adjusted[index] = running
    return adjusted
