"""Downstream metrics in numpy: topic accuracy and macro-F1, fans MAE, Spearman and bucket accuracy.

Conventions follow scikit-learn and SciPy (the tests compare against ``sklearn.metrics.f1_score`` and
``scipy.stats.spearmanr``): macro-F1 averages over the classes present in ``y_true`` or ``y_pred``, a class
never predicted contributes F1 = 0; Spearman uses average ranks for ties and is ``nan`` for constant input.
"""

from __future__ import annotations

import numpy as np


def _as_1d(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {x.shape}")
    return x


def _same_length(a: np.ndarray, b: np.ndarray) -> None:
    if len(a) != len(b):
        raise ValueError(f"length mismatch: {len(a)} vs {len(b)}")
    if len(a) == 0:
        raise ValueError("metrics need at least one sample")


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Fraction of exact matches. ``y_true, y_pred``: ``[N]`` integer labels."""
    y_true, y_pred = _as_1d(y_true, "y_true"), _as_1d(y_pred, "y_pred")
    _same_length(y_true, y_pred)
    return float(np.mean(y_true == y_pred))


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Unweighted mean of per-class F1 over the classes present in ``y_true`` or ``y_pred``. ``[N]`` each."""
    y_true, y_pred = _as_1d(y_true, "y_true"), _as_1d(y_pred, "y_pred")
    _same_length(y_true, y_pred)
    classes = np.union1d(y_true, y_pred)
    scores = []
    for c in classes:
        tp = np.sum((y_pred == c) & (y_true == c))
        fp = np.sum((y_pred == c) & (y_true != c))
        fn = np.sum((y_pred != c) & (y_true == c))
        denom = 2 * tp + fp + fn
        scores.append(2 * tp / denom if denom > 0 else 0.0)
    return float(np.mean(scores))


def mae(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean absolute error. ``[N]`` each."""
    y_true, y_pred = _as_1d(y_true, "y_true").astype(np.float64), _as_1d(y_pred, "y_pred").astype(np.float64)
    _same_length(y_true, y_pred)
    return float(np.mean(np.abs(y_true - y_pred)))


def rankdata_average(x: np.ndarray) -> np.ndarray:
    """Ranks 1..N with ties given their average rank (``scipy.stats.rankdata(method="average")``)."""
    x = _as_1d(x, "x")
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    # start index of each run of equal values
    new_run = np.r_[True, sorted_x[1:] != sorted_x[:-1]]
    run_id = np.cumsum(new_run) - 1
    starts = np.flatnonzero(new_run)
    ends = np.r_[starts[1:], len(x)]
    avg_rank = (starts + ends + 1) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = avg_rank[run_id]
    return ranks


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation: Pearson correlation of average ranks. ``nan`` if either input is constant."""
    x, y = _as_1d(x, "x"), _as_1d(y, "y")
    _same_length(x, y)
    rx, ry = rankdata_average(x), rankdata_average(y)
    rx -= rx.mean()
    ry -= ry.mean()
    denom = np.sqrt(np.sum(rx * rx) * np.sum(ry * ry))
    if denom == 0:
        return float("nan")
    return float(np.sum(rx * ry) / denom)


def quantile_edges(train_values: np.ndarray, num_buckets: int) -> np.ndarray:
    """Inner bucket edges ``[num_buckets - 1]`` at the train quantiles 1/B, ..., (B-1)/B."""
    if num_buckets < 2:
        raise ValueError(f"num_buckets must be >= 2, got {num_buckets}")
    train_values = _as_1d(train_values, "train_values").astype(np.float64)
    return np.quantile(train_values, np.arange(1, num_buckets) / num_buckets)


def bucketize(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bucket index in ``0..len(edges)`` of each value; a value equal to an edge goes to the upper bucket."""
    return np.searchsorted(np.asarray(edges), _as_1d(values, "values"), side="right")


def bucket_accuracy(y_true: np.ndarray, y_pred: np.ndarray, edges: np.ndarray) -> float:
    """Accuracy of the predicted quantile bucket against the true one."""
    return accuracy(bucketize(y_true, edges), bucketize(y_pred, edges))


def roc_auc(positive: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties): the probability that a random
    positive scores above a random negative. ``positive``: bool ``[N]``; ``scores``: ``[N]``. ``nan`` when one
    class is empty."""
    positive = _as_1d(positive, "positive").astype(bool)
    scores = _as_1d(scores, "scores")
    _same_length(positive, scores)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata_average(scores.astype(np.float64))
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
