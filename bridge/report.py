"""The run's report: ``report.md``, ``metrics.json`` (the same numbers) and PNG plots (matplotlib, Agg).

Every row's score is the mean over training seeds of its per-seed score (itself the mean over the downstream
heads' seeds), with the sample std over training seeds; the verdict against each compared row follows
``bridge.verdict``.
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from bridge import tasks
from bridge.config import BridgeConfig
from bridge.manifest import Manifest, to_jsonable, write_json_atomic
from bridge.paths import RunPaths
from bridge.plots import plot_loss_curves, plot_margins, plot_metrics_by_round, plot_projections
from bridge.rows import GOAL_METRICS, Row, compared_rows, representation_blocks
from bridge.verdict import over_seeds, paired_margins, verdict
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


def aggregate(
    rows: list[Row], evaluated: dict[str, dict[Any, Any]], seeds: tuple[int, ...]
) -> dict[str, Any]:
    """Per row and metric: ``{"mean", "std", "values"}`` over training seeds of the per-seed head means, plus
    ``"head_std"`` (mean over seeds of the heads' std) and ``"per_seed"`` (every seed's full evaluation). A row
    without a trained variant (X) has one evaluation, repeated for every seed in ``values``."""
    out: dict[str, Any] = {}
    for row in rows:
        per_seed = evaluated[row.name]
        order = list(seeds) if row.seeded else [None]
        agg: dict[str, Any] = {
            "dim": per_seed[order[0]].get("dim"),
            "per_seed": {str(k): per_seed[k] for k in order},
        }
        for task in ("topic", "fans"):
            agg[task] = {"n": per_seed[order[0]][task]["n"]}
            if per_seed[order[0]][task].get("skipped"):
                agg[task]["skipped"] = per_seed[order[0]][task]["skipped"]
            for metric, stat in per_seed[order[0]][task].items():
                if not isinstance(stat, dict) or "mean" not in stat:
                    continue
                means = [per_seed[k][task][metric]["mean"] for k in order]
                summary = over_seeds(means * (len(seeds) if not row.seeded else 1))
                if not row.seeded:
                    summary["std"] = 0.0
                summary["head_std"] = float(np.mean([per_seed[k][task][metric]["std"] for k in order]))
                agg[task][metric] = summary
        out[row.name] = agg
    return out


def comparison(rows: list[Row], agg: dict[str, Any]) -> list[dict[str, Any]]:
    """MMGA's last round against each compared row: per-seed margins (> 0 = MMGA ahead), their mean and sd,
    and the seed-aware verdict."""
    final = [r for r in rows if r.group == "mmga"][-1]
    out = []
    for other in compared_rows(rows):
        entry: dict[str, Any] = {"mmga": final.name, "against": other}
        for task, metric, higher in GOAL_METRICS:
            a, b = agg[final.name][task][metric], agg[other][task][metric]
            margins = paired_margins(a["values"], b["values"], higher)
            stat = over_seeds(margins)
            entry[f"{task}_{metric}"] = {
                "mmga": a["mean"],
                "other": b["mean"],
                "margin": stat["mean"],
                "margin_std": stat["std"],
                "margins": margins,
                "ahead_in": int(sum(m > 0 for m in margins)),
                "verdict": verdict(margins),
            }
        out.append(entry)
    return out


def _edge_topics(corpus: Corpus) -> tuple[np.ndarray, np.ndarray, str] | None:
    """(edge rows that can be judged, same-topic flag of those edges, source of the topics), or None."""
    truth_file = Path(corpus.root) / TRUTH_FILE
    if truth_file.is_file():
        topic = load_truth(corpus.root)["user_topic"]
        if len(topic) == corpus.num_users:
            rows = np.arange(corpus.num_edges)
            return rows, topic[corpus.edges[:, 0]] == topic[corpus.edges[:, 1]], "generator truth"
    labels = corpus.labels
    both = (labels[corpus.edges[:, 0]] >= 0) & (labels[corpus.edges[:, 1]] >= 0)
    if not both.any():
        return None
    rows = np.flatnonzero(both)
    same = labels[corpus.edges[rows, 0]] == labels[corpus.edges[rows, 1]]
    return rows, same, "labels of labelled users (edges with both ends labelled, all splits)"


def edge_weight_diagnostics(
    corpus: Corpus, paths: RunPaths, rounds: int, variants: tuple[str, ...], seeds: tuple[int, ...]
) -> dict | None:
    """How well stage 2's edge weights separate same-topic from cross-topic edges (ROC AUC; 0.5 = not at all), per
    variant, round and training seed. Topics come from the generator's ``_truth.npz`` when the corpus has it, else
    from the labels of labelled users. None when no edge can be judged."""
    judged = _edge_topics(corpus)
    if judged is None:
        return None
    rows, same, source = judged
    out: dict[str, Any] = {"source": source, "edges_judged": int(len(rows)),
                           "same_topic_share": float(same.mean()), "variants": {}}  # fmt: skip
    for variant in variants:
        per_round = []
        for r in range(rounds):
            per_seed = []
            for seed in seeds:
                graph = read_graph_outputs(
                    paths.for_seed(seed).cache_dir(variant), r, fingerprint=corpus.fingerprint,
                    num_users=corpus.num_users, num_edges=corpus.num_edges,
                )  # fmt: skip
                w = graph.edge_weight.astype(np.float64)[rows]
                per_seed.append(
                    {
                        "auc_same_topic": roc_auc_score(same, w)
                        if 0 < same.sum() < len(same)
                        else float("nan"),
                        "mean_same": float(w[same].mean()) if same.any() else float("nan"),
                        "mean_cross": float(w[~same].mean()) if (~same).any() else float("nan"),
                        "std": float(w.std()),
                    }
                )
            per_round.append(
                {
                    "auc_same_topic": over_seeds([d["auc_same_topic"] for d in per_seed]),
                    "mean_same": float(np.mean([d["mean_same"] for d in per_seed])),
                    "mean_cross": float(np.mean([d["mean_cross"] for d in per_seed])),
                    "per_seed": per_seed,
                }
            )
        out["variants"][variant] = per_round
    return out


def _diagnostics_lines(diag: dict | None) -> list[str]:
    if diag is None:
        return []
    lines = [
        "## Diagnostics: do stage 2's edge weights see topics?",
        "",
        f"Topics from the {diag['source']}: {diag['edges_judged']} edges judged, {diag['same_topic_share']:.0%} of "
        "them join users of the same topic. ROC AUC of the edge weight (mean over heads and directions) for telling "
        "same-topic from cross-topic edges, mean ± sd over training seeds: 0.5 = the weights carry no topic "
        "information; the uniform gate's weights depend on degrees only. These are the weights stage 1 reads in the "
        "next round. Stages 1 and 2 never read labels: this is a diagnostic, not an input.",
        "",
        "| variant | round | AUC | mean weight same-topic | mean weight cross-topic |",
        "|---|---|---|---|---|",
    ]
    for variant, rounds in diag["variants"].items():
        for r, d in enumerate(rounds):
            lines.append(
                f"| {variant} | {r} | {_fmt(d['auc_same_topic'])} | {d['mean_same']:.4f} | {d['mean_cross']:.4f} |"
            )
    return [*lines, ""]


def _results_table(report_rows: dict[str, Any]) -> list[str]:
    head = "| row | inputs | dim | " + " | ".join(c[2] for c in COLUMNS) + " |"
    lines = [head, "|" + "---|" * (3 + len(COLUMNS))]
    for name, res in report_rows.items():
        cells = [_fmt(res[task][metric]) for task, metric, _, _ in COLUMNS]
        lines.append(
            f"| {res['label']} (`{name}`) | {res['inputs']} | {res.get('dim', '')} | "
            + " | ".join(cells)
            + " |"
        )
    return lines


VERDICT_WORD = {"ahead": "**ahead**", "behind": "behind", "not measurably": "not measurably", "n/a": "n/a"}


def _comparison_table(comp: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| MMGA (last round) vs | topic macro-F1 margin (mean ± sd) | per seed | verdict | fans MAE margin "
        "(mean ± sd) | per seed | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in comp:
        cells = []
        for key in ("topic_macro_f1", "fans_mae"):
            m = c[key]
            cells += [
                f"{m['margin']:+.3f} ± {m['margin_std']:.3f} ({m['mmga']:.3f} vs {m['other']:.3f})",
                " / ".join(f"{v:+.3f}" for v in m["margins"]),
                VERDICT_WORD[m["verdict"]],
            ]
        lines.append(f"| `{c['against']}` | " + " | ".join(cells) + " |")
    return lines


def verdict_lines(comp: list[dict[str, Any]]) -> list[str]:
    """One plain sentence per headline metric: which rows MMGA is ahead of, behind, not measurably apart from."""
    out = []
    for key, label in (("topic_macro_f1", "topic macro-F1"), ("fans_mae", "fans MAE")):
        groups: dict[str, list[str]] = {}
        for c in comp:
            groups.setdefault(c[key]["verdict"], []).append(c["against"])
        parts = [f"{word} {', '.join(groups[v])}" for v, word in
                 (("ahead", "ahead of"), ("not measurably", "not measurably apart from"), ("behind", "behind"))
                 if groups.get(v)]  # fmt: skip
        out.append(f"{label}: MMGA is " + "; ".join(parts) + ".")
    return out


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


@dataclass(frozen=True)
class ReportInputs:
    """What a finished run hands to its report (built once by ``bridge.runner.run_bridge``).

    Attributes:
        cfg: the bridge configuration the run used.
        paths: the run's folder layout; the report goes into ``paths.report_dir``.
        manifest: the run's manifest, read for the stages' resolved configs and their log folders.
        corpus: the corpus every row was trained and evaluated on.
        rows: the report rows in report order (``bridge.rows.report_rows``).
        evaluated: ``{row: {training seed (None for X): evaluation}}`` as ``bridge.runner.evaluate_rows`` gives.
        timings: one ``{"step", "seconds", "ran_now"}`` per step, in the order the run met them.
        total_seconds: this invocation's wall time.
        environment: torch threads, jobs, CPU count and load averages; None when not measured (metrics.json
            then records ``{}``).
    """

    cfg: BridgeConfig
    paths: RunPaths
    manifest: Manifest
    corpus: Corpus
    rows: list[Row]
    evaluated: dict[str, dict[Any, Any]]
    timings: list[dict[str, Any]]
    total_seconds: float
    environment: dict[str, Any] | None = None


def write_report(inputs: ReportInputs) -> dict[str, Any]:
    """Write report.md, metrics.json and the plots into ``inputs.paths.report_dir``; returns metrics.json's
    content."""
    out = inputs.paths.report_dir
    out.mkdir(parents=True, exist_ok=True)
    report = compute_report(inputs)
    has_losses = write_plots(report, inputs)
    write_json_atomic(out / "metrics.json", report)
    markdown = render_markdown(report, inputs.cfg, inputs.paths, has_losses)
    atomic_write_bytes(out / "report.md", markdown.encode())
    return report


def write_plots(report: dict[str, Any], inputs: ReportInputs) -> bool:
    """The report's PNG plots into ``inputs.paths.report_dir``; True when there were loss curves to draw. The loss
    curves come from the log folders the manifest recorded for the first training seed's MMGA stages."""
    cfg, paths, manifest, corpus, rows = inputs.cfg, inputs.paths, inputs.manifest, inputs.corpus, inputs.rows
    out = paths.report_dir
    first = paths.for_seed(cfg.training_seeds[0])
    final = [r for r in rows if r.group == "mmga"][-1]
    plot_metrics_by_round(rows, report["rows"], out / "metrics_by_round.png")
    log_dirs = {
        stage: [_recorded_log_dir(manifest, first.stage_key("mmga", r, stage)) for r in range(cfg.rounds)]
        for stage in ("stage1", "stage2")
    }
    has_losses = plot_loss_curves(log_dirs, out / "loss_curves.png")
    plot_margins(report["comparison"], out / "margins.png")
    by_name = {r.name: r for r in rows}
    panels = [(f"MMGA round {final.round}", representation_blocks(final, corpus, first))]
    if "no_align" in by_name:
        panels.append(("no alignment", representation_blocks(by_name["no_align"], corpus, first)))
    plot_projections(panels, corpus, out / "embedding_tsne.png")
    return has_losses


