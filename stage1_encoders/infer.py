"""Inference with a trained stage 1: load the encoders and tokenizer from a checkpoint and embed any corpus.

No training and no gradients; the same export code as ``run_stage1`` (``export_user_embeddings``), so embedding
the training corpus with the final checkpoint reproduces the round's cache file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from cache import EncoderEmbeddings
from corpus import Corpus
from mmga_common.trainer import upgrade_stored_config
from stage1_encoders.checkpoint import load_stage1_checkpoint
from stage1_encoders.config import ConfigError, Stage1Config
from stage1_encoders.data import PostPreprocessor
from stage1_encoders.encoders import (
    ImageEncoder,
    TextEncoder,
    build_image_encoder,
    build_text_encoder,
    needs_pretrained_image,
    needs_pretrained_text,
    restore_frozen_image,
    restore_frozen_text,
)
from stage1_encoders.export import export_user_embeddings
from stage1_encoders.tokenizer import build_tokenizer


@dataclass
class TrainedEncoders:
    """Stage 1's trained encoders, in eval mode, with the config and tokenizer they were trained with."""

    config: Stage1Config
    tokenizer: object
    image_encoder: ImageEncoder
    text_encoder: TextEncoder


def _load_prefixed(module: torch.nn.Module, state: dict, prefix: str, path: Path) -> None:
    sub = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    try:
        module.load_state_dict(sub, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise ConfigError(
            str(path),
            None,
            None,
            f"the {prefix.rstrip('.')} weights do not fit the model its config describes "
            f"(written by another version?): {first}",
        ) from None


def load_trained_encoders(checkpoint: Path) -> TrainedEncoders:
    """Rebuild the encoders and tokenizer from a stage-1 checkpoint (``last.ckpt``) and load its weights.

    The architecture comes from the checkpoint's own ``stage1_config``. Its weights come from the checkpoint, but
    for a frozen pretrained text encoder, which a checkpoint does not store: those are loaded from its source
    again (offline for MiniLM-L6, which ships in a package) and checked against the checkpoint's digest.

    Raises:
        ConfigError: the file is missing, not a stage-1 checkpoint, its config is not valid for this code, or
            its weights do not fit (a checkpoint from another version).
    """
    checkpoint = Path(checkpoint)
    payload = load_stage1_checkpoint(checkpoint)
    try:
        cfg = Stage1Config.from_dict(
            upgrade_stored_config(payload["stage1_config"]), source=f"{checkpoint} (stored stage1_config)"
        )
    except ConfigError as err:
        raise ConfigError(
            err.source, err.line, err.field, f"{err.msg} (a checkpoint from another version of stage 1?)"
        ) from None
    if payload.get("stage1_tokenizer") is None and cfg.model.text_model == "tiny":
        raise ConfigError(str(checkpoint), None, None, "has no stored tokenizer (stage1_tokenizer)")
    tokenizer = build_tokenizer(cfg.model, None, payload.get("stage1_tokenizer"))
    # frozen pretrained weights left out of the checkpoint come from their source (offline: MiniLM's and
    # EfficientNet-Lite0's packages)
    image_encoder = build_image_encoder(
        cfg.model.image_model,
        cfg.model.image_pretrained,
        load_weights=needs_pretrained_image(payload),
        head_dim=cfg.model.image_head_dim,
        head_hidden=cfg.model.image_head_hidden,
    )
    text_encoder = build_text_encoder(cfg.model, tokenizer, load_weights=needs_pretrained_text(payload))
    state = restore_frozen_text(text_encoder, payload["state_dict"], payload, checkpoint)
    state = restore_frozen_image(image_encoder, state, payload, checkpoint)
    _load_prefixed(image_encoder, state, "image_encoder.", checkpoint)
    _load_prefixed(text_encoder, state, "text_encoder.", checkpoint)
    image_encoder.eval()
    text_encoder.eval()
    return TrainedEncoders(cfg, tokenizer, image_encoder, text_encoder)


def encode_corpus(
    encoders: TrainedEncoders,
    corpus: Corpus,
    *,
    batch_size: int | None = None,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> EncoderEmbeddings:
    """Every user's pooled R^I ``[N, Di]`` and R^T ``[N, Dt]`` (and masks) for ``corpus``, without gradients.

    ``batch_size`` defaults to the training config's ``data.export_batch_size`` (the batches the cache was
    written with, so the training corpus gives its cache back exactly).
    """
    cfg = encoders.config
    encoders.image_encoder.to(device)
    encoders.text_encoder.to(device)
    prep = PostPreprocessor(
        corpus,
        encoders.tokenizer,
        encoders.image_encoder.image_transform(),
        encoders.image_encoder.preprocess_cfg["size"],
        cfg.model.max_text_length,
        image_cache_mb=0.0,
    )
    return export_user_embeddings(
        encoders.image_encoder,
        encoders.text_encoder,
        prep,
        batch_size=batch_size or cfg.data.export_batch_size,
        device=device,
        progress=progress,
    )
