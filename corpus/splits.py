"""Seeded stratified train/val/test split (used when users.csv has no ``split`` column)."""

from __future__ import annotations

import numpy as np

DEFAULT_FRACTIONS = (0.6, 0.2, 0.2)


def stratified_split(labels: np.ndarray, seed: int = 0, fractions=DEFAULT_FRACTIONS) -> np.ndarray:
    """Split users per stratum (label; unlabelled users, ``-1``, form their own stratum).

    Within a stratum of ``n`` users the val and test shares are ``round(n * f)``, raised to 1 when
    ``n >= 3`` so every class with 3+ users appears in each split; train takes the rest.
    The result depends only on ``labels`` (in order) and ``seed``.

    Args:
        labels: int64 [N], ``-1`` = unlabelled.
        seed: seed of the permutation inside each stratum.
        fractions: (train, val, test), summing to 1.

    Returns:
        int8 [N]: 0 train, 1 val, 2 test.
    """
    if len(fractions) != 3 or abs(sum(fractions) - 1.0) > 1e-9 or min(fractions) < 0:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")
    labels = np.asarray(labels, dtype=np.int64)
    splits = np.zeros(labels.shape[0], dtype=np.int8)
    rng = np.random.default_rng(seed)
    for stratum in np.unique(labels):  # sorted, so the rng is consumed in a fixed order
        members = np.flatnonzero(labels == stratum)
        n = members.size
        n_val = int(round(n * fractions[1]))
        n_test = int(round(n * fractions[2]))
        if n >= 3:
            n_val = max(n_val, 1) if fractions[1] > 0 else 0
            n_test = max(n_test, 1) if fractions[2] > 0 else 0
        n_val = min(n_val, n)
        n_test = min(n_test, n - n_val)
        perm = members[rng.permutation(n)]
        splits[perm[n - n_val - n_test : n - n_test]] = 1
        splits[perm[n - n_test :]] = 2
    return splits
