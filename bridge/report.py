"""The run's report: ``report.md``, ``metrics.json`` (the same numbers) and PNG plots (matplotlib, Agg)."""

from __future__ import annotations

import json
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from bridge import metrics, tasks
from bridge.config import BridgeConfig
from bridge.manifest import Manifest, to_jsonable, write_json_atomic
from bridge.paths import RunPaths
from bridge.plots import plot_loss_curves, plot_metrics_by_round, plot_projection
from bridge.rows import COMPARED_ROWS, GOAL_METRICS, Row, representation
from cache import read_graph_outputs
from cache.atomic import atomic_write_bytes
from corpus import Corpus
from corpus.synthetic import TRUTH_FILE, load_truth

# (task, metric, label, higher is better)
COLUMNS = (
    ("topic", "accuracy", "topic acc", True),
    ("topic", "macro_f1", "topic macro-F1", True),
    ("fans", "mae", "fans MAE", False),
    ("fans", "spearman", "fans Spearman", True),
    ("fans", "bucket_accuracy", "fans bucket acc", True),
)


def _fmt(stat: dict[str, Any]) -> str:
    if not np.isfinite(stat["mean"]):
        return "n/a"  # a skipped task or an undefined metric; tasks.report_notes says which and why
    return f"{stat['mean']:.3f} ± {stat['std']:.3f}"


def comparison(rows: list[Row], evaluated: dict[str, Any]) -> list[dict[str, Any]]:
    """MMGA's last round against each compared row: the difference of means, oriented so > 0 = MMGA ahead."""
    final = [r for r in rows if r.group == "mmga"][-1]
    out = []
    for other in COMPARED_ROWS:
        if other not in evaluated:
            continue
        entry: dict[str, Any] = {"mmga": final.name, "against": other}
        for task, metric, higher in GOAL_METRICS:
            a, b = evaluated[final.name][task][metric]["mean"], evaluated[other][task][metric]["mean"]
            margin = a - b if higher else b - a
            entry[f"{task}_{metric}"] = {"mmga": a, "other": b, "margin": margin, "ahead": bool(margin > 0)}
        out.append(entry)
    return out


def edge_weight_diagnostics(
    corpus: Corpus, paths: RunPaths, rounds: int, variants: tuple[str, ...]
) -> dict | None:
    """For a synthetic corpus (it has the generator's ``_truth.npz``): how well stage 2's edge weights separate
    same-topic from cross-topic edges (ROC AUC; 0.5 = not at all), per variant and round. None otherwise."""
    truth_file = Path(corpus.root) / TRUTH_FILE
    if not truth_file.is_file():
        return None
    topic = load_truth(corpus.root)["user_topic"]
    if len(topic) != corpus.num_users:
        return None
    same = topic[corpus.edges[:, 0]] == topic[corpus.edges[:, 1]]
    out: dict[str, Any] = {"same_topic_share": float(same.mean()), "variants": {}}
    for variant in variants:
        per_round = []
        for r in range(rounds):
            graph = read_graph_outputs(
                paths.cache_dir(variant), r, fingerprint=corpus.fingerprint,
                num_users=corpus.num_users, num_edges=corpus.num_edges,
            )  # fmt: skip
            w = graph.edge_weight.astype(np.float64)
            per_round.append(
                {
                    "auc_same_topic": metrics.roc_auc(same, w),
                    "mean_same": float(w[same].mean()) if same.any() else float("nan"),
                    "mean_cross": float(w[~same].mean()) if (~same).any() else float("nan"),
                    "std": float(w.std()),
                }
            )
        out["variants"][variant] = per_round
    return out


def _diagnostics_lines(diag: dict | None) -> list[str]:
    if diag is None:
        return []
    lines = [
        "## Diagnostics: do stage 2's edge weights see topics? (synthetic corpus only)",
        "",
        f"The generator's ground truth says {diag['same_topic_share']:.0%} of the edges join users of the same "
        "topic. ROC AUC of the edge weight (mean over heads and directions) for telling same-topic from "
        "cross-topic edges: 0.5 = the weights carry no topic information; the uniform gate is 0.5 by "
        "construction. These are the weights stage 1 reads in the next round.",
        "",
        "| variant | round | AUC | mean weight same-topic | mean weight cross-topic | std |",
        "|---|---|---|---|---|---|",
    ]
    for variant, rounds in diag["variants"].items():
        for r, d in enumerate(rounds):
            lines.append(
                f"| {variant} | {r} | {d['auc_same_topic']:.3f} | {d['mean_same']:.4f} | {d['mean_cross']:.4f} "
                f"| {d['std']:.4f} |"
            )
    return [*lines, ""]


