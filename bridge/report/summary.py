"""Rows summarised over training seeds, and MMGA's seed-aware comparison with each compared row, typed.

Every row's score is the mean over training seeds of its per-seed score (itself the mean over the downstream
heads' seeds), with the sample std over training seeds; a row without a trained variant (X) has one evaluation,
repeated for every seed, and std 0. The verdict against each compared row follows ``bridge.evaluation.verdict``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from bridge.evaluation.results import TASKS, Evaluation, Stat
from bridge.evaluation.rows import GOAL_METRICS, SECTIONS, Row, section_rows
from bridge.evaluation.verdict import Verdict, paired_margins, verdict


@dataclass(frozen=True)
class SeedStat:
    """One metric of one row over training seeds; ``head_std`` is the mean over seeds of the heads' std."""

    stat: Stat
    head_std: float

    @property
    def mean(self) -> float:
        return self.stat.mean

    @property
    def std(self) -> float:
        return self.stat.std

    @property
    def values(self) -> tuple[float, ...]:
        return self.stat.values

    def to_json(self) -> dict[str, Any]:
        return {**self.stat.to_json(), "head_std": self.head_std}


@dataclass(frozen=True)
class TaskSummary:
    """One task of one row over training seeds: the split sizes, why it was skipped (if so), each metric."""

    n: dict[str, int]
    metrics: dict[str, SeedStat]
    skipped: str | None = None
    val: Stat | None = None  # the chosen candidates' val score (macro-F1, or MAE) over training seeds

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"n": dict(self.n)}
        if self.val is not None:
            out["val_selection_score"] = self.val.to_json()
        if self.skipped:
            out["skipped"] = self.skipped
        return {**out, **{m: s.to_json() for m, s in self.metrics.items()}}


@dataclass(frozen=True)
class RowSummary:
    """One report row over training seeds: the row, its per-seed evaluations and each task's summary."""

    row: Row
    per_seed: dict[int | None, Evaluation]
    tasks: dict[str, TaskSummary]

    @property
    def dim(self) -> int | None:
        return next(iter(self.per_seed.values())).dim

    def metric(self, task: str, metric: str) -> SeedStat:
        return self.tasks[task].metrics[metric]

    def to_json(self) -> dict[str, Any]:
        row = self.row
        return {
            "label": row.label,
            "group": row.group,
            "section": row.section,
            "inputs": row.inputs,
            **row.spec(),
            "dim": self.dim,
            "per_seed": {str(k): ev.to_json() for k, ev in self.per_seed.items()},
            **{task: summary.to_json() for task, summary in self.tasks.items()},
        }


def summarize_row(row: Row, per_seed: dict[int | None, Evaluation], seeds: tuple[int, ...]) -> RowSummary:
    """The row's :class:`RowSummary` from its evaluations (one per training seed, or one under None for X)."""
    order = list(seeds) if row.seeded else [None]
    evaluations = {k: per_seed[k] for k in order}
    tasks: dict[str, TaskSummary] = {}
    for task in TASKS:
        first = evaluations[order[0]].task(task)
        metrics = {}
        for metric in first.scores:
            means = [evaluations[k].task(task)[metric].mean for k in order]
            stat = Stat.of(means * (len(seeds) if not row.seeded else 1))
            if not row.seeded:
                stat = Stat(stat.mean, 0.0, stat.values)
            head_std = float(np.mean([evaluations[k].task(task)[metric].std for k in order]))
            metrics[metric] = SeedStat(stat, head_std)
        val = [
            float(np.mean([c.val_score for c in evaluations[k].task(task).chosen] or [np.nan])) for k in order
        ]
        tasks[task] = TaskSummary(
            dict(first.n), metrics, first.skipped, Stat.of(val) if not first.skipped else None
        )
    return RowSummary(row, evaluations, tasks)


@dataclass(frozen=True)
class Margin:
    """MMGA's margin over another row on one metric, paired by training seed (> 0: MMGA better)."""

    mmga: float
    other: float
    margins: tuple[float, ...]
    verdict: Verdict

    @property
    def stat(self) -> Stat:
        return Stat.of(self.margins)

    def to_json(self) -> dict[str, Any]:
        stat = self.stat
        return {
            "mmga": self.mmga,
            "other": self.other,
            "margin": stat.mean,
            "margin_std": stat.std,
            "margins": list(self.margins),
            "ahead_in": int(sum(m > 0 for m in self.margins)),
            "verdict": self.verdict,
        }


@dataclass(frozen=True)
class Comparison:
    """A section's MMGA row against one compared row, per headline metric (keys ``"topic_macro_f1"``, ...)."""

    mmga: str
    against: str
    margins: dict[str, Margin]
    section: str = "probe"

    def to_json(self) -> dict[str, Any]:
        return {
            "section": self.section,
            "mmga": self.mmga,
            "against": self.against,
            **{k: m.to_json() for k, m in self.margins.items()},
        }


def compare_rows(rows: list[Row], summaries: dict[str, RowSummary]) -> list[Comparison]:
    """Per report section (``bridge.evaluation.rows.SECTIONS``), its MMGA row against each of its compared rows:
    per-seed margins, their mean and sd, and the verdict."""
    out = []
    for spec, mmga, compared in section_rows(rows):
        for other in compared:
            margins = {}
            for task, metric, higher in GOAL_METRICS:
                a, b = summaries[mmga].metric(task, metric), summaries[other].metric(task, metric)
                per_seed = tuple(paired_margins(a.values, b.values, higher))
                margins[f"{task}_{metric}"] = Margin(a.mean, b.mean, per_seed, verdict(per_seed))
            out.append(Comparison(mmga, other, margins, spec.name))
    return out


SECTION_TITLES = {spec.name: spec.title for spec in SECTIONS}


def verdict_lines(comparisons: list[Comparison]) -> list[str]:
    """One plain sentence per section and headline metric: which rows the section's MMGA row is ahead of,
    behind, not measurably apart from."""
    out = []
    for section in dict.fromkeys(c.section for c in comparisons):
        out += _section_verdict(section, [c for c in comparisons if c.section == section])
    return out


def _section_verdict(section: str, comparisons: list[Comparison]) -> list[str]:
    out = []
    mmga = comparisons[0].mmga
    for key, label in (("topic_macro_f1", "topic macro-F1"), ("fans_mae", "fans MAE")):
        groups: dict[str, list[str]] = {}
        for c in comparisons:
            groups.setdefault(c.margins[key].verdict, []).append(c.against)
        parts = [
            f"{word} {', '.join(groups[v])}"
            for v, word in (
                ("ahead", "ahead of"),
                ("not measurably", "not measurably apart from"),
                ("behind", "behind"),
            )
            if groups.get(v)
        ]
        out.append(f"{SECTION_TITLES[section]}, {label}: `{mmga}` is " + "; ".join(parts) + ".")
    return out