def _recorded_log_dir(manifest: Manifest, key: str) -> Path | None:
    """The log folder the stage's result named, as the manifest recorded it (None when not recorded)."""
    if manifest.get(key) is None:
        return None
    return manifest.outputs(key).get("log_dir")


def compute_report(inputs: ReportInputs) -> dict[str, Any]:
    """metrics.json's content: per row its spec and aggregated metrics, the comparison and verdict, the edge-weight
    diagnostics, timings, environment and the resolved configs. Writes nothing."""
    cfg, paths, corpus, rows = inputs.cfg, inputs.paths, inputs.corpus, inputs.rows
    seeds = cfg.training_seeds
    agg = aggregate(rows, inputs.evaluated, seeds)
    comp = comparison(rows, agg)
    first = paths.for_seed(seeds[0])
    stage_configs = {
        key: inputs.manifest.get(key)["config"]["config"]
        for key in (first.stage_key("mmga", 0, "stage1"), first.stage_key("mmga", 0, "stage2"))
        if inputs.manifest.get(key) is not None
    }
    corpus_info = {
        "path": str(corpus.root),
        "fingerprint": corpus.fingerprint,
        "users": corpus.num_users,
        "posts": corpus.num_posts,
        "edges": corpus.num_edges,
        "topics": len(corpus.label_names),
    }
    variants = tuple(dict.fromkeys(r.variant for r in rows if r.variant is not None and "graph" in r.parts))
    diagnostics = edge_weight_diagnostics(corpus, paths, cfg.rounds, variants, seeds)
    return {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "corpus": corpus_info,
        "training_seeds": list(seeds),
        "rows": {
            row.name: {
                "label": row.label,
                "group": row.group,
                "inputs": row.inputs,
                **row.spec(),
                **agg[row.name],
            }
            for row in rows
        },
        "comparison": comp,
        "verdict": verdict_lines(comp),
        "edge_weight_diagnostics": diagnostics,
        "timings": inputs.timings,
        "wall_seconds": inputs.total_seconds,
        "environment": inputs.environment or {},
        "config": {"bridge": to_jsonable(cfg), "stages": stage_configs},
    }


