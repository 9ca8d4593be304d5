"""The round loop as a library: corpus, every variant's rounds, evaluation, report (CLI: ``bridge.alternate``).

Every variant is trained once per training seed (``--seeds``). Round r of MMGA: stage 1 continues from round r-1's encoder checkpoint and (from round 1 on) weights its
graph-contrastive positives by the edge weights stage 2 wrote in round r-1, exporting R^I and R^T to round
r's cache; stage 2 continues from round r-1's GNN checkpoint, reads round r's embeddings and writes R^G,
the gates and the edge weights to round r's cache. The baselines run the same rounds and steps (see
``bridge.stages``). Each step is recorded in the run's manifest; a rerun skips the complete ones.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from bridge import stages
from bridge.config import BridgeConfig
from bridge.console import Console, estimate_seconds, minutes
from bridge.evaluate import evaluate_representation
from bridge.lock import holding_run_lock
from bridge.manifest import Manifest
from bridge.ownership import generate_owned
from bridge.paths import RunPaths
from bridge.peers import evaluate_gcn
from bridge.report import ReportInputs, write_report
from bridge.rows import Row, report_rows, representation
from bridge.schedule import build_chains, run_chains
from bridge.tasks import check_corpus_can_finish
from bridge.variants import run_variants
from bridge.verdict import over_seeds
from corpus import Corpus, load_corpus
from corpus.synthetic import SyntheticConfig
from mmga_common.config import ConfigError, deep_merge, from_dict

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


@dataclass
class BridgeRun:
    """What every step of one bridge invocation shares; ``run_bridge`` builds it once.

    Attributes:
        cfg: the resolved bridge configuration.
        paths: the run folder's layout.
        manifest: the run's manifest (what is complete, with which inputs).
        result: what this invocation ran, skipped and timed so far (filled in as it goes).
        force: recompute what is complete.
        console: where progress goes (its verbosity).
    """

    cfg: BridgeConfig
    paths: RunPaths
    manifest: Manifest
    result: BridgeResult
    force: bool = False
    console: Console = field(default_factory=Console)


def synthetic_config(cfg: BridgeConfig) -> SyntheticConfig:
    """The generator's knobs: the bridge's defaults with the user's ``synthetic`` section on top."""
    source = "bridge config"
    synth = from_dict(
        SyntheticConfig, deep_merge(SYNTHETIC_DEFAULTS, cfg.synthetic), source, prefix="synthetic."
    )
    try:
        synth.check()
    except ValueError as err:
        raise ConfigError(source, None, "synthetic", str(err)) from err
    return synth


def prepare_corpus(run: BridgeRun) -> tuple[Corpus, float]:
    """Load ``--corpus``, or generate the synthetic corpus into the run folder once (manifest key
    ``corpus/generate``) and load it."""
    seconds = 0.0
    if run.cfg.corpus is not None:
        corpus_dir = Path(run.cfg.corpus)
    else:
        corpus_dir = run.paths.generated_corpus
        synth = synthetic_config(run.cfg)
        recorded = {"synthetic": asdict(synth)}
        names = ("users.csv", "posts.jsonl", "edges.csv")
        if run.manifest.is_complete(CORPUS_KEY, recorded, "", force=run.force):
            run.console.detail(f"[corpus] {corpus_dir} already generated (skipped)")
            run.result.skipped.append(CORPUS_KEY)
            seconds = float(run.manifest.get(CORPUS_KEY).get("seconds") or 0.0)
        else:
            run.console.detail(
                f"[corpus] generating the synthetic corpus ({synth.num_users} users) into {corpus_dir}"
            )
            start = time.perf_counter()
            generate_owned(
                corpus_dir, synth, run.manifest, CORPUS_KEY
            )  # never removes files it did not write
            seconds = time.perf_counter() - start
            run.manifest.record(
                CORPUS_KEY, recorded, "", outputs={"corpus": corpus_dir},
                hash_files={n: corpus_dir / n for n in names}, seconds=seconds,
            )  # fmt: skip
            run.result.ran.append(CORPUS_KEY)
            run.console.info(
                f"[corpus] generated the synthetic corpus ({synth.num_users} users) in {seconds:.1f} s"
            )
    start = time.perf_counter()
    corpus = load_corpus(corpus_dir)
    run.console.info(
        f"[corpus] {corpus_dir}: {corpus.num_users} users, {corpus.num_posts} posts, {corpus.num_edges} edges "
        f"(loaded in {time.perf_counter() - start:.1f} s)"
    )
    check_corpus_can_finish(corpus, run.console.always)  # before the corpus is recorded or anything trains
    run.manifest.bind_corpus(corpus_dir, corpus.fingerprint, force=run.force)
    return corpus, seconds


