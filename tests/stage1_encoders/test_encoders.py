"""Encoders build from presets offline; the MiniLM preset loads the real pretrained weights."""

from __future__ import annotations

import logging

import numpy as np
import open_clip
import pytest
import torch

from stage1_encoders.config import ModelConfig
from stage1_encoders.encoders import PRESET_IMAGE_MODELS, build_image_encoder, build_text_encoder, minilm_path
from stage1_encoders.tokenizer import build_tokenizer, tokenizer_from_json


@pytest.mark.parametrize("name", ["mmga-vit-tiny", "mmga-vit-small"])
def test_image_presets_build_offline(name):
    encoder = build_image_encoder(name)
    assert name in open_clip.list_models() and name in PRESET_IMAGE_MODELS
    pixels = torch.randn(3, 3, 32, 32)
    out = encoder(pixels)
    assert out.shape == (3, encoder.dim)
    out.sum().backward()
    assert encoder.visual.conv1.weight.grad is not None
    transform = encoder.image_transform()
    from PIL import Image

    img = Image.fromarray(np.zeros((48, 40, 3), dtype=np.uint8))
    assert transform(img).shape == (3, 32, 32)


def test_tiny_text_preset_tokenizer_is_trained_on_captions(tiny_parts):
    tok = tiny_parts.tokenizer
    words = {w for text in tiny_parts.corpus.post_text for w in text.lower().split()}
    vocab = tok.get_vocab()
    assert len(vocab) <= tiny_parts.model_cfg.text_vocab_size
    assert sum(w in vocab for w in words) > 0.5 * len(words)
    ranked = sorted(
        (w for w in words if len(w) > 1),
        key=lambda w: -sum(t.lower().split().count(w) for t in tiny_parts.corpus.post_text),
    )
    assert all(w in vocab for w in ranked[:10])
    enc = tok(tiny_parts.corpus.post_text[0])
    assert enc["input_ids"][0] == tok.cls_token_id and enc["input_ids"][-1] == tok.sep_token_id
    assert all(len(tok.tokenize(w)) == 1 for w in ranked[:10])  # frequent caption words are whole tokens
    assert tok.unk_token not in tok.tokenize("zebra-42, quokka!")  # unseen ASCII words split into pieces
    retrained = build_tokenizer(tiny_parts.model_cfg, list(tiny_parts.corpus.post_text))
    assert retrained.get_vocab() == vocab  # deterministic: every DDP rank and every rerun agree
    again = tokenizer_from_json(tok.backend_tokenizer.to_str(), 16)
    texts = tiny_parts.corpus.post_text[:20]
    assert again(texts)["input_ids"] == tok(texts)["input_ids"]
    assert again.mask_token_id == tok.mask_token_id and again.pad_token_id == tok.pad_token_id


def test_text_encoder_features_and_mlm_logits(tiny_parts):
    text = tiny_parts.text_encoder
    text.eval()
    ids, mask = tiny_parts.prep.texts(np.flatnonzero(tiny_parts.corpus.post_has_text)[:4])
    cls = text(ids, mask)
    assert cls.shape == (4, 32)
    labels = torch.full_like(ids, -100)
    labels[:, 1] = ids[:, 1]
    labels[2, 2] = ids[2, 2]
    logits, targets = text.mlm_logits(ids, mask, labels)
    full = text.mlm_model(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(logits, full[labels != -100])
    assert torch.equal(targets, ids[labels != -100])
    cls_masked, logits_masked, _ = text.encode_masked(ids, mask, labels)  # one pass gives both
    torch.testing.assert_close(cls_masked, cls)
    torch.testing.assert_close(logits_masked, logits)
    text.train()


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def test_minilm_preset_loads_real_weights_and_embeds_meaningfully(offline, caplog):
    from safetensors.torch import load_file

    cfg = ModelConfig(text_model="minilm")
    tokenizer = build_tokenizer(cfg, captions=None)
    with caplog.at_level(logging.WARNING, logger="stage1_encoders.encoders"):
        encoder = build_text_encoder(cfg, tokenizer)
    assert "has no masked-LM head" in caplog.text and "initialised" in caplog.text
    # every layer frozen (the bridge's default): MLM is off, the unused head is not worth a warning
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="stage1_encoders.encoders"):
        build_text_encoder(ModelConfig(text_model="minilm", text_tuned_layers=0), tokenizer)
    assert "masked-LM head" not in caplog.text
    stored = load_file(f"{minilm_path()}/model.safetensors")
    key = next(k for k in stored if k.endswith("embeddings.word_embeddings.weight"))
    torch.testing.assert_close(encoder.mlm_model.base_model.embeddings.word_embeddings.weight, stored[key])
    encoder.eval()
    sentences = [
        "A cat is sleeping on the sofa.",
        "A kitten naps on the couch.",
        "The stock market fell sharply today.",
        "Shares dropped steeply in trading this afternoon.",
    ]
    enc = tokenizer(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        emb = torch.nn.functional.normalize(encoder(enc["input_ids"], enc["attention_mask"]), dim=-1)
    sim = emb @ emb.t()
    assert sim[0, 1] > sim[0, 2] and sim[0, 1] > sim[0, 3]
    assert sim[2, 3] > sim[2, 0] and sim[2, 3] > sim[2, 1]


def test_word_counts_in_chunks_equal_one_pass_over_all_captions(tiny_parts):
    from collections import Counter

    from tokenizers import normalizers, pre_tokenizers

    from stage1_encoders.tokenizer import word_counts

    norm, pre = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
    captions = [t for t in tiny_parts.corpus.post_text if t.strip()] + ["Ünïcode, punct-uation!", "a  b\tc"]
    whole = Counter(w for w, _ in pre.pre_tokenize_str(norm.normalize_str("\n".join(captions))))
    for chunk in (1, 3, 7, len(captions), 10 * len(captions)):
        assert word_counts(captions, norm, pre, chunk=chunk) == whole
    assert word_counts(iter(captions), norm, pre, chunk=5) == whole  # any iterable
    assert word_counts([], norm, pre) == Counter()