def render_markdown(report: dict[str, Any], cfg: BridgeConfig, paths: RunPaths, has_losses: bool) -> str:
    """report.md from metrics.json's content (``compute_report``) and the config that made it."""
    md = [
        *_intro_lines(report, cfg, paths),
        *_results_lines(report, cfg),
        *_comparison_lines(report),
        *_method_lines(report, cfg, paths),
        *_diagnostics_lines(report["edge_weight_diagnostics"]),
        *_plot_lines(report["training_seeds"], has_losses),
        *_timing_and_config_lines(report),
    ]
    return "\n".join(md)


def _intro_lines(report: dict[str, Any], cfg: BridgeConfig, paths: RunPaths) -> list[str]:
    """The title, what was run where, and the verdict sentences."""
    seeds, corpus = report["training_seeds"], report["corpus"]
    return [
        "# MMGA bridge report",
        "",
        f"Run folder `{paths.run_dir}`; corpus `{corpus['path']}` ({corpus['users']} users, {corpus['posts']} posts, "
        f"{corpus['edges']} edges, {corpus['topics']} topics, fingerprint `{corpus['fingerprint'][:12]}`); "
        f"{cfg.rounds} round(s), training seeds {', '.join(str(s) for s in seeds)}; {platform.node()}, "
        f"{report['created']}.",
        "",
        "## Verdict",
        "",
        *[f"- {line}" for line in report["verdict"]],
        "",
    ]


