"""The round loop as a library: corpus, every variant's rounds, evaluation, report (CLI: ``bridge.alternate``).

Round r of MMGA: stage 1 continues from round r-1's encoder checkpoint and (from round 1 on) weights its
graph-contrastive positives by the edge weights stage 2 wrote in round r-1, exporting R^I and R^T to round
r's cache; stage 2 continues from round r-1's GNN checkpoint, reads round r's embeddings and writes R^G,
the gates and the edge weights to round r's cache. The baselines run the same rounds and steps (see
``bridge.stages``). Each step is recorded in the run's manifest; a rerun skips the complete ones.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from bridge import stages
from bridge.config import BridgeConfig, BridgeConfigError, deep_merge
from bridge.evaluate import evaluate_representation
from bridge.lock import holding_run_lock
from bridge.manifest import Manifest
from bridge.ownership import generate_owned
from bridge.paths import RunPaths
from bridge.report import write_report
from bridge.rows import Row, report_rows, representation
from bridge.tasks import check_corpus_can_finish
from corpus import Corpus, load_corpus
from corpus.synthetic import SyntheticConfig

# The embedded synthetic corpus generated when no --corpus is given (sized for the 10-minute default run).
SYNTHETIC_DEFAULTS: dict[str, Any] = {"num_users": 1000}
CORPUS_KEY = "corpus/generate"


@dataclass
class BridgeResult:
    """What a bridge run produced."""

    run_dir: Path
    report: Path
    metrics: dict[str, Any]
    timings: list[dict[str, Any]] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)  # manifest keys computed in this invocation
    skipped: list[str] = field(default_factory=list)  # manifest keys found complete


def _log(message: str) -> None:
    print(message, flush=True)


def synthetic_config(cfg: BridgeConfig) -> SyntheticConfig:
    """The generator's knobs: the bridge's defaults with the user's ``synthetic`` section on top."""
    knobs = deep_merge(SYNTHETIC_DEFAULTS, cfg.synthetic)
    known = {f.name for f in fields(SyntheticConfig)}
    for name in knobs:
        if name not in known:
            raise BridgeConfigError(f"synthetic: unknown knob '{name}' (known: {', '.join(sorted(known))})")
    synth = SyntheticConfig(**knobs)
    try:
        synth.check()
    except ValueError as err:
        raise BridgeConfigError(f"synthetic: {err}") from err
    return synth


def prepare_corpus(
    cfg: BridgeConfig, paths: RunPaths, manifest: Manifest, result: BridgeResult, force: bool
) -> tuple[Corpus, float]:
    """Load ``--corpus``, or generate the synthetic corpus into the run folder once (manifest key
    ``corpus/generate``) and load it."""
    seconds = 0.0
    if cfg.corpus is not None:
        corpus_dir = Path(cfg.corpus)
    else:
        corpus_dir = paths.generated_corpus
        synth = synthetic_config(cfg)
        recorded = {"synthetic": asdict(synth)}
        names = ("users.csv", "posts.jsonl", "edges.csv")
        if manifest.is_complete(CORPUS_KEY, recorded, "", force=force):
            _log(f"[corpus] {corpus_dir} already generated (skipped)")
            result.skipped.append(CORPUS_KEY)
            seconds = float(manifest.get(CORPUS_KEY).get("seconds") or 0.0)
        else:
            _log(f"[corpus] generating the synthetic corpus ({synth.num_users} users) into {corpus_dir}")
            start = time.perf_counter()
            generate_owned(corpus_dir, synth, manifest, CORPUS_KEY)  # never removes files it did not write
            seconds = time.perf_counter() - start
            manifest.record(
                CORPUS_KEY, recorded, "", outputs={"corpus": corpus_dir},
                hash_files={n: corpus_dir / n for n in names}, seconds=seconds,
            )  # fmt: skip
            result.ran.append(CORPUS_KEY)
            _log(f"[corpus] generated in {seconds:.1f} s")
    start = time.perf_counter()
    corpus = load_corpus(corpus_dir)
    _log(
        f"[corpus] {corpus_dir}: {corpus.num_users} users, {corpus.num_posts} posts, {corpus.num_edges} edges "
        f"(loaded in {time.perf_counter() - start:.1f} s)"
    )
    check_corpus_can_finish(corpus, _log)  # before the corpus is recorded or anything trains
    manifest.bind_corpus(corpus_dir, corpus.fingerprint, force=force)
    return corpus, seconds


