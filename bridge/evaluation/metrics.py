"""The scores of each downstream task, from scikit-learn and SciPy, and fans bucket accuracy, the one metric
they lack (built on them).

``task_scores`` and ``selection_score`` are the one place that says which metric each task reports and selects
on, for the linear/MLP heads (``bridge.evaluate``) and the GCN peer (``bridge.peers``) alike:
``sklearn.metrics.accuracy_score``, ``f1_score(average="macro", zero_division=0.0)`` (the mean over the classes
present in ``y_true`` or ``y_pred``; a class never predicted counts as F1 = 0), ``mean_absolute_error`` and
``scipy.stats.spearmanr`` (average ranks for ties, ``nan`` for constant input).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    mean_absolute_error,
    precision_recall_fscore_support,
)


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


def selection_score(task: str, y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """What model selection on the validation split minimises: minus the macro-F1 (``task="topic"``), or the MAE
    (``"fans"``). ``y_true, y_pred``: ``[N]``."""
    if task == "topic":
        return -f1_score(y_true, y_pred, average="macro", zero_division=0.0)
    return mean_absolute_error(y_true, y_pred)


def task_scores(
    task: str, y_true: np.ndarray, y_pred: np.ndarray, edges: np.ndarray | None = None
) -> dict[str, float]:
    """The test scores a task reports: topic accuracy and macro-F1; fans MAE, Spearman and bucket accuracy
    (``edges``, fans only: the train quantile edges of ``quantile_edges``). ``y_true, y_pred``: ``[N]``."""
    if task == "topic":
        return {
            "accuracy": accuracy_score(y_true, y_pred),
            "macro_f1": f1_score(y_true, y_pred, average="macro", zero_division=0.0),
        }
    return {
        "mae": mean_absolute_error(y_true, y_pred),
        "spearman": spearmanr(y_true, y_pred).statistic,
        "bucket_accuracy": bucket_accuracy(y_true, y_pred, edges),
    }


def per_class(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-class F1 ``[C]`` (0 for a class never predicted nor present) and the confusion matrix ``[C, C]`` (rows:
    true class, columns: predicted), from scikit-learn."""
    labels = list(range(num_classes))
    _, _, f1, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0.0)
    return np.asarray(f1, dtype=np.float64), confusion_matrix(y_true, y_pred, labels=labels)
