"""The report's PNG plots (matplotlib, Agg backend): metrics by round, loss curves, a 2-D projection."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from bridge.paths import RunPaths  # noqa: E402
from bridge.rows import COMPARED_ROWS, GOAL_METRICS, Row  # noqa: E402
from corpus import Corpus  # noqa: E402


def _find_metrics_csv(stage_dir: Path) -> Path | None:
    found = sorted(stage_dir.rglob("metrics.csv"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def read_loss_curves(csv_path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{column: (steps, values)}`` for every column of a Lightning CSV log whose name contains "loss"."""
    with open(csv_path, newline="") as f:
        records = list(csv.DictReader(f))
    curves: dict[str, tuple[list[float], list[float]]] = {}
    for i, rec in enumerate(records):
        step = float(rec["step"]) if rec.get("step") not in (None, "") else float(i)
        for name, value in rec.items():
            if name and "loss" in name and value not in (None, ""):
                curves.setdefault(name, ([], []))
                curves[name][0].append(step)
                curves[name][1].append(float(value))
    return {k: (np.asarray(s), np.asarray(v)) for k, (s, v) in curves.items()}


def plot_loss_curves(paths: RunPaths, rounds: int, out: Path, variant: str = "mmga") -> bool:
    """Loss terms of both stages of ``variant`` over its rounds (steps continue across rounds)."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    any_curve = False
    for ax, stage in zip(axes, ("stage1", "stage2")):
        offset = 0.0
        lowest = float("inf")
        lines: dict[str, Any] = {}
        for r in range(rounds):
            csv_path = _find_metrics_csv(paths.stage_dir(variant, r, stage))
            if csv_path is None:
                continue
            curves = read_loss_curves(csv_path)
            last = offset
            for name, (steps, values) in sorted(curves.items()):
                color = lines[name].get_color() if name in lines else f"C{len(lines) % 10}"
                (line,) = ax.plot(
                    steps + offset, values, color=color, lw=1, label=name if name not in lines else None
                )
                lines.setdefault(name, line)
                lowest = min(lowest, float(values.min()) if len(values) else lowest)
                last = max(last, float(steps.max()) + offset + 1 if len(steps) else last)
                any_curve = True
            if r > 0:
                ax.axvline(offset, color="grey", ls=":", lw=0.8)
            offset = last
        ax.set_title(f"{variant} {stage} (dotted lines: round boundaries)")
        ax.set_xlabel("step (cumulative over rounds)")
        ax.set_ylabel("loss")
        if lines and lowest > 0:
            ax.set_yscale("log")  # the total and the terms differ by orders of magnitude
        if lines:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return any_curve


def plot_metrics_by_round(rows: list[Row], evaluated: dict[str, Any], out: Path) -> None:
    """MMGA's topic macro-F1 and fans MAE per round, with the baselines as horizontal lines."""
    mmga = [r for r in rows if r.group == "mmga"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, (task, metric, higher) in zip(axes, GOAL_METRICS):
        means = [evaluated[r.name][task][metric]["mean"] for r in mmga]
        stds = [evaluated[r.name][task][metric]["std"] for r in mmga]
        ax.errorbar(
            [r.round for r in mmga], means, yerr=stds, marker="o", color="black", label="MMGA", capsize=3
        )
        for i, name in enumerate(COMPARED_ROWS):
            if name in evaluated:
                ax.axhline(evaluated[name][task][metric]["mean"], ls="--", lw=1, color=f"C{i}", label=name)
        ax.set_xlabel("round")
        ax.set_xticks([r.round for r in mmga])
        ax.set_title(f"{task} {metric} (test, {'higher' if higher else 'lower'} is better)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_projection(x: np.ndarray, corpus: Corpus, out: Path, title: str) -> None:
    """First two principal components of the standardized representation, coloured by topic."""
    x = x.astype(np.float64)
    std = x.std(0)
    x = (x - x.mean(0)) / np.where(std > 0, std, 1.0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    xy = x @ vt[:2].T
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    unknown = corpus.labels < 0
    if unknown.any():
        ax.scatter(xy[unknown, 0], xy[unknown, 1], s=4, c="lightgrey", label="unlabelled")
    cmap = plt.cm.tab10 if len(corpus.label_names) <= 10 else plt.cm.tab20
    for k, name in enumerate(corpus.label_names):
        sel = corpus.labels == k
        ax.scatter(xy[sel, 0], xy[sel, 1], s=5, color=cmap(k % cmap.N), label=name)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title(title)
    ax.legend(fontsize=6, markerscale=2, ncol=2)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
