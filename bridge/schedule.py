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
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bridge import stages
from bridge.config import BridgeConfig
from bridge.console import Console
from bridge.manifest import Manifest
from bridge.paths import STAGE_LOG, RunPaths
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
    return [
        Chain(seed, v, deque((r, stage) for r in range(rounds) for stage in v.stages))
        for seed in seeds
        for v in variants
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


def run_chains(
    cfg: BridgeConfig,
    paths: RunPaths,
    manifest: Manifest,
    corpus: Corpus,
    chains: list[Chain],
    force: bool,
    jobs: int,
    console: Console,
    on_step: Callable[[str, bool, float], None],
) -> None:
    """Run every chain's remaining stages, skipping complete ones; ``on_step(key, ran, seconds)`` per stage.

    A stage that fails stops the run after the stages already running in other workers have finished and been
    recorded (so a rerun resumes after them); the failure is raised again.
    """
    total = sum(len(c.steps) for c in chains)
    done_count = 0
    chains_done = 0

    def chain_step_done(chain: Chain, ran: bool, seconds: float) -> None:
        nonlocal chains_done
        chain.ran += int(ran)
        chain.seconds += seconds
        if not chain.steps:
            chains_done += 1
            what = (f"{chain.ran} of {chain.total} stages run in {chain.seconds:.1f} s" if chain.ran
                    else "complete before, skipped")  # fmt: skip
            console.info(f"[{chains_done}/{len(chains)}] {chain.name}: {what}")

    pending: deque[Chain] = deque(chains)
    running: dict[Future, tuple[Chain, stages.StageRun, Any]] = {}
    failure: BaseException | None = None

    def next_run(chain: Chain) -> stages.StageRun | None:
        """Plan the chain's next stage that must run, skipping (and reporting) complete ones."""
        nonlocal done_count
        while chain.steps:
            r, stage = chain.steps[0]
            run = stages.plan_stage(
                stage, cfg, paths.for_seed(chain.seed), corpus.root, chain.variant.name, r, manifest
            )
            if stages.needs_run(run, manifest, corpus, force):
                return run
            chain.steps.popleft()
            done_count += 1
            seconds = float(manifest.get(run.key).get("seconds") or 0.0)
            console.detail(f"  [{done_count}/{total}] {run.key}: complete before, skipped")
            on_step(run.key, False, seconds)
            chain_step_done(chain, False, 0.0)
        return None

    with executor(jobs, console.verbose) as pool:
        while (pending and failure is None) or running:
            while pending and failure is None and len(running) < max(1, jobs):
                chain = pending.popleft()
                run = next_run(chain)
                if run is None:
                    continue
                recorded = stages.manifest_config(run, manifest)
                stages.prepare(run, manifest)
                console.detail(f"  {run.key} started (log: {Path(run.config.out_dir) / STAGE_LOG})")
                # In this process the stage reuses the bridge's corpus; a worker loads its own once.
                shared = corpus if isinstance(pool, InlineExecutor) else None
                running[pool.submit(_call_stage_logged, run.stage, run.config, shared)] = (
                    chain,
                    run,
                    recorded,
                )
            if not running:
                continue
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                chain, run, recorded = running.pop(future)
                err = future.exception()
                if err is not None:
                    if failure is None:
                        failure = err
                        console.always(
                            f"{run.key} failed; its output is in {Path(run.config.out_dir) / STAGE_LOG}"
                        )
                    continue
                outcome = future.result()
                stages.record(run, manifest, corpus, outcome, recorded)
                chain.steps.popleft()
                done_count += 1
                console.detail(f"  [{done_count}/{total}] {run.key}: done ({outcome.seconds:.1f} s)")
                on_step(run.key, True, outcome.seconds)
                chain_step_done(chain, True, outcome.seconds)
                pending.appendleft(chain)
    if failure is not None:
        raise failure