def variants(cfg: BridgeConfig) -> tuple[str, ...]:
    return ("mmga", "no_align", "graph_only") if cfg.baselines else ("mmga",)


def run_stages(
    cfg: BridgeConfig, paths: RunPaths, manifest: Manifest, corpus: Corpus, result: BridgeResult, force: bool
) -> None:
    """Every variant's rounds, in order; each stage is skipped when its complete outputs exist."""
    plan = [
        (variant, r, stage)
        for variant in variants(cfg)
        for r in range(cfg.rounds)
        for stage in (("stage2",) if variant == "graph_only" else ("stage1", "stage2"))
    ]
    for i, (variant, r, stage) in enumerate(plan, 1):
        run = stages.plan_stage(stage, cfg, paths, corpus.root, variant, r, manifest)
        _log(f"[{i}/{len(plan)}] {variant} round {r} {stage} ...")
        ran, seconds = stages.execute(run, manifest, corpus, force=force)
        (result.ran if ran else result.skipped).append(run.key)
        result.timings.append({"step": run.key, "seconds": seconds, "ran_now": ran})
        _log(f"[{i}/{len(plan)}] {variant} round {r} {stage}: {'done' if ran else 'complete before, skipped'} "
             f"({seconds:.1f} s)")  # fmt: skip


def evaluate_rows(
    cfg: BridgeConfig, paths: RunPaths, manifest: Manifest, corpus: Corpus, result: BridgeResult, force: bool
) -> tuple[list[Row], dict[str, Any]]:
    """Evaluate every report row (cached in the manifest like the stages)."""
    rows = report_rows(cfg.rounds, cfg.baselines)
    evaluated: dict[str, Any] = {}
    for i, row in enumerate(rows, 1):
        key = paths.eval_key(row.name, row.round)
        recorded = {
            "row": row.spec(),
            "eval": cfg.eval,
            "inputs": {dep: manifest.entry_digest(dep) for dep in row.depends_on(paths)},
        }
        if manifest.is_complete(key, recorded, corpus.fingerprint, force=force):
            evaluated[row.name] = manifest.get(key)["metrics"]
            seconds = float(manifest.get(key).get("seconds") or 0.0)
            result.skipped.append(key)
            ran = False
        else:
            start = time.perf_counter()
            x = representation(row, corpus, paths)
            evaluated[row.name] = evaluate_representation(
                x, corpus.labels, corpus.fans, corpus.splits, cfg.eval
            )
            evaluated[row.name]["dim"] = int(x.shape[1])
            seconds = time.perf_counter() - start
            manifest.record(key, recorded, corpus.fingerprint, metrics=evaluated[row.name], seconds=seconds)
            result.ran.append(key)
            ran = True
        result.timings.append({"step": key, "seconds": seconds, "ran_now": ran})
        topic, fans = evaluated[row.name]["topic"], evaluated[row.name]["fans"]
        _log(
            f"[eval {i}/{len(rows)}] {row.label:38s} topic macro-F1 {topic['macro_f1']['mean']:.3f}  "
            f"fans MAE {fans['mae']['mean']:.3f}{'' if ran else '  (cached)'}"
        )
    return rows, evaluated


@holding_run_lock
def run_bridge(cfg: BridgeConfig, run_dir: Path, force: bool = False) -> BridgeResult:
    """Run (or resume) everything: corpus, every variant's rounds, evaluation, report."""
    start = time.perf_counter()
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    paths = RunPaths(Path(run_dir).resolve())
    paths.run_dir.mkdir(parents=True, exist_ok=True)
    manifest = Manifest.load(paths.manifest)
    result = BridgeResult(run_dir=paths.run_dir, report=paths.report_dir / "report.md", metrics={})
    _log(f"MMGA bridge: {cfg.rounds} round(s), run folder {paths.run_dir}")
    corpus, corpus_seconds = prepare_corpus(cfg, paths, manifest, result, force)
    result.timings.append(
        {"step": CORPUS_KEY, "seconds": corpus_seconds, "ran_now": CORPUS_KEY in result.ran}
    )
    run_stages(cfg, paths, manifest, corpus, result, force)
    rows, evaluated = evaluate_rows(cfg, paths, manifest, corpus, result, force)
    environment = {
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        # other jobs on the machine change the timings a lot: the 1-minute load average says how busy it was
        "load_average_1min_start": load_start,
        "load_average_1min_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan"),
    }
    result.metrics = write_report(
        cfg,
        paths,
        manifest,
        corpus,
        rows,
        evaluated,
        result.timings,
        time.perf_counter() - start,
        environment,
    )
    return result
