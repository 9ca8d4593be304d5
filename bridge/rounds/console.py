"""What the bridge prints: one line per finished (seed, variant) chain and per evaluated row by default, every
stage and every (row, seed) evaluation with ``--verbose``, only the verdict and the report with ``--quiet``."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, TextIO

QUIET, NORMAL, VERBOSE = 0, 1, 2


@dataclass
class Console:
    verbosity: int = NORMAL
    stream: TextIO | None = None

    def _print(self, message: str) -> None:
        print(message, file=self.stream if self.stream is not None else sys.stdout, flush=True)

    def always(self, message: str) -> None:
        self._print(message)

    def info(self, message: str) -> None:
        if self.verbosity >= NORMAL:
            self._print(message)

    def detail(self, message: str) -> None:
        if self.verbosity >= VERBOSE:
            self._print(message)

    @property
    def verbose(self) -> bool:
        return self.verbosity >= VERBOSE


STAGE_OVERHEAD_SECONDS = 2.0  # a Lightning trainer's set-up, the checkpoint and cache writes: per stage run


PRETRAINED_TEXT_LAYERS = 6  # MiniLM-L6, the pretrained text encoder of the presets (for the estimate only)


def stage1_costs(text_model: str, text_tuned_layers: int | None, lm_weight: float) -> tuple[float, float]:
    """Rough (seconds per step, export seconds per 1,000 users) of a stage-1 run on a 2-core CPU, by how much of
    the text encoder trains: the frozen MiniLM of the default preset as measured in the default run (2026-12-03);
    each tuned MiniLM layer about 0.2 s a step and 6.5 s of export per 1,000 users, MLM over tuned layers (a full
    forward of the masked caption) about 0.9 s a step, from ``benchmarks/bench_stage1_tuning.py`` (docs/stage1.md,
    "Cost") and a one-seed run of ``--preset real`` (342 s per stage-1 run, two at once on two cores); the tiny
    encoders 1.4x the default's step."""
    if text_model == "tiny":
        return 0.05, 1.8
    tuned = (
        PRETRAINED_TEXT_LAYERS
        if text_tuned_layers is None
        else min(text_tuned_layers, PRETRAINED_TEXT_LAYERS)
    )
    if tuned == 0:
        return 0.035, 1.5
    return 0.035 + 0.2 * tuned + (0.9 if lm_weight > 0 else 0.0), 1.5 + 6.5 * tuned


def stage_seconds(
    num_users: int, stage1_steps: int, stage2_steps: int, stage1_cost: tuple[float, float] = (0.035, 1.5)
) -> dict[str, float]:
    """Rough seconds of one stage-1 and one stage-2 run on a 2-core CPU: stage 1 ``stage1_cost`` (seconds per
    step, export seconds per 1,000 users; :func:`stage1_costs`, the default preset's by default), stage 2 about
    0.02 s per step per 1,000 users (the default run, 2026-12-03), plus a fixed overhead per stage run."""
    users = max(num_users, 1) / 1000
    step, export = stage1_cost
    return {
        "stage1": STAGE_OVERHEAD_SECONDS + step * stage1_steps + export * users,
        "stage2": STAGE_OVERHEAD_SECONDS + 0.02 * stage2_steps * max(users, 0.2),
    }


def estimate_seconds(
    per_stage: dict[str, float], stage_runs: dict[str, int], eval_units: float, jobs: int, num_users: int
) -> float:
    """A rough wall-time estimate of a run on a 2-core CPU: ``stage_runs[kind]`` runs of ``per_stage[kind]``
    seconds (:func:`stage_seconds`) and ``eval_units`` linear-probe evaluations' worth (about 1.5 ms per user
    each, 2026-12-03; ``bridge.rounds.evaluate.EVAL_COST``), both over ``jobs`` workers."""
    training = sum(runs * per_stage[kind] for kind, runs in stage_runs.items())
    return (training + eval_units * 1.5 * max(num_users, 1) / 1000) / max(1, jobs)


def minutes(seconds: Any) -> str:
    s = float(seconds)
    return f"{s:.0f} s" if s < 90 else f"{s / 60:.0f} min"


class Eta:
    """The time left of a run's stages, from the mean time of the stages of each kind run so far in this
    invocation (the first estimate, before any stage ran, comes from :func:`estimate_seconds`)."""

    def __init__(self, remaining: dict[str, int], jobs: int, prior: dict[str, float]):
        self.remaining = dict(remaining)  # stage kind -> stages still to run
        self.jobs = max(1, jobs)
        self.prior = dict(prior)  # stage kind -> estimated seconds per stage
        self.spent: dict[str, list[float]] = {}

    def done(self, kind: str, seconds: float, ran: bool) -> None:
        self.remaining[kind] = max(0, self.remaining.get(kind, 0) - 1)
        if ran:
            self.spent.setdefault(kind, []).append(seconds)

    def seconds_left(self) -> float:
        per_stage = {
            k: (sum(v) / len(v) if (v := self.spent.get(k)) else self.prior.get(k, 0.0))
            for k in self.remaining
        }
        return sum(n * per_stage[k] for k, n in self.remaining.items()) / self.jobs
