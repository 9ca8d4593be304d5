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


def stage_seconds(num_users: int, stage1_steps: int, stage2_steps: int) -> dict[str, float]:
    """Rough seconds of one stage-1 and one stage-2 run on a 2-core CPU, from the default run's measured per-unit
    costs (2026-12-03, the default preset: stage 1 about 0.035 s per step plus 1.5 ms per user for the export,
    stage 2 about 0.02 s per step per 1,000 users) and a fixed overhead per stage run."""
    users = max(num_users, 1) / 1000
    return {
        "stage1": STAGE_OVERHEAD_SECONDS + 0.035 * stage1_steps + 1.5 * users,
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