def _results_table(rows: list[Row], evaluated: dict[str, Any]) -> list[str]:
    head = "| row | inputs | dim | " + " | ".join(c[2] for c in COLUMNS) + " |"
    lines = [head, "|" + "---|" * (3 + len(COLUMNS))]
    for row in rows:
        res = evaluated[row.name]
        cells = [_fmt(res[task][metric]) for task, metric, _, _ in COLUMNS]
        lines.append(
            f"| {row.label} (`{row.name}`) | {row.inputs} | {res.get('dim', '')} | "
            + " | ".join(cells)
            + " |"
        )
    return lines


def _comparison_table(comp: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| MMGA (last round) vs | topic macro-F1 margin | ahead | fans MAE margin | ahead |",
        "|---|---|---|---|---|",
    ]
    for c in comp:
        f1, mae = c["topic_macro_f1"], c["fans_mae"]
        lines.append(
            f"| `{c['against']}` | {f1['margin']:+.3f} ({f1['mmga']:.3f} vs {f1['other']:.3f}) | "
            f"{'yes' if f1['ahead'] else 'NO'} | {mae['margin']:+.3f} ({mae['mmga']:.3f} vs {mae['other']:.3f}) | "
            f"{'yes' if mae['ahead'] else 'NO'} |"
        )
    return lines


def _environment_lines(environment: dict[str, Any] | None) -> list[str]:
    if not environment:
        return []
    return [
        f"Measured with {environment.get('torch_threads')} torch thread(s) on {environment.get('cpu_count')} CPU "
        f"core(s); 1-minute load average {environment.get('load_average_1min_start', float('nan')):.1f} at the "
        f"start and {environment.get('load_average_1min_end', float('nan')):.1f} at the end (other jobs on the "
        "machine slow every step down). The wall time excludes Python's start-up and imports.",
        "",
    ]


def _timing_table(timings: list[dict[str, Any]], total: float) -> list[str]:
    lines = ["| step | seconds | when |", "|---|---|---|"]
    for t in timings:
        lines.append(
            f"| {t['step']} | {t['seconds']:.1f} | {'this invocation' if t['ran_now'] else 'earlier run'} |"
        )
    lines.append(f"| **this invocation, wall time** | {total:.1f} | |")
    return lines


