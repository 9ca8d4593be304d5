"""Evaluate every report row for every training seed, each evaluation cached in the manifest like a stage."""

from __future__ import annotations

import time
from concurrent.futures import Future, as_completed
from pathlib import Path
from typing import Any

import numpy as np

from bridge.evaluation.config import EvalConfig
from bridge.evaluation.results import Evaluation, Stat
from bridge.evaluation.rows import Row, cold_edges, report_rows, representation
from bridge.rounds.context import BridgeRun
from bridge.runfolder import Manifest, RunPaths
from bridge.runfolder.caches import read_encoders
from corpus import Corpus

# What one evaluation of each kind costs, in units of a linear probe (about 1.5 ms per user on this project's
# 2-core machine): measured on the default run, 5 training seeds, 2026-12-03 (docs/bridge.md, "Time"). The run's
# time estimate weighs the evaluations by it, and the costliest are started first.
EVAL_COST = {"probe": 1.0, "sgc": 3.0, "cs": 2.5, "gcn": 7.0, "gatv2": 40.0, "finetune": 12.0}


def evaluate_one(
    row: Row, corpus: Corpus, paths: RunPaths, cfg: EvalConfig, checkpoint: Path | None = None
) -> Evaluation:
    """The row's :class:`Evaluation` for the training seed of ``paths``. The fine-tuned and cold-start rows read
    their variant's stage-2 ``checkpoint`` (:func:`stage2_checkpoint`)."""
    from bridge.evaluation.heads import evaluate_representation
    from bridge.evaluation.networks import evaluate_network
    from bridge.evaluation.peers import evaluate_cs, evaluate_gnn, evaluate_sgc, peer_grid

    if row.method == "finetune":
        make, dim = finetune_network(row, corpus, paths, checkpoint)
        grid = peer_grid("finetuned", cfg)
        args = (corpus.labels, corpus.fans, corpus.splits, cfg.fans_buckets, grid, dim, cfg.device)
        return evaluate_network(make, *args)
    graph_emb = (
        cold_graph_embedding(row, corpus, paths, checkpoint) if row.cold and "graph" in row.parts else None
    )
    x = representation(row, corpus, paths, graph_emb)
    args = (x, corpus.edges, corpus.labels, corpus.fans, corpus.splits, cfg)
    if row.method in ("gcn", "gatv2"):
        return evaluate_gnn(row.method, *args)
    if row.method == "sgc":
        return evaluate_sgc(*args)
    if row.method == "cs":
        return evaluate_cs(*args)
    return evaluate_representation(x, corpus.labels, corpus.fans, corpus.splits, cfg)


def stage2_checkpoint(row: Row, paths: RunPaths, manifest: Manifest) -> Path | None:
    """The stage-2 checkpoint a fine-tuned or cold-start row reads (None for the other rows)."""
    if row.method != "finetune" and not (row.cold and "graph" in row.parts):
        return None
    return Path(manifest.outputs(paths.stage_key(row.variant, row.round, "stage2"))["checkpoint"])


def _checkpoint(row: Row, checkpoint: Path | None) -> Path:
    if checkpoint is None:
        raise ValueError(f"row {row.name} reads a stage-2 checkpoint: pass it")
    return checkpoint


def _encoder_embeddings(row: Row, corpus: Corpus, paths: RunPaths):
    return read_encoders(paths.cache_dir(row.variant), row.round, corpus) if "text" in row.parts else None


def finetune_network(row: Row, corpus: Corpus, paths: RunPaths, checkpoint: Path | None):
    """The row's network factory for ``bridge.evaluation.networks`` (built by stage 2 from the row's checkpoint,
    ``stage2_graph.finetune``) and the width of its inputs."""
    from stage2_graph.finetune import finetune_factory

    embeddings = _encoder_embeddings(row, corpus, paths)
    build = finetune_factory(
        _checkpoint(row, checkpoint),
        corpus.features,
        corpus.edges,
        corpus.fingerprint,
        embeddings,
        row.init or "pretrained",
    )

    def make(targets, seed: int, lr: float):
        return build(targets.out_dim)

    widths = corpus.features.shape[1] + (
        0 if embeddings is None else embeddings.user_text_emb.shape[1] + embeddings.user_image_emb.shape[1]
    )
    return make, widths


def cold_graph_embedding(row: Row, corpus: Corpus, paths: RunPaths, checkpoint: Path | None) -> np.ndarray:
    """R^G ``[N, D]`` of the row's trained stage 2 on the corpus graph without the test users' edges
    (``cold_edges``): every test user is embedded from its own inputs only, by the inductive path that
    ``bridge.embed`` serves new users with (``stage2_graph.infer``). For an ``isolated`` row, on no edges at all:
    every user, the train users too, is embedded from its own inputs only."""
    from stage2_graph.infer import infer_graph_outputs

    if row.isolated:
        edges, tag = corpus.edges[:0], "isolated"
    else:
        edges, tag = cold_edges(corpus.edges, corpus.splits), "cold"
    _, graph = infer_graph_outputs(
        _checkpoint(row, checkpoint),
        corpus.features,
        edges,
        f"{corpus.fingerprint}-{tag}",
        _encoder_embeddings(row, corpus, paths),
    )
    return graph.user_graph_emb


