"""``report.md``: the verdict, the results table, the comparison, how the rows were made, the diagnostics, the
plots, and at the end the timings and the resolved configuration; rendered from the typed report."""

from __future__ import annotations

import json
import platform
from typing import Any

import numpy as np

from bridge.evaluation.results import METRICS, TASKS
from bridge.report.build import RunFacts, RunReport
from bridge.report.summary import SECTION_TITLES, Comparison, RowSummary, SeedStat

# (task, metric, label) of the results table's columns
COLUMNS = (
    ("topic", "accuracy", "topic acc"),
    ("topic", "macro_f1", "topic macro-F1"),
    ("fans", "mae", "fans MAE"),
    ("fans", "spearman", "fans Spearman"),
    ("fans", "bucket_accuracy", "fans bucket acc"),
)
VERDICT_WORD = {"ahead": "**ahead**", "behind": "behind", "not measurably": "not measurably", "n/a": "n/a"}


def fmt(stat: SeedStat) -> str:
    if not np.isfinite(stat.mean):
        return "n/a"  # a skipped task or an undefined metric; task_notes says which and why
    return f"{stat.mean:.3f} ± {stat.std:.3f}"


def render_markdown(report: RunReport, facts: RunFacts, has_losses: bool) -> str:
    """report.md from the typed report and the facts of the run that made it."""
    md = [
        *_intro_lines(report, facts),
        *_results_lines(report, facts),
        *_comparison_lines(report),
        *class_lines(report),
        *_method_lines(report, facts),
        *diagnostics_lines(report.diagnostics),
        *_plot_lines(report.training_seeds, has_losses),
        *_timing_and_config_lines(report),
    ]
    return "\n".join(md)


def _intro_lines(report: RunReport, facts: RunFacts) -> list[str]:
    seeds, corpus = report.training_seeds, report.corpus
    return [
        "# MMGA bridge report",
        "",
        f"Run folder `{facts.run_dir}`; corpus `{corpus['path']}` ({corpus['users']} users, {corpus['posts']} posts, "
        f"{corpus['edges']} edges, {corpus['topics']} topics, fingerprint `{corpus['fingerprint'][:12]}`); "
        f"{facts.rounds} round(s), training seeds {', '.join(str(s) for s in seeds)}; {platform.node()}, "
        f"{report.created}.",
        "",
        "## Verdict",
        "",
        *[f"- {line}" for line in report.verdict],
        "",
    ]


def _val_cell(summary: RowSummary, task: str) -> str:
    val = summary.tasks[task].val
    return "n/a" if val is None or not np.isfinite(val.mean) else f"{val.mean:.3f}"


def _results_table(rows: dict[str, RowSummary]) -> list[str]:
    head = (
        "| row | inputs | dim | "
        + " | ".join(label for _, _, label in COLUMNS)
        + " | val macro-F1 | val MAE |"
    )
    lines = [head, "|" + "---|" * (5 + len(COLUMNS))]
    for name, summary in rows.items():
        cells = [fmt(summary.metric(task, metric)) for task, metric, _ in COLUMNS]
        cells += [_val_cell(summary, "topic"), _val_cell(summary, "fans")]
        row = summary.row
        lines.append(
            f"| {row.label} (`{name}`) | {row.inputs} | {summary.dim or ''} | " + " | ".join(cells) + " |"
        )
    return lines


def task_notes(rows: dict[str, RowSummary]) -> list[str]:
    """Lines under the results table that explain each ``n/a``."""
    notes = []
    first = next(iter(rows.values()), None)
    for task in TASKS:
        reason = None if first is None else first.tasks[task].skipped
        if reason:
            notes.append(f"- `{task}`: n/a, the task was skipped: {reason}.")
    undefined = sorted(
        f"`{name}` {task} {metric}"
        for name, summary in rows.items()
        for task in TASKS
        if not summary.tasks[task].skipped
        for metric in METRICS[task]
        if metric in summary.tasks[task].metrics
        and not np.isfinite(next(iter(summary.per_seed.values())).task(task)[metric].mean)
    )
    if undefined:
        notes.append(
            f"- n/a for {', '.join(undefined)}: the metric is undefined there, e.g. Spearman when the heads "
            "predict one value for every user (a constant representation, such as R^I on a corpus without images)."
        )
    return [*notes, ""] if notes else []


