"""Run the stage chains of a bridge run, in this process or in ``jobs`` worker processes.

A chain is one (training seed, variant): its stages run in order (round 0 stage 1, round 0 stage 2, round 1
stage 1, ...), each continuing from the previous one's checkpoint, so a chain is sequential. Different chains are
independent, so with ``jobs > 1`` up to ``jobs`` of them run at once in worker processes (``spawn``: a fresh
interpreter, no forked OpenMP state). Each worker uses the same number of torch threads as the main process, so
the results do not depend on ``jobs``. Only the main process reads and writes the manifest: a stage is planned
there (its checkpoint to continue from comes from the manifest), run in a worker, and recorded there once it
returned. A stage's stdout and stderr go to ``stage.log`` in the stage's folder (with ``jobs=1`` too), so the
run's own output stays one line per chain.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bridge.rounds import stages
from bridge.rounds.console import Eta, ProgressLines, image_states_seconds, minutes, states_seconds
from bridge.rounds.context import BridgeRun
from bridge.runfolder import STAGE_LOG
from bridge.variants import Variant
from corpus import Corpus
from mmga_common.noise import init_worker


@dataclass
class Chain:
    """The remaining stages of one (training seed, variant)."""

    seed: int
    variant: Variant
    steps: deque = field(default_factory=deque)  # (round, stage)
    total: int = 0
    ran: int = 0
    seconds: float = 0.0

    def __post_init__(self) -> None:
        self.total = len(self.steps)

    @property
    def name(self) -> str:
        return f"seed {self.seed} {self.variant.name}"


def build_chains(seeds: tuple[int, ...], variants: tuple[Variant, ...], rounds: int) -> list[Chain]:
    """One chain per (training seed, variant); a variant that runs ``once`` has one chain, of round 0, for the
    first training seed."""
    return [
        Chain(seed, v, deque((r, stage) for r in range(1 if v.once else rounds) for stage in v.stages))
        for seed in seeds
        for v in variants
        if not v.once or seed == seeds[0]
    ]


class InlineExecutor(Executor):
    """Runs each submitted call at once in this process (``jobs=1``; tests can monkeypatch the stages)."""

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as err:  # noqa: BLE001 - handed to the caller through the future
            if isinstance(err, KeyboardInterrupt):
                raise
            future.set_exception(err)
        return future


def _call_stage_logged(stage: str, config: Any, corpus: Corpus | None = None) -> stages.StageOutcome:
    """Run the stage with its output captured into ``<out_dir>/stage.log``.

    The capture is at the file-descriptor level only (``dup2`` of 1 and 2): ``sys.stdout`` / ``sys.stderr`` stay
    the same objects, so a logging handler a library creates during the stage (``logging.warning`` makes one on
    first use) keeps pointing at the real stderr, not at the log file that is closed afterwards.
    """
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / STAGE_LOG, "w") as log:
        sys.stdout.flush()
        sys.stderr.flush()
        fd_out, fd_err = os.dup(1), os.dup(2)
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            return stages.call_stage(stage, config, corpus)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(fd_out, 1)
            os.dup2(fd_err, 2)
            os.close(fd_out)
            os.close(fd_err)


@contextlib.contextmanager
def executor(jobs: int, verbose: bool = False) -> Iterator[Executor]:
    if jobs <= 1:
        yield InlineExecutor()
        return
    pool = ProcessPoolExecutor(
        max_workers=jobs,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=init_worker,
        initargs=(torch.get_num_threads(), verbose),
    )
    try:
        yield pool
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


class ChainScheduler:
    """Runs every chain's remaining stages, skipping complete ones, with up to ``jobs`` stages at once.

    Only this (the main) process reads and writes the manifest: a stage is planned here (its checkpoint to
    continue from comes from the manifest), run in a worker (or inline), and recorded here once it returned. A
    stage that fails stops the run after the stages already running in other workers have finished and been
    recorded (so a rerun resumes after them); the failure is raised again.
    """

    def __init__(
        self,
        run: BridgeRun,
        corpus: Corpus,
        templates: stages.StageTemplates,
        jobs: int,
        prior_seconds: dict[str, float] | None = None,
    ):
        self.run = run
        self.corpus = corpus
        self.templates = templates
        self.jobs = max(1, jobs)
        self.prior_seconds = prior_seconds or {}
        self.chains: list[Chain] = []
        self.total = 0
        self.done = 0
        self.chains_done = 0
        self.eta: Eta | None = None

    def run_all(self, chains: list[Chain]) -> None:
        self.chains = chains
        self.total = sum(len(c.steps) for c in chains)
        kinds = [stage for c in chains for _, stage in c.steps]
        self.eta = Eta({k: kinds.count(k) for k in set(kinds)}, self.jobs, self.prior_seconds)
        self._prepare_text_states(chains)
        pending: deque[Chain] = deque(chains)
        running: dict[Future, tuple[Chain, stages.StageRun, Any]] = {}
        failure: BaseException | None = None
        with executor(self.jobs, self.run.console.verbose) as pool:
            while (pending and failure is None) or running:
                while pending and failure is None and len(running) < self.jobs:
                    chain = pending.popleft()
                    planned = self._next_run(chain)
                    if planned is not None:
                        future, recorded = self._submit(pool, planned)
                        running[future] = (chain, planned, recorded)
                if not running:
                    continue
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    chain, planned, recorded = running.pop(future)
                    err = future.exception()
                    if err is not None:
                        if failure is None:
                            failure = err
                            log = Path(planned.config.out_dir) / STAGE_LOG
                            self.run.console.always(f"{planned.key} failed; its output is in {log}")
                        continue
                    self._finished(chain, planned, recorded, future.result())
                    pending.appendleft(chain)
        if failure is not None:
            raise failure

    def _prepare_text_states(self, chains: list[Chain]) -> None:
        """The frozen encoders' states (the frozen text layers' caption states, and a frozen pretrained image
        trunk's output of every image), computed here with every job's threads before any chain starts, for the
        first round-0 stage-1 run that still needs them, when the run folder has none yet. Otherwise the first
        stage-1 runs compute them on one thread while the other workers wait for them (the states' lock): 52-55 s
        of the default run's wall time, against 31-32 s here (the caption states of 2026-12-04)."""
        run = self.run
        if run.paths.holds_text_states() and run.paths.holds_image_states():
            return
        for chain in chains:
            if (0, "stage1") not in chain.steps:
                continue
            key = run.paths.for_seed(chain.seed).stage_key(chain.variant.name, 0, "stage1")
            planned = stages.plan_stage(key, self.templates, run.paths, self.corpus.root, run.manifest)
            if not stages.needs_run(planned, run.manifest, self.corpus, run.force):
                continue
            image = stages.frozen_image_trunk(planned.config.model.image_model) is not None
            if run.paths.holds_text_states() and (not image or run.paths.holds_image_states()):
                return  # what this run folder's stage-1 runs read is there
            started = time.perf_counter()
            threads = self.jobs * torch.get_num_threads()
            model = planned.config.model
            progress = ProgressLines(
                run.console,
                "text states",
                "the frozen text layers' states of every caption, once for this run folder:",
                "captions",
                states_seconds(1, model.text_model, model.text_tuned_layers, model.text_frozen_precision),
            )
            image_progress = ProgressLines(
                run.console,
                "image states",
                f"the frozen {model.image_model} trunk's output of every image, once for this run folder:",
                "images",
                image_states_seconds(1, model.image_model),
            )
            if stages.prepare_text_states(planned.config, self.corpus, threads, progress, image_progress):
                run.console.info(
                    f"[text states] the frozen encoders' states computed in "
                    f"{time.perf_counter() - started:.1f} s ({threads} threads); the stage-1 runs reuse them"
                )
                return  # one file each: variants with other frozen weights compute theirs in their first run

    def _next_run(self, chain: Chain) -> stages.StageRun | None:
        """Plan the chain's next stage that must run, skipping (and reporting) complete ones."""
        run = self.run
        while chain.steps:
            round_idx, stage = chain.steps[0]
            key = run.paths.for_seed(chain.seed).stage_key(chain.variant.name, round_idx, stage)
            planned = stages.plan_stage(key, self.templates, run.paths, self.corpus.root, run.manifest)
            if stages.needs_run(planned, run.manifest, self.corpus, run.force):
                return planned
            chain.steps.popleft()
            self.done += 1
            entry = run.manifest.entry(key)
            self.eta.done(stage, 0.0, ran=False)
            run.console.detail(f"  [{self.done}/{self.total}] {key}: complete before, skipped")
            run.note_step(str(key), False, entry.seconds if entry else 0.0)
            self._chain_step_done(chain, False, 0.0)
        return None

    def _submit(self, pool: Executor, planned: stages.StageRun) -> tuple[Future, Any]:
        """Start the stage; returns its future and what the manifest will record as its config."""
        run = self.run
        recorded = stages.manifest_config(planned, run.manifest)
        stages.prepare(planned, run.manifest)
        run.console.detail(f"  {planned.key} started (log: {Path(planned.config.out_dir) / STAGE_LOG})")
        # In this process the stage reuses the bridge's corpus; a worker loads its own once.
        shared = self.corpus if isinstance(pool, InlineExecutor) else None
        return pool.submit(_call_stage_logged, planned.stage, planned.config, shared), recorded

    def _finished(
        self, chain: Chain, planned: stages.StageRun, recorded: Any, outcome: stages.StageOutcome
    ) -> None:
        run = self.run
        stages.record(planned, run.manifest, self.corpus, outcome, recorded)
        chain.steps.popleft()
        self.done += 1
        self.eta.done(planned.stage, outcome.seconds, ran=True)
        left = self.eta.seconds_left()
        run.console.info(
            f"[stage {self.done}/{self.total}] {planned.key} done in {outcome.seconds:.1f} s"
            + (f"; about {minutes(left)} of training left" if self.done < self.total else "")
        )
        run.note_step(str(planned.key), True, outcome.seconds)
        self._chain_step_done(chain, True, outcome.seconds)

    def _chain_step_done(self, chain: Chain, ran: bool, seconds: float) -> None:
        chain.ran += int(ran)
        chain.seconds += seconds
        if not chain.steps:
            self.chains_done += 1
            what = (
                f"{chain.ran} of {chain.total} stages run in {chain.seconds:.1f} s"
                if chain.ran
                else "complete before, skipped"
            )
            self.run.console.detail(f"[{self.chains_done}/{len(self.chains)}] {chain.name}: {what}")


def run_chains(
    run: BridgeRun,
    corpus: Corpus,
    templates: stages.StageTemplates,
    jobs: int = 1,
    prior_seconds: dict[str, float] | None = None,
) -> None:
    """Every (training seed, variant)'s rounds; each stage is skipped when its complete outputs exist.
    ``prior_seconds``: the estimated seconds of one stage of each kind, for the time left before any ran."""
    chains = build_chains(run.cfg.training_seeds, templates.variants, run.cfg.rounds)
    ChainScheduler(run, corpus, templates, jobs, prior_seconds).run_all(chains)