def run_stages(run: BridgeRun, corpus: Corpus, jobs: int = 1) -> None:
    """Every (training seed, variant)'s rounds; each stage is skipped when its complete outputs exist."""
    cfg, result = run.cfg, run.result
    chains = build_chains(cfg.training_seeds, run_variants(cfg.baselines, cfg.ablations), cfg.rounds)

    def on_step(key: str, ran: bool, seconds: float) -> None:
        (result.ran if ran else result.skipped).append(key)
        result.timings.append({"step": key, "seconds": seconds, "ran_now": ran})

    run_chains(cfg, run.paths, run.manifest, corpus, chains, run.force, jobs, run.console, on_step)


def _evaluate_one(row: Row, corpus: Corpus, paths: RunPaths, cfg: BridgeConfig) -> dict[str, Any]:
    x = representation(row, corpus, paths, sgc_hops=cfg.eval.sgc_hops)
    if row.peer == "gcn":
        out = evaluate_gcn(x, corpus.edges, corpus.labels, corpus.fans, corpus.splits, cfg.eval)
    else:
        out = evaluate_representation(x, corpus.labels, corpus.fans, corpus.splits, cfg.eval)
    out["dim"] = int(x.shape[1])
    return out


def evaluate_rows(run: BridgeRun, corpus: Corpus) -> tuple[list[Row], dict[str, Any]]:
    """Evaluate every report row for every training seed (cached in the manifest like the stages).

    Returns the rows and ``{row: {seed: evaluation}}`` (rows without a trained variant, X, under the key None).
    """
    rows = report_rows(run.cfg.rounds, run.cfg.baselines, run.cfg.ablations)
    evaluated: dict[str, dict[int | None, Any]] = {}
    jobs = [(row, seed) for row in rows for seed in (run.cfg.training_seeds if row.seeded else (None,))]
    for i, (row, seed) in enumerate(jobs, 1):
        seed_paths = run.paths.for_seed(seed) if seed is not None else run.paths
        key = seed_paths.eval_key(row.name, row.round)
        recorded = {
            "row": row.spec(),
            "eval": run.cfg.eval,
            "inputs": {dep: run.manifest.entry_digest(dep) for dep in row.depends_on(seed_paths)},
        }
        if run.manifest.is_complete(key, recorded, corpus.fingerprint, force=run.force):
            out = run.manifest.get(key)["metrics"]
            seconds = float(run.manifest.get(key).get("seconds") or 0.0)
            run.result.skipped.append(key)
            ran = False
        else:
            start = time.perf_counter()
            out = _evaluate_one(row, corpus, seed_paths, run.cfg)
            seconds = time.perf_counter() - start
            run.manifest.record(key, recorded, corpus.fingerprint, metrics=out, seconds=seconds)
            run.result.ran.append(key)
            ran = True
        evaluated.setdefault(row.name, {})[seed] = out
        run.result.timings.append({"step": key, "seconds": seconds, "ran_now": ran})
        topic, fans = out["topic"], out["fans"]
        run.console.detail(
            f"  [eval {i}/{len(jobs)}] {row.name:18s} {'' if seed is None else f'seed {seed}':8s} topic macro-F1 "
            f"{topic['macro_f1']['mean']:.3f}  fans MAE {fans['mae']['mean']:.3f}{'' if ran else '  (cached)'}"
        )
        if seed is None or seed == run.cfg.training_seeds[-1]:
            f1 = [v["topic"]["macro_f1"]["mean"] for v in evaluated[row.name].values()]
            mae = [v["fans"]["mae"]["mean"] for v in evaluated[row.name].values()]
            run.console.info(
                f"[eval] {row.name:18s} topic macro-F1 {_mean_sd(f1)}   fans MAE {_mean_sd(mae)}"
                + ("" if row.seeded else "   (no training seed)")
            )
    return rows, evaluated


