"""Typed evaluation results: what one representation scored on each task, for one training seed.

:class:`Stat` is a mean, sample standard deviation and the values it summarises (over the downstream heads'
seeds, or over training seeds); :class:`TaskScores` is one task's test scores with what validation chose;
:class:`Evaluation` is one row's scores for one training seed. ``to_json`` / ``from_json`` are the layout the
manifest caches and ``metrics.json`` shows (``{"topic": {"macro_f1": {"mean", "std", "values"}, ...,
"chosen": [...], "n": {...}}, "fans": {...}, "dim": D}``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

TASKS = ("topic", "fans")
SPLITS = ("train", "val", "test")
METRICS = {"topic": ("accuracy", "macro_f1"), "fans": ("mae", "spearman", "bucket_accuracy")}


@dataclass(frozen=True)
class Stat:
    """Mean, sample standard deviation (0 for one value, NaN for none) and the values; a NaN stays NaN."""

    mean: float
    std: float
    values: tuple[float, ...] = ()

    @classmethod
    def of(cls, values: Iterable[float]) -> Stat:
        arr = np.asarray(list(values), dtype=np.float64)
        if len(arr) == 0:
            return cls(float("nan"), float("nan"), ())
        std = float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
        return cls(float(arr.mean()), std, tuple(float(v) for v in arr))

    def to_json(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std, "values": list(self.values)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Stat:
        return cls(float(data["mean"]), float(data["std"]), tuple(float(v) for v in data.get("values", ())))


@dataclass(frozen=True)
class Choice:
    """What validation chose for one head seed: the head, its weight decay, its validation score (and, for
    models trained with early stopping per candidate, the epochs run)."""

    seed: int
    head: str
    weight_decay: float
    val_score: float
    epochs: int | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"seed": self.seed, "head": self.head, "weight_decay": self.weight_decay}
        if self.epochs is not None:
            out["epochs"] = self.epochs
        return {**out, "val_score": self.val_score}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Choice:
        epochs = data.get("epochs")
        return cls(
            int(data["seed"]),
            str(data["head"]),
            float(data["weight_decay"]),
            float(data["val_score"]),
            None if epochs is None else int(epochs),
        )


@dataclass(frozen=True)
class TaskScores:
    """One task's test scores over the head seeds, what validation chose per seed, and the split sizes.

    A skipped task (``skipped`` says why) has every metric NaN and no choices."""

    task: str
    scores: dict[str, Stat]
    chosen: tuple[Choice, ...] = ()
    n: dict[str, int] = field(default_factory=dict)
    skipped: str | None = None
    per_class_f1: tuple[Stat, ...] = ()  # topic: each class's test F1 over the head seeds
    confusion: tuple[tuple[int, ...], ...] = ()  # topic: test confusion matrix summed over the head seeds

    @classmethod
    def skipped_task(cls, task: str, reason: str) -> TaskScores:
        nan = Stat(float("nan"), float("nan"), ())
        return cls(task, {m: nan for m in METRICS[task]}, (), {s: 0 for s in SPLITS}, reason)

    def __getitem__(self, metric: str) -> Stat:
        return self.scores[metric]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"skipped": self.skipped} if self.skipped else {}
        out.update({m: s.to_json() for m, s in self.scores.items()})
        out["chosen"] = [c.to_json() for c in self.chosen]
        out["n"] = dict(self.n)
        if self.per_class_f1:
            out["per_class_f1"] = [s.to_json() for s in self.per_class_f1]
            out["confusion"] = [list(row) for row in self.confusion]
        return out

    @classmethod
    def from_json(cls, task: str, data: dict[str, Any]) -> TaskScores:
        scores = {k: Stat.from_json(v) for k, v in data.items() if isinstance(v, dict) and "mean" in v}
        chosen = tuple(Choice.from_json(c) for c in data.get("chosen", ()))
        n = {k: int(v) for k, v in data.get("n", {}).items()}
        per_class = tuple(Stat.from_json(v) for v in data.get("per_class_f1", ()))
        confusion = tuple(tuple(int(c) for c in row) for row in data.get("confusion", ()))
        return cls(task, scores, chosen, n, data.get("skipped"), per_class, confusion)


@dataclass(frozen=True)
class Evaluation:
    """One representation's scores on every task, for one training seed; ``dim`` is its width."""

    topic: TaskScores
    fans: TaskScores
    dim: int | None = None

    def task(self, name: str) -> TaskScores:
        if name not in TASKS:
            raise KeyError(f"unknown task {name!r}; expected one of {TASKS}")
        return getattr(self, name)

    __getitem__ = task

    def to_json(self) -> dict[str, Any]:
        return {"topic": self.topic.to_json(), "fans": self.fans.to_json(), "dim": self.dim}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Evaluation:
        dim = data.get("dim")
        return cls(
            TaskScores.from_json("topic", data["topic"]),
            TaskScores.from_json("fans", data["fans"]),
            None if dim is None else int(dim),
        )
