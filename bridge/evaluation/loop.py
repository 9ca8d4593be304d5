"""The one evaluation skeleton every row goes through: the frozen-embedding heads (``bridge.evaluation.heads``)
and the peers trained end to end (``bridge.evaluation.peers``) alike.

1. :func:`prepare_targets` (once per task): the users with a known target, their train/val/test masks (each
   split must have one), the model's output width and how outputs decode to predictions (topic: argmax; fans:
   un-standardize the ``log1p(fans)`` regression with the train mean and std), and the fans buckets' edges.
2. The model family trains its candidates (head type x weight decay, or one network per weight decay) and hands
   back one :class:`Candidate` per (head seed, setting) with its val and test predictions.
3. :func:`select_and_score`: per head seed, the candidate with the best val score (ties keep the earlier one);
   test is scored once per seed, with that candidate only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from bridge.evaluation import metrics, tasks
from bridge.evaluation.results import SPLITS, Choice, Stat, TaskScores

Task = Literal["topic", "fans"]


@dataclass(frozen=True)
class TaskTargets:
    """One task's targets over all ``N`` users, prepared once for every model evaluated on it.

    Attributes:
        task: ``"topic"`` or ``"fans"``.
        y: ``[N]`` raw targets (topic index, or ``log1p(fans)``), meaningless where ``known`` is False.
        known: ``[N]`` users whose target is known.
        masks: ``{"train", "val", "test"}`` -> ``[N]`` known users of that split.
        out_dim: the model's output width (number of topics, or 1).
        mu, sd: the train mean and std of a regression target (0 and 1 for topic).
        edges: the fans buckets' inner edges at the train quantiles (None for topic).
    """

    task: Task
    y: np.ndarray
    known: np.ndarray
    masks: dict[str, np.ndarray]
    out_dim: int
    mu: float = 0.0
    sd: float = 1.0
    edges: np.ndarray | None = None

    def standardized(self) -> np.ndarray:
        """``[N]`` the training target: the topic index, or the standardized regression target (0 if unknown)."""
        if self.task == "topic":
            return np.where(self.known, self.y, 0).astype(np.int64)
        return np.where(self.known, (self.y - self.mu) / self.sd, 0.0).astype(np.float32)

    def decode(self, out: np.ndarray) -> np.ndarray:
        """Predictions from model outputs ``[..., C]``: argmax for topic, un-standardized values for fans."""
        if self.task == "topic":
            return out.argmax(-1)
        return out[..., 0].astype(np.float64) * self.sd + self.mu

    def split_sizes(self) -> dict[str, int]:
        return {name: int(mask.sum()) for name, mask in self.masks.items()}


def prepare_targets(
    task: Task, y: np.ndarray, known: np.ndarray, splits: np.ndarray, fans_buckets: int
) -> TaskTargets:
    """:class:`TaskTargets` of one task; raises ``ValueError`` when a split has no user with a known target."""
    splits = np.asarray(splits)
    masks = {name: known & (splits == code) for code, name in enumerate(SPLITS)}
    for name, mask in masks.items():
        if not mask.any():
            raise ValueError(f"task {task}: no users with a known target in the {name} split")
    if task == "topic":
        return TaskTargets(task, y, known, masks, out_dim=int(y[known].max()) + 1)
    train = y[masks["train"]]
    mu, sd = float(train.mean()), float(train.std()) or 1.0
    edges = metrics.quantile_edges(train, fans_buckets)
    return TaskTargets(task, y, known, masks, out_dim=1, mu=mu, sd=sd, edges=edges)


@dataclass(frozen=True)
class Candidate:
    """One trained model of a task's grid: its head seed and setting, and its val and test predictions."""

    seed: int
    head: str
    weight_decay: float
    val_pred: np.ndarray
    test_pred: np.ndarray
    epochs: int | None = None


def select_and_score(
    targets: TaskTargets, candidates: Sequence[Candidate], seeds: Sequence[int]
) -> TaskScores:
    """Per head seed, choose the candidate with the best val score (``metrics.selection_score``; ties keep the
    earlier candidate) and score test once with it; the scores summarised over the head seeds."""
    y_val, y_test = targets.y[targets.masks["val"]], targets.y[targets.masks["test"]]
    val_scores = [metrics.selection_score(targets.task, y_val, c.val_pred) for c in candidates]
    per_metric: dict[str, list[float]] = {}
    per_class, confusion = [], None
    chosen = []
    for seed in seeds:
        i = min((i for i, c in enumerate(candidates) if c.seed == seed), key=lambda i: val_scores[i])
        best = candidates[i]
        chosen.append(Choice(seed, best.head, best.weight_decay, abs(float(val_scores[i])), best.epochs))
        for name, value in metrics.task_scores(targets.task, y_test, best.test_pred, targets.edges).items():
            per_metric.setdefault(name, []).append(value)
        if targets.task == "topic":
            f1, matrix = metrics.per_class(y_test, best.test_pred, targets.out_dim)
            per_class.append(f1)
            confusion = matrix if confusion is None else confusion + matrix
    scores = {name: Stat.of(values) for name, values in per_metric.items()}
    class_f1 = tuple(Stat.of(column) for column in np.asarray(per_class).T) if per_class else ()
    matrix = tuple(tuple(int(c) for c in row) for row in confusion) if confusion is not None else ()
    return TaskScores(targets.task, scores, tuple(chosen), targets.split_sizes(), None, class_f1, matrix)


EvaluateTask = Callable[[TaskTargets], TaskScores]


def evaluate_tasks(
    labels: np.ndarray, fans: np.ndarray, splits: np.ndarray, fans_buckets: int, evaluate_task: EvaluateTask
) -> dict[str, TaskScores]:
    """Every task's :class:`TaskScores`: ``evaluate_task`` on each task that can be evaluated, the skipped
    entry (with its reason, ``bridge.evaluation.tasks``) for the others."""
    labels, fans, splits = np.asarray(labels), np.asarray(fans, dtype=np.float64), np.asarray(splits)
    known = tasks.known_targets(labels, fans)
    y = {"topic": labels, "fans": np.log1p(np.where(known["fans"], fans, 0.0))}
    skipped = tasks.unavailable_tasks(labels, fans, splits)
    return {
        task: TaskScores.skipped_task(task, skipped[task])
        if task in skipped
        else evaluate_task(prepare_targets(task, y[task], known[task], splits, fans_buckets))
        for task in tasks.TASKS
    }
