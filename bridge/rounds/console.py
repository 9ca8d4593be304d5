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


def estimate_seconds(num_users: int, stage1_runs: int, stage2_runs: int, evaluations: int, jobs: int,
                     stage1_steps: int, stage2_steps: int) -> float:  # fmt: skip
    """A rough wall-time estimate on a 2-core CPU, from the default run's measured per-unit costs (2026-12-01:
    stage 1 about 0.05 s per step plus 4 ms per user for the export, stage 2 about 0.02 s per step, an
    evaluation about 1.2 ms per user); only for the run header."""
    users = max(num_users, 1) / 1000
    stage1 = stage1_runs * (0.05 * stage1_steps + 4.0 * users)
    stage2 = stage2_runs * 0.02 * stage2_steps * max(users, 0.2)
    return (stage1 + stage2) / max(1, jobs) + evaluations * 1.2 * users


def minutes(seconds: Any) -> str:
    s = float(seconds)
    return f"{s:.0f} s" if s < 90 else f"{s / 60:.0f} min"
