"""``run_stage2``: the public entry of stage 2 (the bridge calls it in-process; the CLI calls it too)."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.strategies import DDPStrategy

from cache import graph_file, write_graph_outputs
from cache.checkpoint import SafeCheckpointIO, load_checkpoint
from corpus import Corpus
from mmga_common.layout import CHECKPOINT_FILE, LOG_DIR, StageResult, checkpoint_path, config_path
from mmga_common.progress import StepProgress
from mmga_common.threads import torch_threads
from stage2_graph.config import ConfigError, Stage2Config, processes
from stage2_graph.data import MaskingDataset, Stage2DataModule, Stage2InputError, load_graph_inputs
from stage2_graph.export import compute_graph_outputs
from stage2_graph.minibatch import NeighborDataModule
from stage2_graph.system import LossHistory, Stage2System

Stage2Result = StageResult  # what run_stage2 returns (mmga_common.layout)


def _devices(value: str) -> int | str | list[int]:
    if value.isdigit():
        return int(value)
    if "," in value:
        return [int(part) for part in value.split(",") if part.strip()]
    return value


def _strategy(name: str) -> str | DDPStrategy:
    """Lightning's strategy; DDP without per-step buffer broadcasts: the graph is held as buffers that every
    rank reads from the same corpus and cache, and broadcasting them each step would cost O(N)."""
    if name == "auto":
        return name
    return DDPStrategy(
        start_method="spawn" if name == "ddp_spawn" else "popen",
        find_unused_parameters=name == "ddp_find_unused_parameters_true",
        broadcast_buffers=False,
    )


def _resume_path(cfg: Stage2Config, checkpoint_dir: Path) -> Path | None:
    resume = cfg.trainer.resume
    if resume is None:
        return None
    if resume == "last":
        last = checkpoint_dir / CHECKPOINT_FILE
        return last if last.is_file() else None
    path = Path(resume)
    if not path.is_file():
        raise ConfigError("config", None, "trainer.resume", f"checkpoint {path} not found")
    # refuse a damaged or code-carrying file with a clean error before Lightning sees it
    load_checkpoint(path)
    return path


def load_init_checkpoint(system: Stage2System, path: Path) -> None:
    """Copy the weights of a previous stage-2 checkpoint into ``system`` (optimizer state is not kept)."""
    if not Path(path).is_file():
        raise ConfigError("config", None, "init_checkpoint", f"{path} not found")
    checkpoint = load_checkpoint(path)
    try:
        system.load_state_dict(checkpoint["state_dict"], strict=True)
    except (KeyError, RuntimeError) as err:
        raise Stage2InputError(
            f"{path}: cannot initialise from this checkpoint (a different model or input widths?): {err}"
        ) from err


class SaveLastInWorkers(L.Callback):
    """Saves ``last.ckpt`` inside the training processes: under ``ddp_spawn`` the caller's process gets back
    the weights only (no optimizer state, step 0), so a checkpoint saved there could not resume."""

    def __init__(self, path: Path):
        self.path = path

    def on_train_end(self, trainer, pl_module) -> None:
        trainer.save_checkpoint(self.path, weights_only=False)


def build_trainer(
    cfg: Stage2Config, out_dir: Path, history: LossHistory, extra_callbacks: list | None = None
) -> tuple[L.Trainer, Path]:
    """The Lightning Trainer for ``cfg`` and the folder of its CSV log."""
    trainer_cfg = cfg.trainer
    loggers: list = []
    if trainer_cfg.csv_logger:
        loggers.append(CSVLogger(out_dir, name=LOG_DIR))
    if trainer_cfg.tensorboard_logger:
        loggers.append(TensorBoardLogger(out_dir, name="tensorboard"))
    checkpointing = ModelCheckpoint(
        dirpath=checkpoint_path(out_dir).parent,
        save_last=True,
        save_top_k=0,
        every_n_train_steps=trainer_cfg.checkpoint_every_n_steps,
    )
    trainer = L.Trainer(
        max_steps=trainer_cfg.max_steps,
        max_epochs=trainer_cfg.max_epochs,
        accelerator=trainer_cfg.accelerator,
        devices=_devices(trainer_cfg.devices),
        num_nodes=trainer_cfg.num_nodes,
        strategy=_strategy(trainer_cfg.strategy),
        # batching=neighbor draws new masks and batches every epoch
        reload_dataloaders_every_n_epochs=1 if trainer_cfg.batching == "neighbor" else 0,
        precision=trainer_cfg.precision,
        logger=loggers or False,
        callbacks=[checkpointing, history, *(extra_callbacks or [])]
        + ([StepProgress("stage 2")] if trainer_cfg.enable_progress_bar else []),
        enable_progress_bar=trainer_cfg.enable_progress_bar,
        enable_model_summary=False,
        log_every_n_steps=trainer_cfg.log_every_n_steps,
        gradient_clip_val=trainer_cfg.gradient_clip_val,
        deterministic=trainer_cfg.deterministic,
        use_distributed_sampler=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        default_root_dir=out_dir,
        plugins=[SafeCheckpointIO()],  # weights-only loads (also on resume) and atomic checkpoint writes
    )
    log_dir = Path(loggers[0].log_dir) if trainer_cfg.csv_logger else out_dir
    return trainer, log_dir


def run_stage2(cfg: Stage2Config, corpus: Corpus | None = None) -> Stage2Result:
    """Train the graph encoder on ``cfg.corpus`` and write R^G and the gates to the round's cache.

    Reads X and the edges from the corpus and, when ``cfg.use_modalities`` and the gate or the node inputs
    use them, stage 1's embeddings of ``cfg.round`` from ``cfg.cache_dir``; never labels, fans or splits. Saves the
    resolved config as ``<out_dir>/checkpoints/config.json`` and in the cache file's ``producer`` attribute.
    """
    cfg.validate()
    with torch_threads(cfg.trainer.num_threads):
        return _run(cfg, corpus)


def _run(cfg: Stage2Config, corpus: Corpus | None) -> Stage2Result:
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    # Stage 1's embeddings are read only if the gate or the node inputs use them.
    graph = load_graph_inputs(Path(cfg.corpus), Path(cfg.cache_dir), cfg.round, cfg.needs_modalities, corpus)
    out_dir = cfg.resolved_out_dir
    checkpoint_dir = checkpoint_path(out_dir).parent

    system = Stage2System.from_config(graph, cfg)
    if cfg.init_checkpoint is not None:
        load_init_checkpoint(system, Path(cfg.init_checkpoint))
    dataset = MaskingDataset(
        graph.num_nodes,
        system.structure.edge_pairs,
        feature_mask_ratio=cfg.objective.feature_mask_ratio,
        edge_mask_ratio=cfg.objective.edge_mask_ratio,
        negative_ratio=cfg.objective.negative_ratio,
        seed=cfg.seed,
    )
    history = LossHistory()
    spawned = cfg.trainer.strategy == "ddp_spawn" and processes(cfg.trainer) > 1
    trainer, log_dir = build_trainer(
        cfg, out_dir, history, [SaveLastInWorkers(checkpoint_path(out_dir))] if spawned else []
    )
    if trainer.is_global_zero:
        cfg.save(config_path(out_dir))
    if cfg.trainer.batching == "neighbor":
        datamodule: L.LightningDataModule = NeighborDataModule(
            system.structure, dataset, cfg.trainer.fanouts, cfg.trainer.batch_size, cfg.seed
        )
    else:
        datamodule = Stage2DataModule(dataset)
    start = time.perf_counter()
    with warnings.catch_warnings():
        # Full-batch training has nothing to load in parallel, and logs every log_every_n_steps steps
        # across epochs of one batch, which Lightning's epoch-size warning does not know.
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
        trainer.fit(system, datamodule=datamodule, ckpt_path=_resume_path(cfg, checkpoint_dir))
    fit_seconds = time.perf_counter() - start
    checkpoint = checkpoint_path(out_dir)
    if not spawned:  # under ddp_spawn the workers saved it (SaveLastInWorkers)
        trainer.save_checkpoint(checkpoint, weights_only=False)

    metrics = history.summary()
    if spawned:  # the loss history stayed in the workers; their checkpoint knows the step
        metrics = {"steps_run": float(load_checkpoint(checkpoint)["global_step"])}
    metrics["fit_seconds"] = fit_seconds
    result = StageResult(
        checkpoint=checkpoint,
        cache_file=Path(graph_file(cfg.cache_dir, cfg.round)),
        log_dir=log_dir,
        metrics=metrics,
        config_file=config_path(out_dir),
        global_rank=int(trainer.global_rank),
    )
    if not trainer.is_global_zero:  # under ddp every rank gets here; rank 0 alone exports and writes
        return result
    layerwise = cfg.trainer.inference == "layerwise" or (
        cfg.trainer.inference == "auto" and cfg.trainer.batching == "neighbor"
    )
    start = time.perf_counter()
    outputs = compute_graph_outputs(system, cfg.trainer.batch_size if layerwise else None)
    metrics["export_seconds"] = time.perf_counter() - start
    result.cache_file = Path(
        write_graph_outputs(
            cfg.cache_dir,
            cfg.round,
            outputs,
            fingerprint=graph.fingerprint,
            producer=cfg.to_dict(),
            model=describe_model(cfg),
        )
    )
    return result


def describe_model(cfg: Stage2Config) -> str:
    """A one-line description stored in the cache's ``model`` attribute."""
    model = cfg.model
    if cfg.gate == "uniform":
        gate = "uniform mean aggregation"
    else:
        inputs = "X + image/text embeddings" if cfg.use_modalities else "X only"
        gate = f"M-Gate ({model.gate_form}, {model.gate_normalization}, {model.heads} head(s)) on {inputs}"
    nodes = "+".join(cfg.resolved_node_inputs)
    return f"stage2 GNN: {model.num_layers} layers x {model.hidden_dim}, node inputs {nodes}, {gate}"
