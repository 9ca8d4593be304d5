"""Fans bucket accuracy: the one downstream metric scikit-learn and SciPy lack, built on them.

Everything else is called directly: ``sklearn.metrics.accuracy_score``, ``f1_score(average="macro",
zero_division=0.0)`` (the mean over the classes present in ``y_true`` or ``y_pred``; a class never predicted
counts as F1 = 0), ``mean_absolute_error``, ``roc_auc_score`` and ``scipy.stats.spearmanr`` (average ranks for
ties, ``nan`` for constant input).
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score


def quantile_edges(train_values: np.ndarray, num_buckets: int) -> np.ndarray:
    """Inner bucket edges ``[num_buckets - 1]`` at the train quantiles 1/B, ..., (B-1)/B. ``train_values``: ``[N]``."""
    if num_buckets < 2:
        raise ValueError(f"num_buckets must be >= 2, got {num_buckets}")
    train_values = np.asarray(train_values, dtype=np.float64)
    if train_values.ndim != 1:
        raise ValueError(f"train_values must be 1-D, got shape {train_values.shape}")
    return np.quantile(train_values, np.arange(1, num_buckets) / num_buckets)


def bucketize(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bucket index ``[N]`` in ``0..len(edges)`` of each value; a value equal to an edge goes to the upper bucket."""
    return np.digitize(np.asarray(values), np.asarray(edges), right=False)


def bucket_accuracy(y_true: np.ndarray, y_pred: np.ndarray, edges: np.ndarray) -> float:
    """Accuracy of the predicted quantile bucket against the true one. ``y_true, y_pred``: ``[N]``."""
    return float(accuracy_score(bucketize(y_true, edges), bucketize(y_pred, edges)))