def _results_lines(report: dict[str, Any], cfg: BridgeConfig) -> list[str]:
    """The results table with how its numbers were averaged and the splits, then the tasks' notes."""
    seeds = report["training_seeds"]
    n = next(iter(report["rows"].values()))
    head_seeds = ", ".join(str(s) for s in cfg.eval.seeds)
    return [
        "## Results (test split)",
        "",
        f"Mean ± sample std over {len(seeds)} training seed(s) ({', '.join(str(s) for s in seeds)}): every row "
        f"but X is trained once per seed, and each seed's score is the mean over the downstream heads' seeds "
        f"({head_seeds}). Every row uses the same splits (topic: {n['topic']['n']['train']}/{n['topic']['n']['val']}/"
        f"{n['topic']['n']['test']} train/val/test users, fans: {n['fans']['n']['train']}/{n['fans']['n']['val']}/"
        f"{n['fans']['n']['test']}).",
        "",
        *_results_table(report["rows"]),
        "",
        *tasks.report_notes(
            {name: next(iter(row["per_seed"].values())) for name, row in report["rows"].items()}
        ),
    ]


def _comparison_lines(report: dict[str, Any]) -> list[str]:
    """MMGA's margins over each compared row, with how the verdict is reached."""
    one_seed = (
        " With one training seed no training spread is measured: the verdict then only says whether the margin "
        "is positive. Use `--seeds 3` or more for a verdict that means something."
        if len(report["training_seeds"]) == 1
        else ""
    )
    return [
        "## MMGA against the baselines and peers",
        "",
        "Margin = MMGA's last round minus the other row for macro-F1, the other row minus MMGA for MAE, paired by "
        "training seed: positive means MMGA is ahead. The last round is compared (not the best one on test). "
        "Verdict: **ahead** when the margin is positive for every training seed or its mean exceeds twice the sd "
        "of the per-seed margins; behind by the mirrored rule; otherwise not measurably different."
        + one_seed,
        "",
        *_comparison_table(report["comparison"]),
        "",
    ]


