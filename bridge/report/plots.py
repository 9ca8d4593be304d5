"""The report's PNG plots (matplotlib, Agg backend): metrics by round, loss curves, a 2-D projection."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from bridge.evaluation.rows import GOAL_METRICS, Row, compared_rows  # noqa: E402
from bridge.report.summary import Comparison, RowSummary  # noqa: E402
from corpus import Corpus  # noqa: E402


def literal(text: str) -> str:
    """``text`` as matplotlib should draw it: a topic label is data, never mathtext (``$`` stays a dollar)."""
    return str(text).replace("$", r"\$")


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


def _draw_stage(ax, log_dirs: list[Path | None], lines: dict[str, Any], faint: bool) -> tuple[bool, float]:
    """One seed's loss terms of one stage over its rounds on ``ax``; (any curve drawn, the lowest value)."""
    offset, lowest, drawn = 0.0, float("inf"), False
    for r, log_dir in enumerate(log_dirs):
        csv_path = None if log_dir is None else Path(log_dir) / "metrics.csv"
        if csv_path is None or not csv_path.is_file():
            continue
        last = offset
        for name, (steps, values) in sorted(read_loss_curves(csv_path).items()):
            color = lines[name].get_color() if name in lines else f"C{len(lines) % 10}"
            label = None if (name in lines or faint) else name
            (line,) = ax.plot(
                steps + offset,
                values,
                color=color,
                lw=0.6 if faint else 1,
                alpha=0.35 if faint else 1.0,
                label=label,
            )
            lines.setdefault(name, line)
            lowest = min(lowest, float(values.min()) if len(values) else lowest)
            last = max(last, float(steps.max()) + offset + 1 if len(steps) else last)
            drawn = True
        if r > 0 and not faint:
            ax.axvline(offset, color="grey", ls=":", lw=0.8)
        offset = last
    return drawn, lowest


def plot_loss_curves(
    log_dirs: dict[str, list[Path | None]] | list[dict[str, list[Path | None]]],
    out: Path,
    variant: str = "mmga",
) -> bool:
    """Loss terms of both stages of ``variant`` over its rounds (steps continue across rounds), for every training
    seed: the first seed in full colour, the others faint; the GCL pair classifier's chance level (ln 2) is marked.

    ``log_dirs``: per training seed, per stage (``"stage1"``, ``"stage2"``) the Lightning CSV log folder of each
    round, as the stage's result named it (``metrics.csv`` inside), or None where there is none (one such dict
    for a single seed). True when any curve was drawn.
    """
    per_seed = [log_dirs] if isinstance(log_dirs, dict) else list(log_dirs)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    any_curve = False
    for ax, stage in zip(axes, ("stage1", "stage2")):
        lines: dict[str, Any] = {}
        lowest = float("inf")
        for k, seed_dirs in enumerate(per_seed):
            drawn, low = _draw_stage(ax, seed_dirs.get(stage, []), lines, faint=k > 0)
            any_curve |= drawn
            lowest = min(lowest, low)
        if any("gcl" in name for name in lines):
            ax.axhline(np.log(2), color="black", ls="--", lw=0.8, label="ln 2: chance of a pair classifier")
        seeds = f", {len(per_seed)} training seeds (first in full colour)" if len(per_seed) > 1 else ""
        ax.set_title(f"{variant} {stage}{seeds}; dotted: round boundaries", fontsize=9)
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


