"""Tiny stage-1 building blocks shared by the stage-1 tests (built once per session)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from stage1_test_utils import TINY_MODEL, GuardedCorpus

from stage1_encoders.config import ModelConfig
from stage1_encoders.data import PostPreprocessor
from stage1_encoders.encoders import ImageEncoder, TextEncoder, build_image_encoder, build_text_encoder
from stage1_encoders.tokenizer import build_tokenizer


@dataclass
class TinyParts:
    corpus: object
    model_cfg: ModelConfig
    tokenizer: object
    image_encoder: ImageEncoder
    text_encoder: TextEncoder
    prep: PostPreprocessor


@pytest.fixture(scope="session")
def tiny_parts(tiny_corpus_loaded) -> TinyParts:
    import torch

    torch.manual_seed(0)
    corpus = GuardedCorpus(tiny_corpus_loaded)
    model_cfg = ModelConfig(**TINY_MODEL)
    tokenizer = build_tokenizer(model_cfg, corpus.post_text)
    image_encoder = build_image_encoder(model_cfg.image_model)
    text_encoder = build_text_encoder(model_cfg, tokenizer)
    prep = PostPreprocessor(
        corpus,
        tokenizer,
        image_encoder.image_transform(),
        image_encoder.preprocess_cfg["size"],
        model_cfg.max_text_length,
    )
    return TinyParts(corpus, model_cfg, tokenizer, image_encoder, text_encoder, prep)
