"""``run_stage1``: the public entry of stage 1 (the bridge calls it in-process; ``stage1_encoders.run`` too).

Train the encoders on the corpus, save the final checkpoint (with the resolved config and tokenizer),
export every user's pooled embeddings and write them to the cache for the configured round.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from cache import (
    CacheError,
    check_owner,
    encoder_file,
    graph_file,
    read_graph_outputs,
    write_encoder_embeddings,
)
from cache.checkpoint import SafeCheckpointIO
from corpus import Corpus, reuse_or_load
from mmga_common.layout import (
    StageResult,
    checkpoint_path,
    config_path,
    image_encoder_dir,
    text_encoder_dir,
)
from mmga_common.threads import torch_threads
from mmga_common.trainer import build_trainer, check_runtime, csv_log_dir, fit_and_save
from stage1_encoders.checkpoint import check_architecture, load_stage1_checkpoint, load_weights
from stage1_encoders.config import ConfigError, Stage1Config
from stage1_encoders.encoders import Progress, clear_lower_states_memo
from stage1_encoders.export import export_user_embeddings
from stage1_encoders.hub import save_image_encoder, save_text_encoder
from stage1_encoders.parts import Stage1Parts, build_parts
from stage1_encoders.system import LOSS_NAMES

Stage1Result = StageResult  # what run_stage1 returns (mmga_common.layout)


def run_stage1(cfg: Stage1Config, corpus: Corpus | None = None, *, force: bool = False) -> Stage1Result:
    """Train stage 1 for ``cfg.round`` and write ``<cache>/round_<R>/encoders.h5``; see ``StageResult``. The
    encoders are also saved as ``text_encoder/`` (transformers) and ``image_encoder/`` (open_clip) beside the
    checkpoint (``stage1_encoders.hub``).

    ``corpus``: the corpus of ``cfg.corpus`` if the caller has it loaded already (it is read once per run then).
    ``force``: overwrite the round's ``encoders.h5`` even when another run (another output folder) wrote it
    (``cache.check_owner``).
    """
    cfg.validate()  # the bounds and cross-field checks (the CLI and the bridge built it typed, once)
    cfg = dataclasses.replace(cfg, out_dir=cfg.resolved_out_dir)
    tc = cfg.trainer
    check_runtime(tc)  # an impossible device or a missing tracker package, before any work
    with torch_threads(tc.num_threads):
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        # Inputs: the corpus, stage 2's edge weights of an earlier round, the checkpoint to continue from.
        corpus = reuse_or_load(cfg.corpus, corpus)
        if corpus.num_edges == 0:
            raise ConfigError(
                str(cfg.corpus),
                None,
                "edges",
                "the corpus has no edges: stage 1 samples user pairs from them",
            )
        # before any training: another corpus's file, or another run's without force
        check_owner(
            encoder_file(cfg.cache_dir, cfg.round), corpus.fingerprint, run_dir=cfg.out_dir, force=force
        )
        edge_weight = read_edge_weight(cfg, corpus)
        resume = tc.resume_path(cfg.out_dir)
        source = resume or cfg.init_checkpoint
        payload = None if source is None else load_stage1_checkpoint(source)
        if payload is not None:
            check_architecture(cfg, payload, source)
        # The system: tokenizer, encoders, heads and data; the previous round's weights when continuing.
        parts = build_parts(cfg, corpus, payload, edge_weight)
        if cfg.init_checkpoint is not None and resume is None:
            load_weights(parts.system, payload, cfg.init_checkpoint)
        # Fit, then the final (resumable) checkpoint.
        artifacts = _Artifacts(cfg.to_dict(), parts.tokenizer.backend_tokenizer.to_str())
        trainer = build_trainer(
            tc,
            cfg.out_dir,
            "stage 1",
            checkpoint_io=SafeCheckpointIO(),
            callbacks=[artifacts],
            accumulate_grad_batches=tc.accumulate_grad_batches,
        )
        if trainer.is_global_zero:
            _save_config(cfg, parts)
        started = time.perf_counter()
        checkpoint = fit_and_save(
            trainer,
            tc,
            parts.system,
            parts.datamodule,
            cfg.out_dir,
            resume,
            frozen_eval_modules=parts.system.text_encoder.num_eval_modules()
            + parts.system.image_encoder.num_eval_modules(),
        )
        train_seconds = time.perf_counter() - started
        if trainer.is_global_zero:
            save_text_encoder(parts.system.text_encoder, parts.tokenizer, text_encoder_dir(cfg.out_dir))
            save_image_encoder(
                parts.system.image_encoder, cfg.model.image_model, image_encoder_dir(cfg.out_dir)
            )
        # Export every user's embeddings and write the round's cache file.
        started = time.perf_counter()
        cache_file = _export(cfg, corpus, parts, trainer)
        export_seconds = time.perf_counter() - started
    metrics = _metrics(
        cfg, parts, trainer, artifacts, checkpoint, train_seconds, export_seconds, corpus.num_posts
    )
    return Stage1Result(
        checkpoint=checkpoint,
        cache_file=cache_file,
        log_dir=csv_log_dir(trainer),
        metrics=metrics,
        config_file=config_path(cfg.out_dir),
        global_rank=int(trainer.global_rank),
    )


def prepare_text_states(
    cfg: Stage1Config,
    corpus: Corpus | None = None,
    threads: int | None = None,
    progress: Progress | None = None,
    image_progress: Progress | None = None,
) -> bool:
    """Compute the frozen encoders' states of ``cfg`` into ``cfg.data.text_states_dir`` now, with ``threads``
    torch threads (default: the config's), so that the stage-1 runs sharing that folder load them instead of
    computing them: the frozen text layers' caption states (``LowerStates``) and a frozen pretrained image
    tower's output of every image (``ImageStates``). Returns whether there was anything to compute: False when
    ``cfg`` freezes neither or names no folder. Nothing is trained or written besides the states files.
    ``progress(captions done, captions)`` follows the caption states' computation and ``image_progress(images
    done, images)`` the image states' (neither is called for states that are loaded)."""
    from stage1_encoders.image_backbones import PACKAGED_IMAGE_MODELS
    from stage1_encoders.image_states import clear_image_states_memo

    text = cfg.model.text_tuned_layers is not None
    image = cfg.model.image_model in PACKAGED_IMAGE_MODELS
    if not (text or image) or cfg.data.text_states_dir is None:
        return False
    cfg.validate()
    with torch_threads(threads or cfg.trainer.num_threads), torch.random.fork_rng(devices=[]):
        corpus = reuse_or_load(cfg.corpus, corpus)
        # seeded as run_stage1 seeds: a text model built from a config (no pretrained weights) then has the
        # very frozen weights the run will have, hence the same states file
        torch.manual_seed(cfg.seed)
        system = build_parts(cfg, corpus).system
        if text:
            system.text_encoder.compute_lower_states(progress)
        if image:
            system.image_encoder.compute_states(image_progress)
        del system  # dropped before the memos are cleared: the encoders and their states refer to each other
    # the files hold them now: this process (the bridge's main one) does not keep a second copy in memory
    clear_lower_states_memo()
    clear_image_states_memo()
    return True


