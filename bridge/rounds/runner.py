"""The round loop as a library: corpus, every variant's rounds, evaluation, report (CLI: ``bridge.alternate``).

Every variant is trained once per training seed (``--seeds``). Round r of MMGA: stage 1 continues from round r-1's
encoder checkpoint and (from round 1 on) weights its graph-contrastive positives by the edge weights stage 2 wrote
in round r-1, exporting R^I and R^T to round r's cache; stage 2 continues from round r-1's GNN checkpoint, reads
round r's embeddings and writes R^G, the gates and the edge weights to round r's cache. The baselines run the same
rounds and steps (see ``bridge.rounds.stages``). Each step is recorded in the run's manifest; a rerun skips the
complete ones.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bridge.report import ReportInputs, RunFacts, write_report
from bridge.report.tracking import log_evaluations
from bridge.rounds.config import BridgeConfig
from bridge.rounds.console import (
    Console,
    estimate_seconds,
    image_states_seconds,
    minutes,
    stage1_costs,
    stage_seconds,
    states_seconds,
)
from bridge.rounds.context import BridgeResult, BridgeRun
from bridge.rounds.corpus import prepare_corpus
from bridge.rounds.evaluate import EVAL_COST, evaluate_rows
from bridge.rounds.schedule import run_chains
from bridge.rounds.stages import StageTemplates, check_stage_configs, frozen_image_trunk
from bridge.runfolder import Manifest, RunPaths, run_lock, to_jsonable


@dataclass(frozen=True)
class RunSize:
    """How much a run trains and evaluates: stage runs of each kind, evaluations, and MMGA's steps per stage run."""

    stage_runs: dict[str, int]
    evaluations: int
    steps: dict[str, int]
    eval_units: float = 0.0  # the evaluations weighted by their cost (EVAL_COST), in linear-probe units
    stage1_cost: tuple[float, float] = (
        0.035,
        1.5,
    )  # MMGA's stage 1: seconds per step, export per 1,000 users
    states_per_caption: float = 0.0  # seconds per caption of the caption states (console.states_seconds)
    # seconds per image of a frozen image trunk's states (console.image_states_seconds)
    states_per_image: float = 0.0

    @classmethod
    def of(cls, cfg: BridgeConfig, templates: StageTemplates) -> RunSize:
        from bridge.evaluation.rows import report_rows

        variants = templates.variants
        per_variant = {v.name: 1 if v.once else cfg.seeds * cfg.rounds for v in variants}
        runs = {
            "stage1": sum(per_variant[v.name] for v in variants if v.has_stage1),
            "stage2": sum(per_variant[v.name] for v in variants if v.has_stage2),
        }
        rows = report_rows(cfg.rounds, cfg.baselines, cfg.ablations, cfg.finetune, cfg.encoder_peers)
        steps = {stage: templates.template("mmga", stage).trainer.max_steps for stage in runs}
        counts = {r.name: cfg.seeds if r.seeded else 1 for r in rows}
        units = sum(counts[r.name] * EVAL_COST.get(r.method, 1.0) for r in rows)
        stage1 = templates.template("mmga", "stage1")
        model = stage1.model
        cost = stage1_costs(model.text_model, model.text_tuned_layers, stage1.losses.lm_weight)
        per_caption = states_seconds(
            1, model.text_model, model.text_tuned_layers, model.text_frozen_precision
        )
        per_image = image_states_seconds(1, model.image_model)
        return cls(runs, sum(counts.values()), steps, units, cost, per_caption, per_image)

    def stage_estimates(self, num_users: int) -> dict[str, float]:
        """Estimated seconds of one stage run of each kind on a corpus of ``num_users``."""
        return stage_seconds(num_users, self.steps["stage1"], self.steps["stage2"], self.stage1_cost)

    def estimate_line(self, jobs: int, num_users: int, captions: int = 0, images: int = 0) -> str:
        """The run's rough wall time on a 2-core CPU for this corpus's size: the caption states of ``captions``
        captions and a frozen image trunk's states of ``images`` images (pass 0 when the run folder holds them
        already), the stages and the evaluations."""
        eta = (
            captions * self.states_per_caption
            + images * self.states_per_image
            + estimate_seconds(
                self.stage_estimates(num_users), self.stage_runs, self.eval_units, jobs, num_users
            )
        )
        return f"  roughly {minutes(eta)} for {num_users:,} users on a 2-core CPU (a rerun skips what is complete)"


def header(
    cfg: BridgeConfig, paths: RunPaths, jobs: int, templates: StageTemplates, size: RunSize
) -> list[str]:
    """What the run will do, and the one note on random ViT weights (the time estimate follows once the corpus's
    size is known: :meth:`RunSize.estimate_line`)."""
    trained = [v for v in templates.variants if not v.once]
    once = [v.name for v in templates.variants if v.once]
    lines = [
        f"MMGA bridge: {len(trained)} variant(s) ({', '.join(v.name for v in trained)}) x {cfg.rounds} round(s) "
        f"x {cfg.seeds} training seed(s) ({', '.join(str(s) for s in cfg.training_seeds)})"
        + (f" + {', '.join(once)} once" if once else "")
        + " = "
        f"{size.stage_runs['stage1']} stage-1 and {size.stage_runs['stage2']} stage-2 runs, then {size.evaluations} "
        f"evaluations; {jobs} job(s); run folder {paths.run_dir}.",
    ]
    s1 = templates.template("mmga", "stage1")
    package = frozen_image_trunk(s1.model.image_model)
    if package is not None:
        trains = (
            "its projection and MMGA's image graph head train"
            if s1.model.image_head_dim > 0
            else "only its projection trains"
        )
        lines.append(
            f"  The image tower ({s1.model.image_model}) has a pretrained trunk, frozen, from the {package} package; "
            f"{trains}."
        )
    elif not s1.model.image_pretrained:
        lines.append(
            f"  The ViT ({s1.model.image_model}) starts from random weights; for pretrained ones pass "
            "--stage1 model.image_model=NAME --stage1 model.image_pretrained=TAG_OR_FILE (an open_clip name and tag)."
        )
    return lines