def _method_lines(report: dict[str, Any], cfg: BridgeConfig, paths: RunPaths) -> list[str]:
    """How the rows were made: the downstream heads, the tasks, the variants' rounds and steps, the peers."""
    stage_configs = report["config"]["stages"]
    first = paths.for_seed(report["training_seeds"][0])
    steps1 = stage_configs.get(first.stage_key("mmga", 0, "stage1"), {}).get("trainer", {}).get("max_steps")
    steps2 = stage_configs.get(first.stage_key("mmga", 0, "stage2"), {}).get("trainer", {}).get("max_steps")
    return [
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
        f"- Peers (PyG layers over the no-alignment encoders' [R^T || R^I || X]): `peer_sgc` = "
        f"[F || SF || ... || S^{cfg.eval.sgc_hops}F] with SGC's normalized adjacency S (PyG `SGConv`, no parameters), "
        "then the same heads; `peer_gcn` = a 2-layer PyG `GCNConv` network trained on each task's train split "
        f"(hidden {cfg.eval.gcn_hidden}, dropout {cfg.eval.gcn_dropout}, Adam lr {cfg.eval.gcn_lr}, weight decay in "
        f"{list(cfg.eval.gcn_weight_decays)} chosen on val, early stopping on val loss with patience "
        f"{cfg.eval.gcn_patience}), test scored once per head seed. `peer_gcn` spends the labels inside the graph "
        "model: it is the ceiling a user reaches with the same encoders.",
        *(
            ["- Ablations (`abl_*`): MMGA's recipe with the fields listed in `bridge/variants.py` changed."]
            if cfg.ablations
            else []
        ),
        "",
    ]


def _plot_lines(seeds: list[int], has_losses: bool) -> list[str]:
    """The plots ``write_plots`` drew (loss curves only when there were logs)."""
    return [
        "## Plots",
        "",
        "![metrics by round](metrics_by_round.png)",
        "",
        *(
            [f"![loss curves (seed {seeds[0]})](loss_curves.png)", ""]
            if has_losses
            else ["(no Lightning CSV logs found for loss curves)", ""]
        ),
        "![MMGA's margin over each compared row](margins.png)",
        "",
        f"![t-SNE of MMGA's and no-alignment's user embeddings (seed {seeds[0]})](embedding_tsne.png)",
        "",
    ]


def _timing_and_config_lines(report: dict[str, Any]) -> list[str]:
    """The timings, the machine they were measured on, and the resolved configuration as JSON."""
    return [
        "## Timings",
        "",
        *_timing_table(report["timings"], report["wall_seconds"]),
        "",
        *_environment_lines(report["environment"]),
        "## Resolved configuration",
        "",
        "```json",
        json.dumps(report["config"], indent=2, sort_keys=True),
        "```",
        "",
    ]