def write_report(
    cfg: BridgeConfig,
    paths: RunPaths,
    manifest: Manifest,
    corpus: Corpus,
    rows: list[Row],
    evaluated: dict[str, Any],
    timings: list[dict[str, Any]],
    total_seconds: float,
    environment: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write report.md, metrics.json and the plots into ``paths.report_dir``; returns metrics.json's content."""
    out = paths.report_dir
    out.mkdir(parents=True, exist_ok=True)
    comp = comparison(rows, evaluated)
    stage_configs = {
        key: manifest.get(key)["config"]["config"]
        for key in (paths.stage_key("mmga", 0, "stage1"), paths.stage_key("mmga", 0, "stage2"))
        if manifest.get(key) is not None
    }
    final = [r for r in rows if r.group == "mmga"][-1]
    plot_metrics_by_round(rows, evaluated, out / "metrics_by_round.png")
    has_losses = plot_loss_curves(paths, cfg.rounds, out / "loss_curves.png")
    plot_projection(
        representation(final, corpus, paths), corpus, out / "embedding_pca.png",
        f"MMGA round {final.round}: PCA of [R^G || R^T || R^I], coloured by topic",
    )  # fmt: skip
    corpus_info = {
        "path": str(corpus.root),
        "fingerprint": corpus.fingerprint,
        "users": corpus.num_users,
        "posts": corpus.num_posts,
        "edges": corpus.num_edges,
        "topics": len(corpus.label_names),
    }
    variants = tuple(dict.fromkeys(r.variant for r in rows if r.variant is not None and "graph" in r.parts))
    diagnostics = edge_weight_diagnostics(corpus, paths, cfg.rounds, variants)
    report = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "corpus": corpus_info,
        "rows": {
            row.name: {
                "label": row.label,
                "group": row.group,
                "inputs": row.inputs,
                **row.spec(),
                **evaluated[row.name],
            }
            for row in rows
        },
        "comparison": comp,
        "edge_weight_diagnostics": diagnostics,
        "timings": timings,
        "wall_seconds": total_seconds,
        "environment": environment or {},
        "config": {"bridge": to_jsonable(cfg), "stages": stage_configs},
    }
    write_json_atomic(out / "metrics.json", report)

    n = evaluated[rows[0].name]
    steps1 = stage_configs.get(paths.stage_key("mmga", 0, "stage1"), {}).get("trainer", {}).get("max_steps")
    steps2 = stage_configs.get(paths.stage_key("mmga", 0, "stage2"), {}).get("trainer", {}).get("max_steps")
    seeds = ", ".join(str(s) for s in cfg.eval.seeds)
    md = [
        "# MMGA bridge report",
        "",
        f"Run folder `{paths.run_dir}`; corpus `{corpus.root}` ({corpus.num_users} users, {corpus.num_posts} posts, "
        f"{corpus.num_edges} edges, {len(corpus.label_names)} topics, fingerprint `{corpus.fingerprint[:12]}`); "
        f"{cfg.rounds} round(s), training seed {cfg.seed}; {platform.node()}, {report['created']}.",
        "",
        "## Results (test split)",
        "",
        f"Mean ± sample std over the head seeds ({seeds}); every row uses the same splits (topic: "
        f"{n['topic']['n']['train']}/{n['topic']['n']['val']}/{n['topic']['n']['test']} train/val/test users, fans: "
        f"{n['fans']['n']['train']}/{n['fans']['n']['val']}/{n['fans']['n']['test']}). The spread is over the "
        "downstream heads only: each representation comes from one training run.",
        "",
        *_results_table(rows, evaluated),
        "",
        *tasks.report_notes(evaluated),
        "## MMGA against the baselines",
        "",
        "Margin = MMGA's last round minus the other row for macro-F1, the other row minus MMGA for MAE: "
        "positive means MMGA is ahead. The last round is compared (not the best one on test).",
        "",
        *_comparison_table(comp),
        "",
        "## How the rows were made",
        "",
        "- Downstream heads (the fine-tuning stage) are trained on frozen embeddings; the GNN is not fine-tuned. "
        f"Heads: {' and '.join(cfg.eval.heads)}"
        f"{f' (MLP hidden width {cfg.eval.hidden}, dropout {cfg.eval.dropout})' if 'mlp' in cfg.eval.heads else ''}, "
        "weight decay in "
        f"{list(cfg.eval.weight_decays)}, Adam lr {cfg.eval.lr}, at most {cfg.eval.max_epochs} full-batch epochs "
        f"with early stopping (patience {cfg.eval.patience}) on val; head type and weight decay chosen per seed on "
        "val (macro-F1 for topic, MAE for fans); inputs standardized with train statistics. Test is scored once "
        "per seed with the chosen head.",
        "- Topic: softmax classifier, accuracy and macro-F1. Fans: regression on log(1 + fans) (Huber loss on "
        f"standardized targets); MAE in log(1 + fans) units, Spearman, and accuracy over {cfg.eval.fans_buckets} "
        "buckets cut at the train quantiles. Users with an unknown label / fans are left out of that task.",
        f"- Every variant runs {cfg.rounds} round(s) with the same per-round steps (stage 1: {steps1}, stage 2: "
        f"{steps2}), each round continuing from the previous round's checkpoints, so the baselines get as many "
        "training steps as MMGA. `no_align`: stage 1 with both GCL weights 0 (LM + ITA only), stage 2 with "
        "uniform aggregation, no edge-weight feedback. `graph_only`: stage 2 on X alone (no modality inputs). "
        "`image_only` / `text_only`: the no-alignment encoders' R^I / R^T. `mmga_*` parts: MMGA's own blocks.",
        "",
        *_diagnostics_lines(diagnostics),
        "## Plots",
        "",
        "![metrics by round](metrics_by_round.png)",
        "",
        *(
            ["![loss curves](loss_curves.png)", ""]
            if has_losses
            else ["(no Lightning CSV logs found for loss curves)", ""]
        ),
        "![PCA of the final MMGA user embeddings](embedding_pca.png)",
        "",
        "## Timings",
        "",
        *_timing_table(timings, total_seconds),
        "",
        *_environment_lines(environment),
        "## Resolved configuration",
        "",
        "```json",
        json.dumps(report["config"], indent=2, sort_keys=True),
        "```",
        "",
    ]
    atomic_write_bytes(out / "report.md", "\n".join(md).encode())
    return report
