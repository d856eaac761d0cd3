"""Ranking training images by influence, and the paper's label match rates (Figure 6).

Sign convention as in ``interpret.influence.math``: I < 0 is helpful, so "most influential" ranks by
``-I`` (``rank='absolute'``: by ``|I|``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tftransfer.config import INFLUENCE_RANKINGS as RANKINGS
from tftransfer.errors import UserError


def ranking_scores(influence: np.ndarray, rank: str = "helpful") -> np.ndarray:
    """Scores whose descending order is "most influential first" (see the module doc)."""
    if rank == "helpful":
        return -influence
    if rank == "absolute":
        return np.abs(influence)
    raise UserError(f"Unknown ranking {rank!r}; use one of {', '.join(RANKINGS)}.")


def top_influential(scores: np.ndarray, k: int, exclude_self: bool = False) -> np.ndarray:
    """Indices of the ``k`` highest-scoring training images per row (ties: lower index).

    With ``exclude_self`` (square scores, row i = training image i) an image never
    ranks itself.
    """
    scores = np.array(scores, dtype=np.float64)
    if exclude_self:
        np.fill_diagonal(scores, -np.inf)
    k = min(k, scores.shape[1] - int(exclude_self))
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def match_rates(scores: np.ndarray, train_labels, target_labels, top_k: int,
                exclude_self: bool = False) -> pd.DataFrame:
    """The paper's Figure 6: for k = 1..top_k, the share of targets whose k-th most
    influential training image has the target's label.

    Returns:
      A frame with columns k, match_rate (at rank k) and cumulative_match_rate (share
      of matches among ranks 1..k), n_targets.
    """
    order = top_influential(scores, top_k, exclude_self)
    matches = np.asarray(train_labels)[order] == np.asarray(target_labels)[:, None]
    at_k = matches.mean(axis=0)
    ks = np.arange(1, order.shape[1] + 1)
    return pd.DataFrame({"k": ks, "match_rate": at_k,
                         "cumulative_match_rate": np.cumsum(at_k) / ks,
                         "n_targets": len(order)})


def chance_match_rate(train_labels, target_labels) -> float:
    """Expected match rate of a random ranking: sum over classes of the two shares."""
    train_labels, target_labels = np.asarray(train_labels), np.asarray(target_labels)
    classes = np.union1d(train_labels, target_labels)
    return float(sum(np.mean(train_labels == c) * np.mean(target_labels == c) for c in classes))
