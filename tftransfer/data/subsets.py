"""Which examples: the seeded, stratified, nested training subsets (the paper's N), hold-outs
and validation splits."""

from __future__ import annotations

import numpy as np

from tftransfer.errors import UserError


def select_subset(labels: np.ndarray, n: int | None, seed: int,
                  what: str = "--train-images", method: str = "stratified") -> np.ndarray:
    """Indices of ``n`` examples: seeded, stratified, nested, every class at least once.

    ``method='random'`` draws them uniformly instead, exactly as the robustness library's
    ``make_loaders(subset=n, subset_seed=seed)`` (``subset_type='rand'``) that the paper's
    code used: ``np.random.RandomState(seed).choice(len(labels), n, replace=False)``; a
    class may then be missing, and the subset for N is not nested in the one for 2N.

    The examples are put in one seeded order and the first ``n`` are taken, so the
    subset for N is contained in the subset for 2N with the same seed. The order
    starts with one example of each class and then interleaves the classes in
    proportion to their sizes (stratified quantiles).

    Args:
      labels: integer labels of the whole split.
      n: number of examples in total (None: all of them, in the seeded order).
      seed: the seed of the order.
      what: the option ``n`` came from, for error messages.

    Returns:
      int64 indices into ``labels``.
    """
    labels = np.asarray(labels)
    if method == "random":
        return random_subset(len(labels), n, seed, what)
    classes = np.unique(labels)
    if n is not None:
        if n < len(classes):
            raise UserError(f"{what} {n} is fewer than the {len(classes)} classes; "
                            f"use at least {len(classes)} so every class has an image.")
        if n > len(labels):
            raise UserError(f"{what} {n} is more than the {len(labels)} images available.")
    return nested_order(labels, seed)[:n]


def random_subset(count: int, n: int | None, seed: int, what: str = "--train-images"
                  ) -> np.ndarray:
    """``n`` of ``range(count)`` drawn uniformly without replacement with numpy's legacy
    ``RandomState(seed)`` (robustness' ``make_loaders``; None: all, in that seeded order)."""
    if n is not None and n > count:
        raise UserError(f"{what} {n} is more than the {count} images available.")
    return np.random.RandomState(seed).choice(count, size=n or count,
                                              replace=False).astype(np.int64)


def nested_order(labels: np.ndarray, seed: int) -> np.ndarray:
    """The seeded, stratified order behind ``select_subset``."""
    rng = np.random.default_rng(seed)
    keys = np.empty(len(labels))
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        members = members[rng.permutation(len(members))]
        # Rank j of n_c sits at quantile (j + 0.5) / n_c; the first of each class goes first.
        keys[members] = (np.arange(len(members)) + 0.5) / len(members)
        keys[members[0]] = -1.0
    tie_break = rng.random(len(labels))
    return np.lexsort((tie_break, keys)).astype(np.int64)


def stratified_holdout(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Seeded indices of a stratified ``fraction`` of each class (at least one per class
    that has two or more examples)."""
    rng = np.random.default_rng(seed)
    held = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        if len(members) < 2:
            continue
        k = min(len(members) - 1, max(1, int(round(fraction * len(members)))))
        held.extend(rng.choice(members, size=k, replace=False))
    return np.sort(np.asarray(held, dtype=np.int64))


def split_validation(labels: np.ndarray, indices: np.ndarray, fraction: float,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Splits training ``indices`` into (fit, validation) parts, stratified and seeded.

    The validation part comes from the training images only, never the test split.
    """
    if not 0.0 < fraction < 1.0:
        raise UserError(f"The validation fraction must be between 0 and 1, got {fraction}.")
    indices = np.asarray(indices)
    held = stratified_holdout(labels[indices], fraction, seed)
    mask = np.zeros(len(indices), bool)
    mask[held] = True
    return indices[~mask], indices[mask]
