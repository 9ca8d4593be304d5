"""The one Lightning trainer layer both stages use: ``TrainerConfig`` (the ``trainer`` section of their configs),
``build_trainer`` and ``fit_and_save``.

Each stage subclasses ``TrainerConfig`` only to change defaults and to add what is its own (stage 1's
``accumulate_grad_batches``, stage 2's mini-batching); names, types, meanings, the log folder, the checkpoint
file and how a run resumes are the same for both. Lightning is imported when a trainer is built, so that
reading a config stays light (the CLIs' ``--help``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from mmga_common.config import ConfigError, at_most, config_field
from mmga_common.layout import CHECKPOINT_DIR, LOG_DIR, MLFLOW_DIR, TENSORBOARD_DIR, checkpoint_path
from mmga_common.runtime import check_devices as check_devices
from mmga_common.runtime import check_loggers as check_loggers
from mmga_common.runtime import check_runtime, resolve_precision
from mmga_common.runtime import resolve_accelerator as resolve_accelerator

Accelerator = Literal["auto", "cpu", "gpu", "cuda", "mps"]
Strategy = Literal["auto", "ddp", "ddp_spawn", "ddp_notebook", "ddp_find_unused_parameters_true"]
Precision = Literal["auto", "32-true", "bf16-mixed", "16-mixed", "bf16-true", "64-true"]
LoggerName = Literal["csv", "tensorboard", "mlflow", "wandb"]

SPAWN_STRATEGIES = ("ddp_spawn", "ddp_notebook")  # workers started from inside the call
# Lightning re-launches the calling script once per rank:
RELAUNCHING_STRATEGIES = ("ddp", "ddp_find_unused_parameters_true")

# Lightning warnings that say nothing useful about these trainers (filtered around fit only).
_QUIET_FIT_WARNINGS = (
    ".*does not have many workers.*",  # the loaders are in-memory samplers, workers would only add overhead
    ".*smaller than the logging interval.*",  # full-batch stage 2: one batch per epoch, logged across epochs
    r".*isinstance\(treespec, LeafSpec\).*",  # Lightning internals
)


@dataclass
class TrainerConfig:
    """Lightning Trainer settings shared by both stages (each stage's subclass sets its own defaults)."""

    max_steps: int = config_field(
        200,
        "optimizer steps to train (-1 = limited by max_epochs only; 0 = no training: the model as initialised, "
        "e.g. a pretrained encoder frozen)",
        ge=-1,
        **at_most(100_000_000),
    )
    max_epochs: int | None = config_field(
        None, "epoch limit (none = limited by max_steps only)", ge=1, **at_most(100_000_000)
    )
    accelerator: Accelerator = config_field("auto", "Lightning accelerator")
    devices: str = config_field("1", "Lightning devices per node: a count, a list like 0,1, or auto")
    num_nodes: int = config_field(1, "nodes (each runs `devices` processes)", ge=1)
    strategy: Strategy = config_field(
        "auto", "Lightning strategy; ddp re-launches the calling script per rank, ddp_spawn forks workers"
    )
    precision: Precision = config_field(
        "auto",
        "Lightning precision; auto = bf16-mixed on a CUDA device that supports bf16, else 32-true",
    )
    gradient_clip_val: float | None = config_field(
        1.0, "clip the gradient norm to this (none = no clipping)", gt=0.0
    )
    log_every_n_steps: int = config_field(10, "log the loss terms every n steps", ge=1)
    enable_progress_bar: bool = config_field(True, "show the step progress")
    loggers: list[LoggerName] = config_field(
        ["csv"],
        "loggers: csv (<out>/logs/version_<k>/metrics.csv), tensorboard (<out>/tensorboard), mlflow (local "
        "store <out>/mlruns/mlflow.db; extra [tracking]) and/or wandb (offline, <out>/wandb; extra [tracking])",
    )
    checkpoint_every_n_steps: int | None = config_field(
        None,
        "also save <out>/checkpoints/last.ckpt every n steps, so that a crashed run can resume "
        "(none = only at the end)",
        ge=1,
    )
    resume: str | None = config_field(
        None,
        "resume this same run (weights, optimizer, step) from a Lightning checkpoint file, or 'last': "
        "<out>/checkpoints/last.ckpt if there is one (else start fresh)",
    )
    deterministic: bool = config_field(False, "ask torch for deterministic algorithms")
    num_threads: int | None = config_field(
        None, "torch intra-op CPU threads during the run, restored afterwards (none = torch's default)", ge=1
    )

    @property
    def parsed_devices(self) -> int | str | list[int]:
        """``devices`` as Lightning takes it: a count, a list of device indices, or ``"auto"`` (the one parse;
        ``check`` has refused anything else)."""
        return parse_devices(self.devices)

    def processes(self) -> int:
        """Training processes asked for: ``devices`` x ``num_nodes`` ('auto' counts as one)."""
        devices = self.parsed_devices
        count = devices if isinstance(devices, int) else len(devices) if isinstance(devices, list) else 1
        return count * self.num_nodes

    @property
    def spawns_workers(self) -> bool:
        """Whether training runs in worker processes started by the call (``ddp_spawn``, ``ddp_notebook``): the
        caller then gets the weights back, but not the optimizer state, the step or the loss history."""
        return self.strategy in SPAWN_STRATEGIES and self.processes() > 1

    def check(
        self, source: str = "config", lines: dict[str, int] | None = None, prefix: str = "trainer."
    ) -> None:
        """The checks that involve several trainer fields (bounds are checked by the config layer)."""
        lines = lines or {}

        def fail(name: str, msg: str) -> None:
            raise ConfigError(source, lines.get(prefix + name), prefix + name, msg)

        try:
            parse_devices(self.devices)
        except ValueError as err:
            fail("devices", str(err))
        if self.max_steps == -1 and self.max_epochs is None:
            fail("max_epochs", "max_steps = -1 needs max_epochs")

    def resume_path(self, out_dir: Path) -> Path | None:
        """The checkpoint to resume from: ``resume`` as a file, or for 'last' ``out_dir``'s last.ckpt when it
        exists; ``None`` for a fresh start. A named file that is missing is a ``ConfigError``."""
        if self.resume is None:
            return None
        if self.resume == "last":
            last = checkpoint_path(out_dir)
            return last if last.is_file() else None
        path = Path(self.resume)
        if not path.is_file():
            raise ConfigError("config", None, "trainer.resume", f"checkpoint {path} not found")
        return path


MLFLOW_DB = "mlflow.db"
WANDB_PROJECT = "mmga"


def upgrade_stored_config(stored: dict) -> dict:
    """A stage config saved (in a checkpoint) before both stages shared ``TrainerConfig``, in today's trainer keys:
    stage 1's ``resume_from`` is ``resume``, stage 2's ``csv_logger``/``tensorboard_logger`` are ``loggers`` and its
    ``max_epochs: -1`` is ``None``. Today's configs come back unchanged (a copy)."""
    trainer = dict(stored.get("trainer") or {})
    if "resume_from" in trainer:
        trainer["resume"] = trainer.pop("resume_from")
    if "csv_logger" in trainer or "tensorboard_logger" in trainer:
        csv, tensorboard = trainer.pop("csv_logger", True), trainer.pop("tensorboard_logger", False)
        trainer["loggers"] = ["csv"] * bool(csv) + ["tensorboard"] * bool(tensorboard)
    if trainer.get("max_epochs") == -1:
        trainer["max_epochs"] = None
    return {**stored, "trainer": trainer} if "trainer" in stored else dict(stored)


def _strategy(name: str) -> Any:
    """Lightning's strategy for ``name``. DDP runs without per-step buffer broadcasts: neither stage has buffers
    that training changes (stage 2 holds the graph as buffers that every rank reads from the same corpus and
    cache, and broadcasting those each step would cost O(N))."""
    if name == "auto":
        return name
    from lightning.pytorch.strategies import DDPStrategy

    start = {"ddp_spawn": "spawn", "ddp_notebook": "fork"}.get(name, "popen")
    return DDPStrategy(
        start_method=start,
        find_unused_parameters=name == "ddp_find_unused_parameters_true",
        broadcast_buffers=False,
    )


def parse_devices(value: str) -> int | str | list[int]:
    """A ``devices`` string as Lightning takes it: ``"2"`` -> 2, ``"0,1"`` -> [0, 1], ``"auto"`` -> "auto";
    anything else is a ``ValueError``."""
    text = str(value).strip()
    if text == "auto":
        return text
    if text.isdigit():
        return int(text)
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if "," in text and parts and all(part.isdigit() for part in parts):
        return [int(part) for part in parts]
    raise ValueError(f"expected a count, a list like 0,1, or auto; got {text!r}")


def csv_log_dir(trainer: Any) -> Path | None:
    """The folder of this fit's CSV log, ``<out>/logs/version_<k>`` with ``metrics.csv`` (every logged loss term
    per step) inside; ``None`` when the csv logger is off."""
    from lightning.pytorch.loggers import CSVLogger

    for logger in trainer.loggers:
        if isinstance(logger, CSVLogger):
            return Path(logger.log_dir)
    return None


def build_loggers(tc: TrainerConfig, out_dir: Path, name: str) -> list:
    """Lightning loggers for ``tc.loggers``, all under ``out_dir``: csv in ``logs/``, tensorboard in
    ``tensorboard/``, mlflow in a local store ``mlruns/mlflow.db`` (SQLite; artifacts in ``mlruns/artifacts``;
    experiment ``mmga``, run ``name``), wandb offline in ``wandb/`` (project ``mmga``; ``wandb sync`` uploads it
    later)."""
    from lightning.pytorch import loggers as pl_loggers

    out: list = []
    for kind in (
        "csv",
        "tensorboard",
        "mlflow",
        "wandb",
    ):  # csv first: Lightning's trainer.log_dir is the first's
        if kind not in tc.loggers:
            continue
        if kind == "csv":
            out.append(pl_loggers.CSVLogger(save_dir=out_dir, name=LOG_DIR))
        elif kind == "tensorboard":
            out.append(pl_loggers.TensorBoardLogger(save_dir=out_dir, name=TENSORBOARD_DIR))
        elif kind == "mlflow":
            store = (out_dir / MLFLOW_DIR).resolve()
            store.mkdir(parents=True, exist_ok=True)
            out.append(
                pl_loggers.MLFlowLogger(
                    experiment_name="mmga",
                    run_name=name,
                    tracking_uri=f"sqlite:///{store / MLFLOW_DB}",
                    artifact_location=(store / "artifacts").as_uri(),
                )
            )
        elif kind == "wandb":
            out.append(
                pl_loggers.WandbLogger(name=name, save_dir=out_dir, project=WANDB_PROJECT, offline=True)
            )
    return out


def build_trainer(
    tc: TrainerConfig,
    out_dir: Path,
    name: str,
    *,
    checkpoint_io: Any,
    callbacks: list | None = None,
    **trainer_kwargs: Any,
) -> Any:
    """The Lightning Trainer for ``tc`` writing under ``out_dir``: CSV logs in ``<out>/logs/version_<k>``
    (TensorBoard in ``<out>/tensorboard/version_<k>``; each fit, a resumed one too, gets the next ``k``, as
    Lightning numbers them, so that no fit's log replaces another's), ``<out>/checkpoints/last.ckpt`` every
    ``checkpoint_every_n_steps`` (and at the end, from the workers under a spawning strategy) and a step progress
    display named ``name``.

    ``checkpoint_io``: Lightning's checkpoint plugin; the stages pass ``cache.checkpoint.SafeCheckpointIO()``
    (weights-only loads, also on resume, and atomic writes: the checkpoint format belongs to ``cache``, which this
    neutral package does not import). ``trainer_kwargs``: the stage's own Trainer arguments."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    from mmga_common.callbacks import SaveFinalInWorkers
    from mmga_common.progress import StepProgress

    out_dir = Path(out_dir)
    check_runtime(tc)
    loggers = build_loggers(tc, out_dir, name)
    callbacks = list(callbacks or [])
    if tc.checkpoint_every_n_steps is not None:
        callbacks.append(
            ModelCheckpoint(
                dirpath=out_dir / CHECKPOINT_DIR,
                save_last=True,
                save_top_k=0,
                every_n_train_steps=tc.checkpoint_every_n_steps,
            )
        )
    if tc.spawns_workers:
        callbacks.append(SaveFinalInWorkers(checkpoint_path(out_dir)))
    if tc.enable_progress_bar:
        callbacks.append(StepProgress(name))
    return L.Trainer(
        max_steps=tc.max_steps,
        max_epochs=tc.max_epochs if tc.max_epochs is not None else -1,
        accelerator=tc.accelerator,
        devices=tc.parsed_devices,
        num_nodes=tc.num_nodes,
        strategy=_strategy(tc.strategy),
        precision=resolve_precision(tc),
        gradient_clip_val=tc.gradient_clip_val,
        log_every_n_steps=tc.log_every_n_steps,
        enable_progress_bar=tc.enable_progress_bar,
        enable_model_summary=False,
        enable_checkpointing=tc.checkpoint_every_n_steps is not None,
        logger=loggers or False,
        callbacks=callbacks,
        default_root_dir=out_dir,
        deterministic=tc.deterministic,
        plugins=[checkpoint_io],
        **trainer_kwargs,
    )


def fit_and_save(
    trainer: Any,
    tc: TrainerConfig,
    module: Any,
    datamodule: Any,
    out_dir: Path,
    resume: Path | None,
    frozen_eval_modules: int = 0,
) -> Path:
    """``trainer.fit`` (from ``resume``, the stage's ``tc.resume_path(out_dir)``, or fresh when ``None``), then
    the full final checkpoint (weights, optimizer, loop state: resumable) at ``<out>/checkpoints/last.ckpt``,
    which it returns. Under a spawning strategy the workers saved it already.

    ``frozen_eval_modules``: how many of ``module``'s modules are kept in eval mode on purpose (a frozen encoder's
    layers). Lightning's "Found N module(s) in eval mode" warning is dropped for exactly that N, so any other
    count, a module left in eval mode by mistake, still warns."""
    with warnings.catch_warnings():
        for message in _QUIET_FIT_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        if frozen_eval_modules > 0:
            warnings.filterwarnings(
                "ignore", message=rf"Found {frozen_eval_modules} module\(s\) in eval mode "
            )
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume)
    checkpoint = checkpoint_path(out_dir)
    if not tc.spawns_workers:
        trainer.save_checkpoint(checkpoint, weights_only=False)
    return checkpoint