def _results_lines(report: RunReport, facts: RunFacts) -> list[str]:
    seeds = report.training_seeds
    n = next(iter(report.rows.values())).tasks
    topic, fans = n["topic"].n, n["fans"].n
    head_seeds = ", ".join(str(s) for s in facts.eval.head_seeds)
    lines = [
        "## Results (test split)",
        "",
        f"Mean ± sample std over {len(seeds)} training seed(s) ({', '.join(str(s) for s in seeds)}): every row "
        f"but X and the frozen encoders' rows (nothing trained) is trained once per seed, and each seed's score is "
        f"the mean over the downstream heads' seeds ({head_seeds}). Every row uses the same splits (topic: "
        f"{topic['train']}/{topic['val']}/{topic['test']} train/val/test users, fans: "
        f"{fans['train']}/{fans['val']}/{fans['test']}). The last two columns are the validation scores the chosen "
        "heads or networks were selected on (mean over seeds), for a look at the val-test gap.",
        "",
    ]
    for section, title in SECTION_TITLES.items():
        rows = {name: s for name, s in report.rows.items() if s.row.section == section}
        if rows:
            lines += [f"### {title}", "", SECTION_NOTES[section], "", *_results_table(rows), ""]
    return [*lines, *task_notes(report.rows)]


SECTION_NOTES = {
    "probe": "Linear heads (and the SGC peers' propagation) on frozen embeddings: the representation is fixed, "
    "only the heads see the labels.",
    "finetuned": "Networks trained end to end on each task's train split, early-stopped on val, learning rate and "
    "weight decay chosen on val, test scored once per head seed. The stage-1 encoders stay frozen here (their "
    "embeddings come from the cache): `mmga_finetuned` trains MMGA's last-round GNN (its pre-trained weights and "
    "gate) plus a linear head, `scratch_finetuned` the same network from random weights.",
    "encoders_sgc": "`peer_sgc`'s own recipe (SGC, K chosen on val, then the linear heads) over MMGA's last-round "
    "encoders' [R^T || R^I || X] instead of the no-alignment or frozen encoders': the pairs differ only in the "
    "encoders, so the margin is what graph alignment buys a user who runs this peer (SimTeG's protocol: tune the "
    "encoder, then feed its embeddings to a standard GNN).",
    "encoders_gcn": "`peer_gcn`'s own recipe (the same 2-layer GCN, grid and early stopping) over MMGA's last-round "
    "encoders' [R^T || R^I || X]; compared with the GCN over the no-alignment and the frozen encoders.",
    "cold_start": "The test users' edges are removed; the trained GNN embeds every user on that graph, so a test "
    "user's R^G comes from its own inputs only (the inductive path of `bridge.embed`). Heads as in the probe. "
    "The encoders were trained on the whole graph, the test users' edges included (training uses no label): this "
    "measures users whose links are missing when they are embedded, not users never seen in training, for which a "
    "graph-trained encoder could only be better through what it learnt from other users.",
    "cold_start_isolated": "As above, but every user's edges are removed, the train users' too: each user's R^G "
    "comes from its own inputs only, so the heads are trained on the kind of embedding they are tested on (in the "
    "section above they are trained on users embedded with their neighbours and tested on users without). This is "
    "the way to serve users who arrive without links: train the downstream heads on your users embedded without "
    "edges. `frozen_cold` has no graph part: the same row as above.",
}