def run_facts(cfg: BridgeConfig, paths: RunPaths, templates: StageTemplates, size: RunSize) -> RunFacts:
    """What the report needs to know of this run."""
    return RunFacts(
        run_dir=paths.run_dir,
        rounds=cfg.rounds,
        training_seeds=cfg.training_seeds,
        eval=cfg.eval,
        variants=templates.variants,
        config_json=to_jsonable(cfg),
        stage_steps=dict(size.steps),
        stage2_reads=stage2_reads(templates),
    )


def stage2_reads(templates: StageTemplates) -> str:
    """Which of R^T's and R^I's columns MMGA's stage 2 reads, for the report's methods ("" when MMGA is not
    trained)."""
    if ("mmga", "stage2") not in templates.configs:
        return ""
    model = templates.template("mmga", "stage2").model
    skips = [
        (symbol, k, readout)
        for symbol, k, readout in (
            ("R^T", model.text_skip_last, model.readout_text),
            ("R^I", model.image_skip_last, model.readout_image),
        )
        if k
    ]
    if not skips:
        return (
            "MMGA's stage 2 (its GNN, M-Gate and content readout) reads all of R^T and R^I, as in the paper."
        )
    parts = []
    for symbol, k, readout in skips:
        also = (
            f"R^G's content readout reads all of {symbol}, those columns included"
            if readout == "whole"
            else "so does R^G's content readout"
        )
        parts.append(f"{symbol} without its last {k} columns (its graph head's; {also})")
    return (
        f"MMGA's stage-2 GNN and M-Gate read {' and '.join(parts)}; `--no-skip-graph-head` gives them back, as in "
        "the paper."
    )


def check_runtime_of(templates: StageTemplates, eval_device: str = "auto") -> None:
    """What every stage config asks of this machine (devices, tracker packages), each checked once, and the
    evaluation's device (``eval.device``)."""
    from mmga_common.runtime import check_torch_device
    from mmga_common.trainer import check_runtime

    for (_, stage), cfg in templates.configs.items():
        check_runtime(cfg.trainer, f"{stage}.trainer.", "bridge config")
    check_torch_device(eval_device, "eval.device", "bridge config")


def _load_average() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def run_bridge(
    cfg: BridgeConfig,
    run_dir: Path,
    force: bool = False,
    jobs: int = 1,
    console: Console | None = None,
    templates: StageTemplates | None = None,
) -> BridgeResult:
    """Run (or resume) everything: corpus, every (training seed, variant)'s rounds, evaluation, report, and the
    evaluation metrics logged with the stages' trackers (``bridge.report.tracking``).

    ``jobs``: worker processes for the stage chains and the evaluations (1 = everything in this process); results
    do not depend on it.
    ``templates``: the typed stage configs of :func:`check_stage_configs`, if the caller built them already.
    Holds the run folder's lock throughout (the command line takes it before anything else).
    """
    import torch

    with run_lock(Path(run_dir).resolve()):
        console = console or Console()
        start, load_start = time.perf_counter(), _load_average()
        paths = RunPaths(Path(run_dir).resolve())
        templates = templates if templates is not None else check_stage_configs(cfg)
        paths.run_dir.mkdir(parents=True, exist_ok=True)
        manifest = Manifest.load(paths.manifest)
        result = BridgeResult(run_dir=paths.run_dir, report=paths.report_dir / "report.md", metrics={})
        # an impossible device or a missing tracker package: refused before any work
        check_runtime_of(templates, cfg.eval.device)
        size = RunSize.of(cfg, templates)
        for line in header(cfg, paths, jobs, templates, size):
            console.info(line)
        run = BridgeRun(cfg, paths, manifest, result, force, console)
        corpus = prepare_corpus(run)
        captions = 0 if paths.holds_text_states() else int(np.asarray(corpus.post_has_text).sum())
        images = 0 if paths.holds_image_states() else int(np.asarray(corpus.post_has_image).sum())
        console.info(size.estimate_line(jobs, corpus.num_users, captions, images))
        run_chains(run, corpus, templates, jobs, size.stage_estimates(corpus.num_users))
        rows, evaluated = evaluate_rows(run, corpus, jobs)
        environment = {
            "torch_threads": torch.get_num_threads(),
            "jobs": jobs,
            "cpu_count": os.cpu_count(),
            # other jobs on the machine change the timings a lot: the 1-minute load average says how busy it was
            "load_average_1min_start": load_start,
            "load_average_1min_end": _load_average(),
        }
        inputs = ReportInputs(
            facts=run_facts(cfg, paths, templates, size),
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
        log_evaluations(templates.loggers, paths, evaluated, to_jsonable(cfg))
        return result
