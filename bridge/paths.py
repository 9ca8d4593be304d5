"""Every path a bridge run reads or writes, computed in one place.

Layout of a run folder (``RunPaths(run_dir)``)::

    run_dir/
      manifest.json                    what completed, with configs and the corpus fingerprint
      corpus/                          the generated synthetic corpus (when --corpus is not given)
      seed_<s>/                        everything trained with training seed s (one folder per --seeds)
        <variant>/cache/round_<r>/...  stage 1 and stage 2 HDF5 outputs (layout owned by ``cache``)
        <variant>/round_<r>/stage1/    stage 1 checkpoints and logs of round r
        <variant>/round_<r>/stage2/    stage 2 checkpoints and logs of round r
      report/                          report.md, metrics.json, plots

``RunPaths(run_dir)`` holds the run-level paths; ``.for_seed(s)`` gives the paths of one training seed (its
variant folders, and manifest keys prefixed ``seed_<s>/``). Variants are listed in ``bridge.variants``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, get_args

from bridge.variants import REGISTRY

# A stage's captured stdout/stderr, in its stage folder (written by bridge.schedule, kept by bridge.ownership).
STAGE_LOG = "stage.log"

Stage = Literal["stage1", "stage2"]
STAGES: tuple[str, ...] = get_args(Stage)


def _check_variant(variant: str) -> None:
    if variant not in REGISTRY:
        raise ValueError(f"unknown variant {variant!r}; expected one of {tuple(REGISTRY)}")


def _check_round(round_idx: int) -> None:
    if not isinstance(round_idx, int) or round_idx < 0:
        raise ValueError(f"round must be an int >= 0, got {round_idx!r}")


@dataclass(frozen=True)
class RunPaths:
    """Paths of one bridge run, all below ``run_dir``; with ``seed`` set, those of one training seed."""

    run_dir: Path
    seed: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "run_dir", Path(self.run_dir))

    def for_seed(self, seed: int) -> RunPaths:
        """The paths of training seed ``seed``: variant folders below ``seed_<seed>/``."""
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"training seed must be an int >= 0, got {seed!r}")
        return replace(self, seed=seed)

    @property
    def _prefix(self) -> str:
        return "" if self.seed is None else f"seed_{self.seed}/"

    @property
    def seed_dir(self) -> Path:
        return self.run_dir if self.seed is None else self.run_dir / f"seed_{self.seed}"

    @property
    def manifest(self) -> Path:
        return self.run_dir / "manifest.json"

    @property
    def generated_corpus(self) -> Path:
        """Where the embedded synthetic corpus is generated when the user gives no ``--corpus``."""
        return self.run_dir / "corpus"

    @property
    def report_dir(self) -> Path:
        return self.run_dir / "report"

    def variant_dir(self, variant: str) -> Path:
        _check_variant(variant)
        return self.seed_dir / variant

    def cache_dir(self, variant: str) -> Path:
        """The cache folder of a variant; ``cache`` lays out one subfolder per round inside it."""
        return self.variant_dir(variant) / "cache"

    def round_dir(self, variant: str, round_idx: int) -> Path:
        _check_round(round_idx)
        return self.variant_dir(variant) / f"round_{round_idx}"

    def stage_dir(self, variant: str, round_idx: int, stage: str) -> Path:
        """Checkpoints and logs of ``stage`` ("stage1" or "stage2") in round ``round_idx``."""
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; expected one of {STAGES}")
        return self.round_dir(variant, round_idx) / stage

    def stage1_dir(self, variant: str, round_idx: int) -> Path:
        return self.stage_dir(variant, round_idx, "stage1")

    def stage2_dir(self, variant: str, round_idx: int) -> Path:
        return self.stage_dir(variant, round_idx, "stage2")

    def stage_key(self, variant: str, round_idx: int, stage: str) -> str:
        """The manifest key of one stage run, e.g. ``"seed_0/mmga/round_1/stage2"``."""
        _check_variant(variant)
        _check_round(round_idx)
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; expected one of {STAGES}")
        return f"{self._prefix}{variant}/round_{round_idx}/{stage}"

    def eval_key(self, row: str, round_idx: int | None = None) -> str:
        """The manifest key of one evaluated report row, e.g. ``"eval/seed_0/no_align/round_2"``; rows that
        read the last round carry it, so that a longer run (more ``--rounds``) evaluates them anew."""
        key = f"eval/{self._prefix}{row}"
        return key if round_idx is None else f"{key}/round_{round_idx}"