def _comparison_table(comparisons: list[Comparison]) -> list[str]:
    lines = [
        f"| `{comparisons[0].mmga}` vs | topic macro-F1 margin (mean ± sd) | per seed | verdict | fans MAE margin "
        "(mean ± sd) | per seed | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in comparisons:
        cells = []
        for key in ("topic_macro_f1", "fans_mae"):
            m = c.margins[key]
            stat = m.stat
            cells += [
                f"{stat.mean:+.3f} ± {stat.std:.3f} ({m.mmga:.3f} vs {m.other:.3f})",
                " / ".join(f"{v:+.3f}" for v in m.margins),
                VERDICT_WORD[m.verdict],
            ]
        lines.append(f"| `{c.against}` | " + " | ".join(cells) + " |")
    return lines


def _comparison_lines(report: RunReport) -> list[str]:
    one_seed = (
        " With one training seed no training spread is measured: the verdict then only says whether the margin "
        "is positive. Use `--seeds 3` or more for a verdict that means something."
        if len(report.training_seeds) == 1
        else ""
    )
    lines = [
        "## MMGA against the baselines and peers",
        "",
        "Per section, its MMGA row (the linear probe: MMGA's last round, not the best round on test) against each "
        "other row. Margin = MMGA minus the other row for macro-F1, the other row minus MMGA for MAE, paired by "
        "training seed: positive means MMGA is ahead. Verdict: **ahead** when the margin is positive for every "
        "training seed or its mean exceeds twice the sd of the per-seed margins; behind by the mirrored rule; "
        "otherwise not measurably different. A row evaluated once (X, the frozen encoders) is paired with every "
        "seed." + one_seed,
        "",
    ]
    for section, title in SECTION_TITLES.items():
        comparisons = [c for c in report.comparison if c.section == section]
        if comparisons:
            lines += [f"### {title}", "", *_comparison_table(comparisons), ""]
    return lines


def class_f1(summary: RowSummary) -> list[float]:
    """Each topic's test F1, mean over training seeds of the mean over head seeds (empty when not recorded)."""
    per_seed = [ev.topic.per_class_f1 for ev in summary.per_seed.values() if ev.topic.per_class_f1]
    if not per_seed:
        return []
    return [float(np.mean([stats[k].mean for stats in per_seed])) for k in range(len(per_seed[0]))]


def confusion(summary: RowSummary) -> np.ndarray | None:
    """The topic confusion matrix summed over training seeds and head seeds (rows: true, columns: predicted)."""
    matrices = [np.asarray(ev.topic.confusion) for ev in summary.per_seed.values() if ev.topic.confusion]
    return np.sum(matrices, axis=0) if matrices else None


def class_lines(report: RunReport) -> list[str]:
    """Per-topic F1 of MMGA's last round and of the rows it is most often compared with."""
    final = [name for name, s in report.rows.items() if s.row.group == "mmga"][-1]
    names = [n for n in (final, "no_align", "peer_sgc", "peer_gcn") if n in report.rows]
    scores = {n: class_f1(report.rows[n]) for n in names}
    topics = report.corpus.get("topic_names") or []
    if not topics or not all(len(v) == len(topics) for v in scores.values()):
        return []
    lines = [
        "## Topics, class by class",
        "",
        "Test F1 per topic (mean over training seeds and head seeds), and the confusion matrix of MMGA's last round "
        "summed over them in `confusion.png`.",
        "",
        "| topic | " + " | ".join(f"`{n}`" for n in names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for k, topic in enumerate(topics):
        lines.append(f"| {topic} | " + " | ".join(f"{scores[n][k]:.3f}" for n in names) + " |")
    return [*lines, "", "![confusion matrix of MMGA's last round](confusion.png)", ""]


def _method_lines(report: RunReport, facts: RunFacts) -> list[str]:
    """How the rows were made: the heads, the tasks, the variants (their own descriptions), the peers."""
    ev = facts.eval
    mlp = f" (MLP hidden width {ev.hidden}, dropout {ev.dropout})" if "mlp" in ev.heads else ""
    variants = "; ".join(f"`{v.name}`: {v.label}" for v in facts.variants)
    ours = {n: peer for n, peer in (("mmga_sgc", "SGC"), ("mmga_gcn", "GCN")) if n in report.rows}
    over_mmga = (  # the peers over MMGA's encoders (--encoder-peers)
        f" {' / '.join(f'`{n}`' for n in ours)}: the same {' / '.join(ours.values())} over MMGA's last-round "
        "encoders' [R^T || R^I || X]."
        if ours
        else ""
    )
    trained = "the GCN and GATv2 peers" + (", `mmga_gcn`" if "mmga_gcn" in report.rows else "")
    return [
        "## How the rows were made",
        "",
        "- Downstream heads (the linear probe) are trained on frozen embeddings. "
        f"Heads: {' and '.join(ev.heads)}{mlp}, weight decay in {list(ev.weight_decays)}, Adam lr {ev.lr}, at most "
        f"{ev.max_epochs} full-batch epochs with early stopping (patience {ev.patience}) on val; head type and "
        "weight decay chosen per seed on val (macro-F1 for topic, MAE for fans); inputs standardized with train "
        "statistics. Test is scored once per seed with the chosen head.",
        "- Topic: softmax classifier, accuracy and macro-F1. Fans: regression on log(1 + fans) (Huber loss on "
        f"standardized targets); MAE in log(1 + fans) units, Spearman, and accuracy over {ev.fans_buckets} "
        "buckets cut at the train quantiles. Users with an unknown label / fans are left out of that task.",
        f"- Every variant runs {facts.rounds} round(s) with the same per-round steps (stage 1: "
        f"{facts.stage_steps.get('stage1')}, stage 2: {facts.stage_steps.get('stage2')}), each round continuing from "
        "the previous round's checkpoints (but where a variant's label says it starts again), so the baselines get "
        "as many training steps as MMGA (`frozen` trains nothing and runs once). Variants: "
        f"{variants}. `image_only` / `text_only`: the no-alignment encoders' R^I / R^T. `mmga_*` parts: MMGA's "
        "own blocks." + (f" {facts.stage2_reads}" if facts.stage2_reads else ""),
        f"- Peers (PyG layers over the no-alignment encoders' [R^T || R^I || X], or the frozen encoders' for "
        f"`peer_frozen_*`): `peer_sgc` = [F || SF || ... || S^K F] with SGC's normalized adjacency S (PyG `SGConv`, "
        f"no parameters) and K in {list(ev.sgc_hops)} chosen on val with the head and weight decay, then the same "
        f"heads; `peer_gcn` / `peer_gatv2` = a 2-layer PyG `GCNConv` / `GATv2Conv` network (hidden {ev.gcn_hidden}, "
        f"GATv2 with {ev.gat_heads} heads, dropout {ev.gcn_dropout}); `peer_cs` = the linear heads, then PyG "
        f"`CorrectAndSmooth` ({ev.cs_layers} steps each, (correction, smoothing) strengths in "
        f"{[list(a) for a in ev.cs_alphas]} chosen on val).{over_mmga}",
        f"- Every network trained end to end ({trained}, `mmga_finetuned`, `scratch_finetuned`): "
        f"Adam, lr in {list(ev.gcn_lrs)} and weight decay in {list(ev.gcn_weight_decays)} chosen on val, at most "
        f"{ev.gcn_max_epochs} full-batch epochs, early stopping on the val loss (patience {ev.gcn_patience}), one "
        f"network per seed of {list(ev.network_seeds)}, test scored once per network seed.",
        "",
    ]


def diagnostics_lines(diag: dict[str, Any] | None) -> list[str]:
    if diag is None:
        return []
    note = [f"Note: {diag['note']}.", ""] if diag.get("note") else []
    lines = [
        "## Diagnostics: do stage 2's edge weights see topics?",
        "",
        *note,
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
            auc = d["auc_same_topic"]
            cell = "n/a" if not np.isfinite(auc["mean"]) else f"{auc['mean']:.3f} ± {auc['std']:.3f}"
            lines.append(f"| {variant} | {r} | {cell} | {d['mean_same']:.4f} | {d['mean_cross']:.4f} |")
    return [*lines, ""]


def _plot_lines(seeds: tuple[int, ...], has_losses: bool) -> list[str]:
    return [
        "## Plots",
        "",
        "![metrics by round](metrics_by_round.png)",
        "",
        *(
            [f"![loss curves (every training seed; seed {seeds[0]} in full colour)](loss_curves.png)", ""]
            if has_losses
            else ["(no Lightning CSV logs found for loss curves)", ""]
        ),
        "![MMGA's margin over each compared row](margins.png)",
        "",
        f"![t-SNE of MMGA's and no-alignment's user embeddings (seed {seeds[0]})](embedding_tsne.png)",
        "",
    ]


def timings_markdown(report: RunReport) -> str:
    """``timings.md``: every step's seconds, and the machine they were measured on."""
    env = report.environment
    lines = ["# Timings", "", "| step | seconds | when |", "|---|---|---|"]
    for t in report.timings:
        when = "this invocation" if t["ran_now"] else "earlier run"
        lines.append(f"| {t['step']} | {t['seconds']:.1f} | {when} |")
    lines.append(f"| **this invocation, wall time** | {report.wall_seconds:.1f} | |")
    if env:
        lines += [
            "",
            f"Measured with {env.get('torch_threads')} torch thread(s) on {env.get('cpu_count')} CPU core(s); "
            f"1-minute load average {env.get('load_average_1min_start', float('nan')):.1f} at the start and "
            f"{env.get('load_average_1min_end', float('nan')):.1f} at the end (other jobs on the machine slow every "
            "step down). The wall time excludes Python's start-up and imports.",
        ]
    return "\n".join(lines) + "\n"


def _timing_and_config_lines(report: RunReport) -> list[str]:
    """The model card (what made these numbers), a pointer to the timings, and the resolved configuration."""
    prov, corpus = report.provenance, report.corpus
    packages = ", ".join(f"{name} {version}" for name, version in prov["packages"].items())
    ran = sum(1 for t in report.timings if t["ran_now"])
    return [
        "## Model card",
        "",
        f"- Code: git commit `{prov['git_commit']}`; {packages}; {prov['machine']}.",
        f"- Data: corpus `{corpus['path']}`, fingerprint `{corpus['fingerprint']}` ({corpus['users']} users, "
        f"{corpus['posts']} posts, {corpus['edges']} edges, {corpus['topics']} topics).",
        "- Models: the resolved configs below; the checkpoints are in the run folder, under "
        "`seed_<s>/<variant>/round_<r>/stage<k>/checkpoints/` (with `text_encoder/` and `image_encoder/` in "
        "Hugging Face and open_clip form for stage 1).",
        f"- Time: {report.wall_seconds:.0f} s for this invocation ({ran} steps ran now); every step in "
        "[timings.md](timings.md).",
        "",
        "## Resolved configuration",
        "",
        "```json",
        json.dumps(report.config, indent=2, sort_keys=True),
        "```",
        "",
    ]