def plot_metrics_by_round(rows: list[Row], summaries: dict[str, RowSummary], out: Path) -> None:
    """MMGA's topic macro-F1 and fans MAE per round beside ``no_align``'s per round, with the other compared rows
    (last round only) as horizontal lines."""
    mmga = [r for r in rows if r.group == "mmga"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, (task, metric, higher) in zip(axes, GOAL_METRICS):
        means = [summaries[r.name].metric(task, metric).mean for r in mmga]
        stds = [summaries[r.name].metric(task, metric).std for r in mmga]
        ax.errorbar(
            [r.round for r in mmga], means, yerr=stds, marker="o", color="black", label="MMGA", capsize=3
        )
        per_round = [r for r in rows if r.group == "baseline_round"] + [
            r for r in rows if r.name == "no_align"
        ]
        if per_round:  # the no-alignment baseline after every round, beside MMGA's
            stats = [summaries[r.name].metric(task, metric) for r in per_round]
            ax.errorbar(
                [r.round for r in per_round],
                [s.mean for s in stats],
                yerr=[s.std for s in stats],
                marker="s",
                color="C0",
                label="no_align",
                capsize=3,
            )
        for i, name in enumerate(compared_rows(rows)):
            if name in summaries and not (per_round and name == "no_align"):
                ax.axhline(
                    summaries[name].metric(task, metric).mean, ls="--", lw=1, color=f"C{i}", label=name
                )
        ax.set_xlabel("round")
        ax.set_xticks([r.round for r in mmga])
        ax.set_title(f"{task} {metric} (test, {'higher' if higher else 'lower'} is better)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _standardized_blocks(blocks: list[np.ndarray]) -> np.ndarray:
    """Each block standardized per column and scaled by 1/sqrt(width), so every block weighs the same."""
    out = []
    for b in blocks:
        b = np.asarray(b, dtype=np.float64)
        std = b.std(0)
        b = (b - b.mean(0)) / np.where(std > 0, std, 1.0)
        out.append(b / np.sqrt(max(b.shape[1], 1)))
    return np.concatenate(out, axis=1)


def tsne_2d(blocks: list[np.ndarray], seed: int = 0) -> np.ndarray:
    """A 2-D t-SNE (scikit-learn) of standardized blocks ``[N, D_k]``: it keeps neighbourhoods, where a PCA of
    these embeddings is dominated by degree and magnitude axes."""
    from sklearn.manifold import TSNE

    x = _standardized_blocks(blocks)
    n = len(x)
    perplexity = float(min(30.0, max(2.0, (n - 1) / 3)))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)


TSNE_MAX_USERS = 5000  # a map of more points shows nothing more, and t-SNE's cost grows with N log N


def projection_sample(num_users: int, max_users: int = TSNE_MAX_USERS, seed: int = 0) -> np.ndarray:
    """The users a t-SNE map shows: all of them up to ``max_users``, else a fixed random subset (sorted)."""
    if num_users <= max_users:
        return np.arange(num_users)
    return np.sort(np.random.default_rng(seed).choice(num_users, size=max_users, replace=False))


def plot_projections(panels: list[tuple[str, list[np.ndarray]]], corpus: Corpus, out: Path) -> None:
    """Side-by-side t-SNE maps of several representations (each a list of blocks), coloured by topic.

    Above ``TSNE_MAX_USERS`` users the maps show the same random subset of that many users (the title says so).
    """
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 6), squeeze=False)
    cmap = plt.cm.tab10 if len(corpus.label_names) <= 10 else plt.cm.tab20
    shown = projection_sample(corpus.num_users)
    labels = np.asarray(corpus.labels)[shown]
    unknown = labels < 0
    for ax, (title, blocks) in zip(axes[0], panels):
        xy = tsne_2d([np.asarray(b)[shown] for b in blocks])
        if unknown.any():
            ax.scatter(xy[unknown, 0], xy[unknown, 1], s=6, c="lightgrey", label="unlabelled")
        for k, name in enumerate(corpus.label_names):
            sel = labels == k
            ax.scatter(xy[sel, 0], xy[sel, 1], s=7, color=cmap(k % cmap.N), label=literal(name))
        ax.set_title(title, fontsize=12)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][-1].legend(
        fontsize=10, markerscale=2.5, loc="center left", bbox_to_anchor=(1.0, 0.5), title="topic"
    )
    sampled = (
        ""
        if len(shown) == corpus.num_users
        else f" ({len(shown):,} of {corpus.num_users:,} users, at random)"
    )
    fig.suptitle(
        f"t-SNE of the standardized blocks [R^G || R^T || R^I], coloured by topic{sampled}", fontsize=13
    )
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


_VERDICT_COLOR = {"ahead": "tab:green", "behind": "tab:red"}


def plot_margins(comp: list[Comparison], out: Path) -> None:
    """Each section's MMGA row's margin over each compared row (mean ± sd over training seeds, dots = single
    seeds), per metric; rows outside the linear-probe section are labelled ``<mmga row> vs <row>``."""
    keys = (("topic_macro_f1", "topic macro-F1"), ("fans_mae", "fans MAE"))
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.45 * len(comp) + 2.0))
    names = [c.against if c.section == "probe" else f"{c.mmga} vs {c.against}" for c in comp]
    y = np.arange(len(names))
    for ax, (key, label) in zip(axes, keys):
        means = np.array([c.margins[key].stat.mean for c in comp])
        sds = np.array([c.margins[key].stat.std for c in comp])
        colors = [_VERDICT_COLOR.get(c.margins[key].verdict, "tab:grey") for c in comp]
        ax.barh(y, means, xerr=sds, color=colors, alpha=0.75, capsize=3)
        for i, c in enumerate(comp):
            ax.scatter(
                c.margins[key].margins, [i] * len(c.margins[key].margins), s=12, color="black", zorder=3
            )
        ax.axvline(0, color="black", lw=0.8)
        ax.set_yticks(y)
        ax.set_yticklabels(names if ax is axes[0] else [], fontsize=10)
        ax.invert_yaxis()
        ax.set_xlabel(f"MMGA margin in {label} (> 0: MMGA better)", fontsize=10)
        ax.set_title(f"{label}: green ahead, red behind, grey not measurably", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def plot_confusion(matrix: np.ndarray, topics: list[str], out: Path, title: str) -> None:
    """A topic confusion matrix (rows: true, columns: predicted), each row normalised to shares, counts printed."""
    matrix = np.asarray(matrix, dtype=np.float64)
    shares = matrix / np.clip(matrix.sum(axis=1, keepdims=True), 1, None)
    size = 1.0 + 0.6 * len(topics)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    labels = [literal(t) for t in topics]
    ax.set_xticks(range(len(topics)), labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(topics)), labels, fontsize=8)
    for i in range(len(topics)):
        for j in range(len(topics)):
            color = "white" if shares[i, j] > 0.6 else "black"
            ax.text(j, i, f"{int(matrix[i, j])}", ha="center", va="center", fontsize=7, color=color)
    ax.set_xlabel("predicted topic")
    ax.set_ylabel("true topic")
    ax.set_title(literal(title), fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of the true topic's test users")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