def _mean_sd(values: list[float]) -> str:
    stat = Stat.of(values)
    return f"{stat.mean:.3f} ± {stat.std:.3f}"


def _evaluate_job(
    row: Row,
    corpus: Corpus | None,
    corpus_root: str,
    paths: RunPaths,
    cfg: EvalConfig,
    checkpoint: Path | None,
) -> tuple[Evaluation, float]:
    """One (row, training seed) evaluation and its seconds, in this process (``corpus`` given) or in a worker
    (which loads ``corpus_root`` once, ``bridge.rounds.stages.process_corpus``)."""
    from bridge.rounds.stages import process_corpus

    start = time.perf_counter()
    corpus = corpus if corpus is not None else process_corpus(corpus_root)
    out = evaluate_one(row, corpus, paths, cfg, checkpoint)
    return out, time.perf_counter() - start


def evaluate_rows(
    run: BridgeRun, corpus: Corpus, jobs: int = 1
) -> tuple[list[Row], dict[str, dict[int | None, Evaluation]]]:
    """Every report row for every training seed: the rows and ``{row: {seed: Evaluation}}`` (rows without a
    trained variant, X, under the key None). A complete evaluation is read back from the manifest; the others
    run in up to ``jobs`` worker processes (results do not depend on it: each evaluation is single-threaded and
    seeded), and only this process reads and writes the manifest."""
    from bridge.rounds.schedule import InlineExecutor, executor

    cfg = run.cfg
    rows = report_rows(cfg.rounds, cfg.baselines, cfg.ablations, cfg.finetune, cfg.encoder_peers)
    pairs = [(row, seed) for row in rows for seed in (cfg.training_seeds if row.seeded else (None,))]
    planned: list[tuple[Row, int | None, RunPaths, Any, dict, bool]] = []
    for row, seed in pairs:
        # a row evaluated once reads its variant's (once-run) outputs from the first training seed's folder
        if seed is not None:
            seed_paths = run.paths.for_seed(seed)
        else:
            seed_paths = run.paths.for_seed(cfg.training_seeds[0]) if row.variant else run.paths
        key = seed_paths.eval_key(row.name, row.round)
        recorded = {
            "row": row.spec(),
            "eval": cfg.eval,
            "inputs": {str(dep): run.manifest.entry_digest(dep) for dep in row.depends_on(seed_paths)},
        }
        # an evaluation is cheap and derived: one made with another eval config is recomputed, never a conflict
        todo = not run.manifest.is_complete(key, recorded, corpus.fingerprint, force=True)
        planned.append((row, seed, seed_paths, key, recorded, todo))
    results: dict[int, Evaluation] = {}
    left = {row.name: 0 for row in rows}
    for p in planned:
        left[p[0].name] += 1

    def done(i: int, out: Evaluation, seconds: float, ran: bool) -> None:
        row, seed, _, key, recorded, _ = planned[i]
        if ran:  # recorded as soon as it is done: an interrupted run keeps every finished evaluation
            run.manifest.record(key, recorded, corpus.fingerprint, metrics=out.to_json(), seconds=seconds)
        results[i] = out
        run.note_step(str(key), ran, seconds)
        run.console.detail(
            f"  [eval {len(results)}/{len(planned)}] {row.name:18s} {'' if seed is None else f'seed {seed}':8s} "
            f"topic macro-F1 {out.topic['macro_f1'].mean:.3f}  fans MAE {out.fans['mae'].mean:.3f}"
            + ("" if ran else "  (cached)")
        )
        left[row.name] -= 1
        if not left[row.name]:
            outs = [results[j] for j, q in enumerate(planned) if q[0].name == row.name]
            f1 = [v.topic["macro_f1"].mean for v in outs]
            mae = [v.fans["mae"].mean for v in outs]
            run.console.info(
                f"[eval] {row.name:18s} topic macro-F1 {_mean_sd(f1)}   fans MAE {_mean_sd(mae)}"
                + ("" if row.seeded else "   (no training seed)")
            )

    for i, (_, _, _, key, _, todo) in enumerate(planned):
        if not todo:
            entry = run.manifest.entry(key)
            done(i, Evaluation.from_json(entry.metrics), entry.seconds, False)
    # the costliest first (longest processing time first): the last evaluations are then short ones, so no
    # worker idles long at the end while another finishes a GATv2 peer
    order = sorted(
        (i for i, p in enumerate(planned) if p[5]), key=lambda i: -EVAL_COST.get(planned[i][0].method, 1.0)
    )
    with executor(jobs, run.console.verbose) as pool:
        running: dict[Future, int] = {}
        for i in order:
            row, _, seed_paths, *_ = planned[i]
            shared = corpus if isinstance(pool, InlineExecutor) else None
            checkpoint = stage2_checkpoint(row, seed_paths, run.manifest)
            future = pool.submit(
                _evaluate_job, row, shared, str(corpus.root), seed_paths, cfg.eval, checkpoint
            )
            running[future] = i
        for future in as_completed(running):
            out, seconds = future.result()
            done(running[future], out, seconds, True)
    evaluated: dict[str, dict[int | None, Evaluation]] = {}
    for i, (row, seed, *_) in enumerate(planned):  # in row and seed order, however they finished
        evaluated.setdefault(row.name, {})[seed] = results[i]
    return rows, evaluated
