"""Every path a bridge run reads or writes, computed in one place.

Layout of a run folder (``RunPaths(run_dir)``)::

    run_dir/
      manifest.json                    what completed, with configs and the corpus fingerprint
      corpus/                          the generated synthetic corpus (when --corpus is not given)
      seed_<s>/                        everything trained with training seed s (one folder per --seeds)
        <variant>/cache/round_<r>/...  stage 1 and stage 2 HDF5 outputs (layout owned by ``cache``)
        <variant>/round_<r>/stage1/    stage 1 checkpoints and logs of round r
        <variant>/round_<r>/stage2/    stage 2 checkpoints and logs of round r
      text_states/                     the frozen text encoder's caption states, computed once per run (stage 1)
      report/                          report.md, metrics.json, plots
        tracking/                      the evaluation metrics in the stages' trackers (trainer.loggers)

``RunPaths(run_dir)`` holds the run-level paths; ``.for_seed(s)`` gives the paths of one training seed (its
variant folders, and the typed manifest keys of ``bridge.runfolder.keys`` carrying the seed). A
:class:`~bridge.runfolder.keys.StageKey` says where its stage's outputs live: ``paths.stage_dir(key)``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from bridge.runfolder.keys import EvalKey, Stage, StageKey, seed_prefix

# A stage's captured stdout/stderr, in its stage folder (written by bridge.rounds.schedule, kept by
# bridge.runfolder.ownership).
STAGE_LOG = "stage.log"


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
    def seed_dir(self) -> Path:
        return self.run_dir / seed_prefix(self.seed) if self.seed is not None else self.run_dir

    @property
    def manifest(self) -> Path:
        return self.run_dir / "manifest.json"

    @property
    def generated_corpus(self) -> Path:
        """Where the embedded synthetic corpus is generated when the user gives no ``--corpus``."""
        return self.run_dir / "corpus"

    @property
    def text_states_dir(self) -> Path:
        """Where stage 1 keeps the frozen text layers' states of every caption (``data.text_states_dir``): computed
        by the first stage-1 run that needs them, loaded by every later one, whatever its seed or process."""
        return self.run_dir / "text_states"

    def holds_text_states(self) -> bool:
        """Whether the run folder holds a caption-states file (``text_states-<digest>.pt``, written by stage 1)."""
        return any(self.text_states_dir.glob("text_states-*.pt"))

    def holds_image_states(self) -> bool:
        """Whether the run folder holds a frozen image trunk's states file (``image_states-<digest>.pt``, beside
        the caption states)."""
        return any(self.text_states_dir.glob("image_states-*.pt"))

    @property
    def report_dir(self) -> Path:
        return self.run_dir / "report"

    @property
    def tracking_dir(self) -> Path:
        """Where the evaluation metrics are logged with the stages' trackers (``trainer.loggers``): the same layout
        as a stage folder's logs (``logs/``, ``tensorboard/``, ``mlruns/``, ``wandb/``)."""
        return self.report_dir / "tracking"

    def variant_dir(self, variant: str) -> Path:
        return self.seed_dir / variant

    def cache_dir(self, variant: str) -> Path:
        """The cache folder of a variant; ``cache`` lays out one subfolder per round inside it."""
        return self.variant_dir(variant) / "cache"

    def round_dir(self, variant: str, round_idx: int) -> Path:
        return self.variant_dir(variant) / f"round_{round_idx}"

    def stage_key(self, variant: str, round_idx: int, stage: Stage) -> StageKey:
        """The manifest key of one stage run of this training seed, e.g. ``seed_0/mmga/round_1/stage2``."""
        return StageKey(variant, round_idx, stage, self.seed)

    def eval_key(self, row: str, round_idx: int | None = None) -> EvalKey:
        """The manifest key of one evaluated report row of this training seed."""
        return EvalKey(row, self.seed, round_idx)

    def stage_dir(self, key: StageKey) -> Path:
        """Checkpoints and logs of the stage run ``key`` (its seed's folder, whatever this object's seed)."""
        return self.for_key(key).round_dir(key.variant, key.round) / key.stage

    def for_key(self, key: StageKey | EvalKey) -> RunPaths:
        """The paths of the training seed ``key`` belongs to."""
        return replace(self, seed=key.seed)