def _mean_sd(values: list[float]) -> str:
    stat = over_seeds(values)
    return f"{stat['mean']:.3f} ± {stat['std']:.3f}"


def header(cfg: BridgeConfig, paths: RunPaths, jobs: int, configs: dict[tuple[str, str], Any]) -> list[str]:
    """What the run will do and roughly how long it takes, and the one note on random ViT weights.

    ``configs``: the stage configs from :func:`bridge.stages.check_stage_configs`."""
    variants = run_variants(cfg.baselines, cfg.ablations)
    s1, s2 = configs[("mmga", "stage1")], configs[("mmga", "stage2")]
    stage1_runs = cfg.seeds * cfg.rounds * sum(v.has_stage1 for v in variants)
    stage2_runs = cfg.seeds * cfg.rounds * len(variants)
    rows = report_rows(cfg.rounds, cfg.baselines, cfg.ablations)
    evaluations = sum(cfg.seeds if r.seeded else 1 for r in rows)
    users = (
        int(deep_merge(SYNTHETIC_DEFAULTS, cfg.synthetic).get("num_users", 0)) if cfg.corpus is None else 1000
    )
    eta = estimate_seconds(users, stage1_runs, stage2_runs, evaluations, jobs, s1.trainer.max_steps,
                           s2.trainer.max_steps)  # fmt: skip
    lines = [
        f"MMGA bridge: {len(variants)} variant(s) ({', '.join(v.name for v in variants)}) x {cfg.rounds} round(s) "
        f"x {cfg.seeds} training seed(s) ({', '.join(str(s) for s in cfg.training_seeds)}) = {stage1_runs} stage-1 "
        f"and {stage2_runs} stage-2 runs, then {evaluations} evaluations; {jobs} job(s).",
        f"  run folder {paths.run_dir}; roughly {minutes(eta)} on a 2-core CPU"
        + (" for a 1,000-user corpus" if cfg.corpus is not None else "")
        + " (a rerun skips what is complete).",
    ]
    if not s1.model.image_pretrained:
        lines.append(
            f"  The ViT ({s1.model.image_model}) starts from random weights; for pretrained ones pass "
            "--stage1 model.image_model=NAME --stage1 model.image_pretrained=TAG_OR_FILE (an open_clip name and tag)."
        )
    return lines


@holding_run_lock
def run_bridge(
    cfg: BridgeConfig, run_dir: Path, force: bool = False, jobs: int = 1, console: Console | None = None
) -> BridgeResult:
    """Run (or resume) everything: corpus, every (training seed, variant)'s rounds, evaluation, report.

    ``jobs``: worker processes for the stage chains (1 = everything in this process); results do not depend on it.
    """
    console = console or Console()
    start = time.perf_counter()
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    paths = RunPaths(Path(run_dir).resolve())
    configs = stages.check_stage_configs(cfg)
    paths.run_dir.mkdir(parents=True, exist_ok=True)
    manifest = Manifest.load(paths.manifest)
    result = BridgeResult(run_dir=paths.run_dir, report=paths.report_dir / "report.md", metrics={})
    for line in header(cfg, paths, jobs, configs):
        console.info(line)
    run = BridgeRun(cfg, paths, manifest, result, force, console)
    corpus, corpus_seconds = prepare_corpus(run)
    result.timings.append(
        {"step": CORPUS_KEY, "seconds": corpus_seconds, "ran_now": CORPUS_KEY in result.ran}
    )
    run_stages(run, corpus, jobs)
    rows, evaluated = evaluate_rows(run, corpus)
    environment = {
        "torch_threads": torch.get_num_threads(),
        "jobs": jobs,
        "cpu_count": os.cpu_count(),
        # other jobs on the machine change the timings a lot: the 1-minute load average says how busy it was
        "load_average_1min_start": load_start,
        "load_average_1min_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan"),
    }
    inputs = ReportInputs(
        cfg=cfg,
        paths=paths,
        manifest=manifest,
        corpus=corpus,
        rows=rows,
        evaluated=evaluated,
        timings=result.timings,
        total_seconds=time.perf_counter() - start,
        environment=environment,
    )
    result.metrics = write_report(inputs)
    return result
