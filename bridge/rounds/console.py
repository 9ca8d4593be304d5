"""What the bridge prints: one line per finished (seed, variant) chain and per evaluated row by default, every
stage and every (row, seed) evaluation with ``--verbose``, only the verdict and the report with ``--quiet``."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
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


# The caption states (the frozen MiniLM-L6 over every caption, once per run folder) on this project's 2-core CPU with
# 2 threads: 264-311 captions/s in float32 and 583/s with the frozen layers in bf16 (docs/performance.md, 2026-12-06);
# float32 in chunks of 64 captions sorted by token count since 2026-12-07, night (stage1_encoders.encoders
# .CAPTION_CPU_CHUNK): 0.66x the time of before on the default corpus, so about 400/s at the rates above.
STATE_CAPTIONS_PER_SECOND = {"32": 400.0, "bf16": 580.0}


def states_seconds(captions: int, text_model: str, tuned_layers: int | None, precision: str) -> float:
    """Rough seconds of the caption states of ``captions`` captions on a 2-core CPU: 0 when no text layer is frozen
    (``tuned_layers`` None: nothing is cached) or for the tiny text encoder (seconds at most); otherwise the frozen
    share of MiniLM-L6's layers at :data:`STATE_CAPTIONS_PER_SECOND`."""
    if tuned_layers is None or text_model == "tiny":
        return 0.0
    frozen = PRETRAINED_TEXT_LAYERS - min(tuned_layers, PRETRAINED_TEXT_LAYERS)
    rate = STATE_CAPTIONS_PER_SECOND.get(precision, STATE_CAPTIONS_PER_SECOND["32"])
    return captions / rate * frozen / PRETRAINED_TEXT_LAYERS


# A frozen packaged image trunk's output of every image (``stage1_encoders.image_states``), once per run folder, on
# this project's 2-core CPU with 2 threads: EfficientNet-Lite0 at 96 x 96, the default corpus's 6,207 images in
# 13.6-14.3 s with the trunk rewritten for inference (44-45 s before; 2026-12-07, docs/performance.md).
IMAGE_STATES_PER_SECOND = {"efficientnet-lite0": 440.0}


def image_states_seconds(images: int, image_model: str) -> float:
    """Rough seconds of a frozen image trunk's states of ``images`` images on a 2-core CPU (0 for a tower that
    trains whole: nothing is cached)."""
    rate = IMAGE_STATES_PER_SECOND.get(image_model)
    return images / rate if rate else 0.0


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


class ProgressLines:
    """A long computation's progress as a few lines: the first call (nothing done yet) prints ``start`` with the
    estimate of ``seconds_per_item`` when given; later calls print the share done and the time left at the rate so
    far, at most once a minute and once per tenth of the work, so a computation of under a minute prints nothing
    more and a long one about ten lines. Callable as ``progress(done, total)``."""

    def __init__(
        self,
        console: Console,
        label: str,
        start: str,
        unit: str,
        seconds_per_item: float | None = None,
        every: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.console, self.label, self.start, self.unit = console, label, start, unit
        self.seconds_per_item, self.every, self.clock = seconds_per_item, every, clock
        self.began: float | None = None
        self.last_time = 0.0
        self.last_share = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = self.clock()
        if self.began is None:
            self.began = self.last_time = now
            estimate = (
                f" (roughly {minutes(total * self.seconds_per_item)} on a 2-core CPU)"
                if self.seconds_per_item
                else ""
            )
            self.console.info(f"[{self.label}] {self.start} {total:,} {self.unit}{estimate}")
            return
        share = done / max(total, 1)
        if done >= total or now - self.last_time < self.every or share - self.last_share < 0.1:
            return
        self.last_time, self.last_share = now, share
        left = (total - done) * (now - self.began) / max(done, 1)
        self.console.info(
            f"[{self.label}] {done:,} of {total:,} {self.unit} ({share:.0%}), about {minutes(left)} left"
        )
