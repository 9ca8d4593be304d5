"""``run_stage1``: the public entry of stage 1 (the bridge calls it in-process; ``stage1_encoders.run`` too).

Train the encoders on the corpus, save the final checkpoint (with the resolved config and tokenizer),
export every user's pooled embeddings and write them to the cache for the configured round.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from cache import CacheError, encoder_file, read_cache_info, read_graph_outputs, write_encoder_embeddings
from cache.checkpoint import SafeCheckpointIO
from corpus import Corpus, reuse_or_load
from mmga_common.layout import LOG_DIR, StageResult, checkpoint_path, config_path
from mmga_common.progress import StepProgress
from mmga_common.threads import torch_threads
from stage1_encoders.config import ConfigError, Stage1Config
from stage1_encoders.data import PairBatchCollator, PostPreprocessor, Stage1DataModule
from stage1_encoders.encoders import build_image_encoder, build_text_encoder
from stage1_encoders.export import export_user_embeddings
from stage1_encoders.system import HEAD_NAMES, LOSS_NAMES, Stage1System, upgrade_legacy_state_dict
from stage1_encoders.tokenizer import build_tokenizer

log = logging.getLogger(__name__)

# Architecture fields that must match between a checkpoint and the config continuing from it.
_ARCH_FIELDS = (
    "image_model",
    "text_model",
    "text_name_or_path",
    "text_hidden_size",
    "text_layers",
    "text_heads",
    "text_intermediate_size",
    "text_vocab_size",
)


Stage1Result = StageResult  # what run_stage1 returns (mmga_common.layout)


class _Artifacts(Callback):
    """Stores the resolved config and the tokenizer inside every checkpoint, counts posts seen, and gives each
    DDP rank its own sampling stream."""

    def __init__(self, config: dict, tokenizer_json: str):
        self.config, self.tokenizer_json = config, tokenizer_json
        self.posts_seen = 0

    def on_train_start(self, trainer, pl_module) -> None:
        # Every rank was seeded alike; give each its own negatives, posts and masks.
        if trainer.world_size > 1:
            torch.manual_seed(int(self.config["seed"]) + trainer.global_rank)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.posts_seen += int(batch["num_posts"])

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint["stage1_config"] = self.config
        checkpoint["stage1_tokenizer"] = self.tokenizer_json


class _SaveFinalInWorkers(Callback):
    """Saves the final checkpoint inside the training processes. Under ``ddp_spawn`` the caller's process
    gets back the weights only (no optimizer state, step 0), so a checkpoint saved there could not resume."""

    def __init__(self, path: Path):
        self.path = path

    def on_train_end(self, trainer, pl_module) -> None:
        trainer.save_checkpoint(self.path, weights_only=False)


SPAWN_STRATEGIES = ("ddp_spawn", "ddp_notebook")


def _spawns_workers(cfg: Stage1Config) -> bool:
    tc = cfg.trainer
    return tc.strategy in SPAWN_STRATEGIES and tc.devices * tc.num_nodes > 1


def load_stage1_checkpoint(path: Path) -> dict:
    if not Path(path).is_file():
        raise ConfigError(str(path), None, None, "checkpoint file not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means "not our checkpoint"
        raise ConfigError(str(path), None, None, f"cannot read the checkpoint: {err}") from None
    if "state_dict" not in payload or "stage1_config" not in payload:
        raise ConfigError(
            str(path), None, None, "is not a stage-1 checkpoint (no state_dict / stage1_config)"
        )
    return payload


def _check_architecture(cfg: Stage1Config, payload: dict, path: Path) -> None:
    stored = payload["stage1_config"].get("model", {})
    for name in _ARCH_FIELDS:
        if name in stored and stored[name] != getattr(cfg.model, name):
            raise ConfigError(
                "config",
                None,
                f"model.{name}",
                f"is {getattr(cfg.model, name)!r} but checkpoint {path} was trained with {stored[name]!r}; "
                "a round continues with the same architecture",
            )


def _load_weights(system: Stage1System, payload: dict, path: Path) -> None:
    """Load the checkpoint's weights strictly. A head is taken whole or not at all: one for a loss switched off
    now is dropped, and one for a loss that was off in the previous round starts fresh. Checkpoints from before
    the heads moved out of the losses are renamed on the way in."""
    state = upgrade_legacy_state_dict(payload["state_dict"])
    encoder_missing = [
        k for k in system.state_dict() if k.startswith(("image_encoder.", "text_encoder.")) and k not in state
    ]
    if encoder_missing:
        raise ConfigError(
            str(path), None, None, f"checkpoint lacks encoder weights, e.g. {encoder_missing[:3]}"
        )
    built = {name for name in HEAD_NAMES if getattr(system, name) is not None}
    stored = {k.split(".")[0] for k in state if k.split(".")[0] in HEAD_NAMES}
    if stored - built:
        log.info("stage 1: checkpoint heads not used now: %s", sorted(stored - built))
        state = {k: v for k, v in state.items() if k.split(".")[0] not in stored - built}
    if built - stored:
        log.info("stage 1: heads not in %s start fresh: %s", path, sorted(built - stored))
        state.update({k: v for k, v in system.state_dict().items() if k.split(".")[0] in built - stored})
    try:
        system.load_state_dict(state)
    except RuntimeError as err:
        raise ConfigError(str(path), None, None, f"weights do not fit the configured model: {err}") from None


def _check_cache_belongs(cfg: Stage1Config, corpus: Corpus) -> None:
    """Refuse, before training, to write into a cache made for another corpus."""
    path = encoder_file(cfg.cache_dir, cfg.round)
    if path.exists():
        info = read_cache_info(path)
        if info.corpus_fingerprint != corpus.fingerprint:
            raise CacheError(
                path,
                None,
                f"belongs to corpus fingerprint {info.corpus_fingerprint}, not to {cfg.corpus} "
                f"({corpus.fingerprint}): use another --cache folder for this corpus",
            )


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
    )
    weight = graph.edge_weight.astype(np.float32)
    if cfg.losses.edge_weight_normalize == "mean":
        mean = float(weight.mean()) if weight.size else 0.0
        if mean <= 0:
            raise CacheError(
                encoder_file(cfg.cache_dir, cfg.edge_weight_round).with_name("graph.h5"),
                "edge_weight",
                "every edge weight is 0: GCL positives would vanish",
            )
        weight = weight / mean
    return weight


def summarize_history(history: dict[str, list[float]]) -> dict:
    out = {}
    for name, values in history.items():
        if not values:
            continue
        window = max(1, min(20, len(values) // 10))
        out[name] = {
            "first": values[0],
            "last": values[-1],
            "first_mean": float(np.mean(values[:window])),
            "last_mean": float(np.mean(values[-window:])),
            "steps": len(values),
        }
    return out


def _trainer(cfg: Stage1Config, out_dir: Path, callbacks: list[Callback]) -> L.Trainer:
    tc = cfg.trainer
    loggers = []
    if "csv" in tc.loggers:
        loggers.append(CSVLogger(save_dir=out_dir, name=LOG_DIR, version=""))
    if "tensorboard" in tc.loggers:
        loggers.append(TensorBoardLogger(save_dir=out_dir, name="tensorboard", version=""))
    if tc.checkpoint_every_n_steps is not None:
        callbacks.append(
            ModelCheckpoint(
                dirpath=out_dir / "checkpoints",
                filename="step{step:06d}",
                every_n_train_steps=tc.checkpoint_every_n_steps,
                save_top_k=-1,
                auto_insert_metric_name=False,
            )
        )
    if tc.enable_progress_bar:
        callbacks.append(StepProgress("stage 1"))
    max_epochs = tc.max_epochs if tc.max_epochs is not None else -1
    return L.Trainer(
        max_steps=tc.max_steps,
        max_epochs=max_epochs if tc.max_steps > 0 or tc.max_epochs is not None else None,
        accelerator=tc.accelerator,
        devices=tc.devices,
        num_nodes=tc.num_nodes,
        strategy=tc.strategy,
        precision=tc.precision,
        accumulate_grad_batches=tc.accumulate_grad_batches,
        gradient_clip_val=tc.gradient_clip_val,
        log_every_n_steps=tc.log_every_n_steps,
        enable_progress_bar=tc.enable_progress_bar,
        enable_model_summary=False,
        enable_checkpointing=tc.checkpoint_every_n_steps is not None,
        logger=loggers or False,
        callbacks=callbacks,
        default_root_dir=out_dir,
        deterministic=tc.deterministic,
        plugins=[SafeCheckpointIO()],  # weights-only loads (also on resume) and atomic checkpoint writes
    )


@dataclass
class Stage1Parts:
    """Everything a stage-1 fit needs, built from a config (shared by ``run_stage1`` and the benchmark)."""

    tokenizer: object
    system: Stage1System
    prep: PostPreprocessor
    datamodule: Stage1DataModule


def build_parts(
    cfg: Stage1Config, corpus: Corpus, payload: dict | None = None, edge_weight: np.ndarray | None = None
) -> Stage1Parts:
    """Tokenizer, encoders, system and data for ``cfg``. With ``payload`` (a stage-1 checkpoint) the tokenizer
    comes from it and the encoders are built without downloading weights (the checkpoint supplies them)."""
    tokenizer = build_tokenizer(
        cfg.model, corpus.post_text, None if payload is None else payload.get("stage1_tokenizer")
    )
    image_encoder = build_image_encoder(
        cfg.model.image_model, cfg.model.image_pretrained, load_weights=payload is None
    )
    text_encoder = build_text_encoder(cfg.model, tokenizer, load_weights=payload is None)
    lc, oc = cfg.losses, cfg.optim
    system = Stage1System(
        image_encoder,
        text_encoder,
        lm_weight=lc.lm_weight,
        ita_weight=lc.ita_weight,
        gcl_image_weight=lc.gcl_image_weight,
        gcl_text_weight=lc.gcl_text_weight,
        label_smoothing=lc.label_smoothing,
        ita_dim=lc.ita_dim,
        init_temperature=lc.init_temperature,
        max_logit_scale=lc.max_logit_scale,
        gcl_hidden_dim=lc.gcl_hidden_dim,
        gcl_form=lc.gcl_form,
        text_feature_input=lc.text_feature_input,
        lr=oc.lr,
        head_lr_scale=oc.head_lr_scale,
        weight_decay=oc.weight_decay,
        warmup_steps=oc.warmup_steps,
        min_lr_ratio=oc.min_lr_ratio,
    )
    prep = PostPreprocessor(
        corpus,
        tokenizer,
        image_encoder.image_transform(),
        image_encoder.preprocess_cfg["size"],
        cfg.model.max_text_length,
        image_cache_mb=cfg.data.image_cache_mb,
    )
    collator = PairBatchCollator(
        corpus,
        prep,
        negatives_per_positive=cfg.data.negatives_per_positive,
        batch_negatives_per_positive=cfg.data.batch_negatives_per_positive,
        posts_per_user=cfg.data.posts_per_user,
        mlm=lc.lm_weight > 0,
        mlm_probability=lc.mlm_probability,
        edge_weight=edge_weight,
    )
    datamodule = Stage1DataModule(collator, corpus.num_edges, cfg.data.pairs_per_batch, cfg.data.num_workers)
    return Stage1Parts(tokenizer, system, prep, datamodule)


def run_stage1(cfg: Stage1Config, corpus: Corpus | None = None) -> Stage1Result:
    """Train stage 1 for ``cfg.round`` and write ``<cache>/round_<R>/encoders.h5``; see ``Stage1Result``.

    ``corpus``: the corpus of ``cfg.corpus`` if the caller has it loaded already (it is read once per run then).
    """
    cfg = Stage1Config.from_dict(cfg.to_dict(), source="Stage1Config")  # type and range checks
    with torch_threads(cfg.trainer.num_threads):
        return _run(cfg, corpus)


def _prepare(cfg: Stage1Config, corpus: Corpus | None) -> tuple[Corpus, Stage1Parts]:
    """Load and check the corpus, cache and checkpoint; build the parts (weights loaded when continuing)."""
    corpus = reuse_or_load(cfg.corpus, corpus)
    if corpus.num_edges == 0:
        raise ConfigError(
            str(cfg.corpus), None, "edges", "the corpus has no edges: stage 1 samples user pairs from them"
        )
    _check_cache_belongs(cfg, corpus)
    edge_weight = read_edge_weight(cfg, corpus)
    payload = None
    source = cfg.trainer.resume_from or cfg.init_checkpoint
    if source is not None:
        payload = load_stage1_checkpoint(source)
        _check_architecture(cfg, payload, source)
    parts = build_parts(cfg, corpus, payload, edge_weight)
    if cfg.init_checkpoint is not None and cfg.trainer.resume_from is None:
        _load_weights(parts.system, payload, cfg.init_checkpoint)
    return corpus, parts


def _fit(cfg: Stage1Config, parts: Stage1Parts) -> tuple[L.Trainer, _Artifacts, Path]:
    """Save config and tokenizer, train, save the final checkpoint."""
    ckpt_dir = checkpoint_path(cfg.out_dir).parent
    config_dict = cfg.to_dict()
    artifacts = _Artifacts(config_dict, parts.tokenizer.backend_tokenizer.to_str())
    checkpoint = checkpoint_path(cfg.out_dir)
    spawned = _spawns_workers(cfg)
    trainer = _trainer(cfg, cfg.out_dir, [artifacts] + ([_SaveFinalInWorkers(checkpoint)] if spawned else []))
    if trainer.is_global_zero:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        config_path(cfg.out_dir).write_text(json.dumps(config_dict, indent=2) + "\n", encoding="utf-8")
        parts.tokenizer.save_pretrained(ckpt_dir / "tokenizer")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings(
            "ignore", message=r".*isinstance\(treespec, LeafSpec\).*"
        )  # Lightning internals
        trainer.fit(parts.system, datamodule=parts.datamodule, ckpt_path=cfg.trainer.resume_from)
    if not spawned:
        trainer.save_checkpoint(
            checkpoint, weights_only=False
        )  # full state: resumable with trainer.resume_from
    return trainer, artifacts, checkpoint


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
        )
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
    return Path(cache_path)


def _run(cfg: Stage1Config, corpus: Corpus | None) -> Stage1Result:
    cfg.out_dir = cfg.resolved_out_dir()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    corpus, parts = _prepare(cfg, corpus)
    started = time.perf_counter()
    trainer, artifacts, checkpoint = _fit(cfg, parts)
    train_seconds = time.perf_counter() - started
    started = time.perf_counter()
    cache_path = _export(cfg, corpus, parts, trainer)
    export_seconds = time.perf_counter() - started

    system = parts.system
    metrics = summarize_history(system.loss_history)
    metrics.update(
        # Under ddp_spawn this process's trainer never stepped; the workers' final checkpoint knows.
        global_step=int(
            load_stage1_checkpoint(checkpoint)["global_step"] if _spawns_workers(cfg) else trainer.global_step
        ),
        train_seconds=train_seconds,
        train_posts_per_second=(  # the workers' post counts stay in the workers under ddp_spawn
            artifacts.posts_seen / train_seconds
            if train_seconds > 0 and not _spawns_workers(cfg)
            else float("nan")
        ),
        export_seconds=export_seconds,
        export_posts_per_second=corpus.num_posts / export_seconds if export_seconds > 0 else float("nan"),
        loss_terms=[name for name in LOSS_NAMES if system.weights[name] > 0],
    )
    return Stage1Result(
        checkpoint=checkpoint,
        cache_file=cache_path,
        log_dir=cfg.out_dir / LOG_DIR,
        metrics=metrics,
        config_file=config_path(cfg.out_dir),
        global_rank=int(trainer.global_rank),
    )