class _Artifacts(Callback):
    """Stores the resolved config and the tokenizer inside every checkpoint, counts posts seen, and gives each
    DDP rank its own sampling stream."""

    def __init__(self, config: dict, tokenizer_json: str):
        self.config, self.tokenizer_json = config, tokenizer_json
        self.posts_seen = 0

    def on_fit_start(self, trainer, pl_module) -> None:
        # hparams.yaml in the csv log folder (and the config in any tracker), as stage 2's system does.
        for logger in trainer.loggers:
            logger.log_hyperparams({"stage1_config": self.config})

    def on_train_start(self, trainer, pl_module) -> None:
        # Every rank was seeded alike; give each its own negatives, posts and masks.
        if trainer.world_size > 1:
            torch.manual_seed(int(self.config["seed"]) + trainer.global_rank)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.posts_seen += int(batch["num_posts"])

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint["stage1_config"] = self.config
        checkpoint["stage1_tokenizer"] = self.tokenizer_json


def read_edge_weight(cfg: Stage1Config, corpus: Corpus) -> np.ndarray | None:
    """float32 [E] weights of the GCL positives from stage 2's cache, or None."""
    if cfg.edge_weight_round is None:
        return None
    graph = read_graph_outputs(
        cfg.cache_dir,
        cfg.edge_weight_round,
        fingerprint=corpus.fingerprint,
        num_users=corpus.num_users,
        num_edges=corpus.num_edges,
        user_ids=corpus.user_ids,
    )
    weight = graph.edge_weight.astype(np.float32)
    if cfg.losses.edge_weight_normalize == "mean":
        mean = float(weight.mean()) if weight.size else 0.0
        if mean <= 0:
            raise CacheError(
                graph_file(cfg.cache_dir, cfg.edge_weight_round),
                "edge_weight",
                "every edge weight is 0: GCL positives would vanish",
            )
        weight = weight / mean
    return weight


