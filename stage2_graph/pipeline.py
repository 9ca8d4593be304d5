"""``run_stage2``: the public entry of stage 2 (the bridge calls it in-process; the CLI calls it too)."""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

import lightning as L

from cache import check_owner, graph_file, write_graph_outputs
from cache.checkpoint import SafeCheckpointIO, load_checkpoint
from corpus import Corpus
from mmga_common.allocator import retained_heap
from mmga_common.layout import StageResult, config_path
from mmga_common.threads import torch_threads
from mmga_common.trainer import build_trainer, check_runtime, csv_log_dir, fit_and_save
from stage2_graph.config import ConfigError, Stage2Config
from stage2_graph.data import (
    GraphInputs,
    MaskingDataset,
    Stage2DataModule,
    Stage2InputError,
    load_graph_inputs,
)
from stage2_graph.export import compute_graph_outputs
from stage2_graph.memory import available_bytes, estimate_training_bytes, memory_problem
from stage2_graph.minibatch import MiniBatchDataModule, NeighborBatches, SubgraphBatches
from stage2_graph.system import LossHistory, Stage2System

Stage2Result = StageResult  # what run_stage2 returns (mmga_common.layout)


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


def run_stage2(cfg: Stage2Config, corpus: Corpus | None = None, *, force: bool = False) -> Stage2Result:
    """Train the graph encoder on ``cfg.corpus`` and write R^G and the gates to the round's cache.

    Reads X and the edges from the corpus and, when ``cfg.use_modalities`` and the gate or the node inputs
    use them, stage 1's embeddings of ``cfg.round`` from ``cfg.cache_dir``; never labels, fans or splits. Saves the
    resolved config as ``<out_dir>/checkpoints/config.json`` and in the cache file's ``producer`` attribute.

    ``force``: overwrite the round's ``graph.h5`` even when another run (another output folder) wrote it
    (``cache.check_owner``).
    """
    cfg.validate()
    out_dir, tc = cfg.resolved_out_dir, cfg.trainer
    check_runtime(tc)  # an impossible device or a missing tracker package, before any work
    with torch_threads(tc.num_threads):
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        # Inputs: X, the edges and (if the gate or the node inputs use them) stage 1's embeddings of the round.
        resume = tc.resume_path(out_dir)
        if resume is not None:
            load_checkpoint(resume)  # a missing, damaged or code-carrying file: a clean error before any work
        graph = load_graph_inputs(
            Path(cfg.corpus), Path(cfg.cache_dir), cfg.round, cfg.needs_modalities, corpus
        )
        # before any training: another corpus's file, or another run's without force
        check_owner(graph_file(cfg.cache_dir, cfg.round), graph.fingerprint, run_dir=out_dir, force=force)
        check_memory(cfg, graph)  # a graph too large for this machine: refused before the model is built
        # The system, and the previous round's weights when continuing.
        system = Stage2System.from_config(graph, cfg)
        if cfg.init_checkpoint is not None:
            load_init_checkpoint(system, Path(cfg.init_checkpoint))
        # Fit, then the final (resumable) checkpoint.
        history = LossHistory()
        trainer = build_trainer(
            tc,
            out_dir,
            "stage 2",
            checkpoint_io=SafeCheckpointIO(),
            callbacks=[history],
            reload_dataloaders_every_n_epochs=1 if tc.batching != "full" else 0,  # new masks, new batches
            use_distributed_sampler=False,
            limit_val_batches=0,
            num_sanity_val_steps=0,
        )
        if trainer.is_global_zero:
            cfg.save(config_path(out_dir))
        # Full batch: the same large blocks every step, kept for reuse (mmga_common.allocator).
        with retained_heap(tc.batching == "full" and tc.retain_freed_memory):
            start = time.perf_counter()
            checkpoint = fit_and_save(trainer, tc, system, build_datamodule(cfg, system), out_dir, resume)
            metrics = history.summary()
            if tc.spawns_workers:  # the loss history stayed in the workers; their checkpoint knows the step
                metrics = {"steps_run": float(load_checkpoint(checkpoint)["global_step"])}
            metrics["fit_seconds"] = time.perf_counter() - start
            # Export R^G and the gates and write the round's cache file (rank 0 alone under ddp).
            if trainer.is_global_zero:
                start = time.perf_counter()
                # auto: the full forward on every path (without gradients it is the faster and the smaller export;
                # docs/performance.md "The export of the mini-batch paths")
                layerwise = tc.inference == "layerwise"
                outputs = compute_graph_outputs(system, tc.resolved_batch_size if layerwise else None)
                metrics["export_seconds"] = time.perf_counter() - start
                write_graph_outputs(
                    cfg.cache_dir,
                    cfg.round,
                    outputs,
                    fingerprint=graph.fingerprint,
                    producer=cfg.to_dict(),
                    model=describe_model(cfg),
                    user_ids=graph.user_ids,
                    run_dir=out_dir,
                )
    return Stage2Result(
        checkpoint=checkpoint,
        cache_file=graph_file(cfg.cache_dir, cfg.round),
        log_dir=csv_log_dir(trainer),
        metrics=metrics,
        config_file=config_path(out_dir),
        global_rank=int(trainer.global_rank),
    )


def check_memory(cfg: Stage2Config, graph: GraphInputs) -> None:
    """``Stage2InputError`` when the lower bound of training memory (``stage2_graph.memory``) exceeds what the
    machine has free."""
    input_dim = graph.features.shape[1] + 1 + sum(graph.modality_dims)  # X, degree, image and text
    needed = estimate_training_bytes(
        graph.num_nodes,
        int(graph.edges.shape[0]),
        input_dim,
        cfg.model.hidden_dim,
        cfg.model.num_layers,
        cfg.model.heads,
        full_batch=cfg.trainer.batching == "full",
    )
    problem = memory_problem(needed, available_bytes(cfg.trainer.accelerator))
    if problem is not None:
        raise Stage2InputError(problem)


def build_datamodule(cfg: Stage2Config, system: Stage2System) -> L.LightningDataModule:
    """The masking samples of each step: full-batch, neighbour-sampled or random-walk subgraph mini-batches."""
    dataset = MaskingDataset(
        system.structure.num_nodes,
        system.structure.edge_pairs,
        feature_mask_ratio=cfg.objective.feature_mask_ratio,
        edge_mask_ratio=cfg.objective.edge_mask_ratio,
        negative_ratio=cfg.objective.negative_ratio,
        seed=cfg.seed,
    )
    tc = cfg.trainer
    if tc.batching == "neighbor":
        return MiniBatchDataModule(
            partial(
                NeighborBatches, system.structure, dataset, tc.fanouts, tc.resolved_batch_size, seed=cfg.seed
            )
        )
    if tc.batching == "subgraph":
        return MiniBatchDataModule(
            partial(
                SubgraphBatches,
                system.structure,
                dataset,
                tc.walk_length,
                tc.resolved_batch_size,
                seed=cfg.seed,
            )
        )
    return Stage2DataModule(dataset)


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
