"""Evaluate every report row for every training seed, each evaluation cached in the manifest like a stage."""

from __future__ import annotations

import time

from bridge.evaluation.config import EvalConfig
from bridge.evaluation.results import Evaluation, Stat
from bridge.evaluation.rows import Row, report_rows, representation
from bridge.rounds.context import BridgeRun
from bridge.runfolder import RunPaths
from corpus import Corpus


def evaluate_one(row: Row, corpus: Corpus, paths: RunPaths, cfg: EvalConfig) -> Evaluation:
    """The row's :class:`Evaluation` for the training seed of ``paths``."""
    from bridge.evaluation.heads import evaluate_representation
    from bridge.evaluation.peers import evaluate_gcn, evaluate_sgc

    x = representation(row, corpus, paths)
    evaluate = {"gcn": evaluate_gcn, "sgc": evaluate_sgc}.get(row.peer)
    if evaluate is not None:
        return evaluate(x, corpus.edges, corpus.labels, corpus.fans, corpus.splits, cfg)
    return evaluate_representation(x, corpus.labels, corpus.fans, corpus.splits, cfg)


def _mean_sd(values: list[float]) -> str:
    stat = Stat.of(values)
    return f"{stat.mean:.3f} ± {stat.std:.3f}"


def evaluate_rows(
    run: BridgeRun, corpus: Corpus
) -> tuple[list[Row], dict[str, dict[int | None, Evaluation]]]:
    """Every report row for every training seed: the rows and ``{row: {seed: Evaluation}}`` (rows without a
    trained variant, X, under the key None). A complete evaluation is read back from the manifest."""
    cfg = run.cfg
    rows = report_rows(cfg.rounds, cfg.baselines, cfg.ablations)
    evaluated: dict[str, dict[int | None, Evaluation]] = {}
    jobs = [(row, seed) for row in rows for seed in (cfg.training_seeds if row.seeded else (None,))]
    for i, (row, seed) in enumerate(jobs, 1):
        seed_paths = run.paths.for_seed(seed) if seed is not None else run.paths
        key = seed_paths.eval_key(row.name, row.round)
        recorded = {
            "row": row.spec(),
            "eval": cfg.eval,
            "inputs": {str(dep): run.manifest.entry_digest(dep) for dep in row.depends_on(seed_paths)},
        }
        # an evaluation is cheap and derived: one made with another eval config is recomputed, never a conflict
        if run.manifest.is_complete(key, recorded, corpus.fingerprint, force=True):
            entry = run.manifest.entry(key)
            out, seconds, ran = Evaluation.from_json(entry.metrics), entry.seconds, False
        else:
            start = time.perf_counter()
            out = evaluate_one(row, corpus, seed_paths, cfg.eval)
            seconds, ran = time.perf_counter() - start, True
            run.manifest.record(key, recorded, corpus.fingerprint, metrics=out.to_json(), seconds=seconds)
        evaluated.setdefault(row.name, {})[seed] = out
        run.note_step(str(key), ran, seconds)
        run.console.detail(
            f"  [eval {i}/{len(jobs)}] {row.name:18s} {'' if seed is None else f'seed {seed}':8s} topic macro-F1 "
            f"{out.topic['macro_f1'].mean:.3f}  fans MAE {out.fans['mae'].mean:.3f}{'' if ran else '  (cached)'}"
        )
        if seed is None or seed == cfg.training_seeds[-1]:
            f1 = [v.topic["macro_f1"].mean for v in evaluated[row.name].values()]
            mae = [v.fans["mae"].mean for v in evaluated[row.name].values()]
            run.console.info(
                f"[eval] {row.name:18s} topic macro-F1 {_mean_sd(f1)}   fans MAE {_mean_sd(mae)}"
                + ("" if row.seeded else "   (no training seed)")
            )
    return rows, evaluated
