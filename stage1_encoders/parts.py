"""The parts of a stage-1 fit built from a config: tokenizer, encoders, the Lightning system, and the data
(shared by ``run_stage1`` and benchmarks/bench_stage1.py)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from corpus import Corpus
from stage1_encoders.config import Stage1Config
from stage1_encoders.data import PairBatchCollator, PostPreprocessor, Stage1DataModule
from stage1_encoders.encoders import (
    build_image_encoder,
    build_text_encoder,
    needs_pretrained_image,
    needs_pretrained_text,
)
from stage1_encoders.system import Stage1System
from stage1_encoders.tokenizer import build_tokenizer


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
    # a checkpoint that left a frozen pretrained image tower out gets it from its package again
    image_encoder = build_image_encoder(
        cfg.model.image_model,
        cfg.model.image_pretrained,
        load_weights=needs_pretrained_image(payload),
        head_dim=cfg.model.image_head_dim,
        head_hidden=cfg.model.image_head_hidden,
    )
    # a checkpoint that left the frozen pretrained text weights out gets them from the source again
    text_encoder = build_text_encoder(cfg.model, tokenizer, load_weights=needs_pretrained_text(payload))
    lc, oc = cfg.losses, cfg.optim
    # InfoNCE batches are anchor users with sampled neighbours; without a GCL term (the no-alignment baseline)
    # the batches stay edges + uniform negatives, so that baseline does not depend on gcl_form
    # a graph head's GCL (text, image) has batches of its own, shared by both heads: the post batches then carry
    # InfoNCE's anchors and neighbours only for a GCL without a head, and are otherwise the no-GCL batches (edges
    # and uniform negatives)
    text_head = cfg.model.text_head_dim > 0 and lc.gcl_text_weight > 0
    image_head = cfg.model.image_head_dim > 0 and lc.gcl_image_weight > 0
    graph_head = text_head or image_head
    infonce = lc.gcl_form == "infonce" and (
        (lc.gcl_image_weight > 0 and not image_head) or (lc.gcl_text_weight > 0 and not text_head)
    )
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
        gcl_embed_dim=lc.gcl_embed_dim,
        gcl_soft_targets=lc.gcl_soft_targets,
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
        # InfoNCE's negatives are the other anchors' neighbours: uniform negative pairs would only cost encoding
        negatives_per_positive=0.0 if infonce else cfg.data.negatives_per_positive,
        batch_negatives_per_positive=cfg.data.batch_negatives_per_positive,
        posts_per_user=cfg.data.posts_per_user,
        mlm=lc.lm_weight > 0,
        mlm_probability=lc.mlm_probability,
        edge_weight=edge_weight,
        positives="neighbours" if infonce else "edges",
        common_neighbours=(infonce or graph_head) and lc.gcl_soft_targets > 0,
        text_gcl_users=cfg.data.text_gcl_users if graph_head else 0,
        load_pixels=not image_encoder.frozen,
    )
    if (
        cfg.model.text_tuned_layers is not None
    ):  # frozen lower layers: their states once, for training and export
        text_encoder.use_cached_lower_states(prep, cfg.data.export_batch_size, cfg.data.text_states_dir)
    if image_encoder.frozen:  # a frozen pretrained image tower: its output of every image once, likewise
        image_encoder.use_cached_states(prep, cfg.data.export_batch_size, cfg.data.text_states_dir)
    datamodule = Stage1DataModule(
        collator, collator.num_items, cfg.data.pairs_per_batch, cfg.data.num_workers
    )
    return Stage1Parts(tokenizer, system, prep, datamodule)