def summarize_history(history: dict[str, list]) -> dict:
    """First/last values and means of every logged loss; the per-step values are read from the device once,
    here, not during training."""
    out = {}
    for name, logged in history.items():
        if not logged:
            continue
        values = [float(v) for v in torch.stack([torch.as_tensor(v) for v in logged]).cpu().tolist()]
        window = max(1, min(20, len(values) // 10))
        out[name] = {
            "first": values[0],
            "last": values[-1],
            "first_mean": float(np.mean(values[:window])),
            "last_mean": float(np.mean(values[-window:])),
            "steps": len(values),
        }
    return out


def _save_config(cfg: Stage1Config, parts: Stage1Parts) -> None:
    """The resolved config and the tokenizer beside the checkpoint (they are inside every checkpoint too)."""
    ckpt_dir = checkpoint_path(cfg.out_dir).parent
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    cfg.save(config_path(cfg.out_dir))
    parts.tokenizer.save_pretrained(ckpt_dir / "tokenizer")


def _export(cfg: Stage1Config, corpus: Corpus, parts: Stage1Parts, trainer: L.Trainer) -> Path:
    """Encode every post (sharded across ranks under DDP) and write the cache file from rank 0."""
    system = parts.system
    embeddings = export_user_embeddings(
        system.image_encoder,
        system.text_encoder,
        parts.prep,
        batch_size=cfg.data.export_batch_size,
        device=next(system.parameters()).device,
        num_workers=cfg.data.num_workers,
        progress=cfg.trainer.enable_progress_bar,
    )
    cache_path = encoder_file(cfg.cache_dir, cfg.round)
    if trainer.is_global_zero:
        text_type = system.text_encoder.mlm_model.config.model_type
        cache_path = write_encoder_embeddings(
            cfg.cache_dir,
            cfg.round,
            embeddings,
            fingerprint=corpus.fingerprint,
            producer=cfg.to_dict(),
            model=f"open_clip {cfg.model.image_model} + {cfg.model.text_model} text ({text_type})",
            user_ids=corpus.user_ids,
            run_dir=cfg.out_dir,
        )
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
    return Path(cache_path)


def _metrics(cfg, parts, trainer, artifacts, checkpoint, train_seconds, export_seconds, num_posts) -> dict:
    """The loss summary, the step reached, timings and throughputs (docs/stage1.md)."""
    spawned = cfg.trainer.spawns_workers
    metrics = summarize_history(parts.system.loss_history)
    metrics.update(
        # Under ddp_spawn this process's trainer never stepped; the workers' final checkpoint knows.
        global_step=int(
            load_stage1_checkpoint(checkpoint)["global_step"] if spawned else trainer.global_step
        ),
        train_seconds=train_seconds,
        train_posts_per_second=(  # the workers' post counts stay in the workers under ddp_spawn
            artifacts.posts_seen / train_seconds if train_seconds > 0 and not spawned else float("nan")
        ),
        export_seconds=export_seconds,
        export_posts_per_second=num_posts / export_seconds if export_seconds > 0 else float("nan"),
        loss_terms=[name for name in LOSS_NAMES if parts.system.weights[name] > 0],
    )
    return metrics
