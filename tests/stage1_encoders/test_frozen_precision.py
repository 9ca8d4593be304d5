"""``model.text_frozen_precision``: the frozen text layers (their cached caption states and captions embedded
through them later) in float32 or under bfloat16 autocast, whatever autocast the caller runs under."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from stage1_test_utils import TINY_MODEL

from stage1_encoders.config import ConfigError, ModelConfig, Stage1Config
from stage1_encoders.encoders import TextEncoder, build_text_encoder, clear_lower_states_memo


def frozen_encoder(tiny_parts, precision: str, store_dir=None) -> TextEncoder:
    """The tiny BERT with every layer frozen, mean-pooled, the same weights for both precisions; its states kept in
    ``store_dir`` when given."""
    torch.manual_seed(0)
    cfg = ModelConfig(
        **{
            **TINY_MODEL,
            "text_tuned_layers": 0,
            "text_pooling": "mean",
            "text_frozen_precision": precision,
        }
    )
    encoder = build_text_encoder(cfg, tiny_parts.tokenizer).eval()
    clear_lower_states_memo()
    # one batch: the reference's padding
    encoder.use_cached_lower_states(tiny_parts.prep, batch_size=1 << 20, store_dir=store_dir)
    return encoder


def pooled_reference(encoder: TextEncoder, ids, mask, bf16: bool) -> torch.Tensor:
    """transformers' own forward of the whole model, mean-pooled, with or without bf16 autocast."""
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        hidden = encoder.base(input_ids=ids, attention_mask=mask).last_hidden_state.float()
    weights = mask.unsqueeze(-1).float()
    return (hidden * weights).sum(1) / weights.sum(1)


def test_bf16_states_are_the_frozen_forward_under_bf16_autocast(tiny_parts):
    corpus = tiny_parts.corpus
    posts = np.flatnonzero(np.asarray(corpus.post_has_text))
    posts = posts[np.argsort([len(corpus.post_text[p]) for p in posts], kind="stable")]  # the cache's order
    ids, mask = tiny_parts.prep.texts(posts)
    bf16 = frozen_encoder(tiny_parts, "bf16")
    fp32 = frozen_encoder(tiny_parts, "32")
    bf16._lower_states.compute()
    fp32._lower_states.compute()
    rows_bf16 = bf16._lower_states.states[posts]
    rows_fp32 = fp32._lower_states.states[posts]
    ref_bf16, ref_fp32 = pooled_reference(bf16, ids, mask, True), pooled_reference(bf16, ids, mask, False)
    assert torch.allclose(rows_fp32, ref_fp32, atol=1e-5)
    assert torch.allclose(rows_bf16, ref_bf16, atol=1e-5)
    # bf16 really ran, and stays near float32
    rounding = (rows_bf16 - rows_fp32).abs().max().item()
    assert 1e-6 < rounding < 0.1  # float32 on the same weights would be exact (0)
    assert (rows_bf16.dtype, rows_fp32.dtype) == (torch.float32, torch.float32)


def test_the_frozen_layers_keep_their_precision_inside_a_callers_autocast(tiny_parts):
    posts = np.flatnonzero(np.asarray(tiny_parts.corpus.post_has_text))[:9]
    ids, mask = tiny_parts.prep.texts(posts)
    for precision in ("32", "bf16"):
        encoder = frozen_encoder(tiny_parts, precision)
        plain = encoder.lower_hidden(ids, mask)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            inside = encoder.lower_hidden(ids, mask)
        assert torch.equal(inside, plain), precision
    # a caption embedded later (no cached row: bridge.embed's new users) goes through the same precision
    encoder = frozen_encoder(tiny_parts, "bf16")
    encoder._lower_states.compute()
    with torch.no_grad():
        later = encoder(ids, mask)
    cached = encoder(ids, mask, torch.from_numpy(posts))
    fp32 = pooled_reference(encoder, ids, mask, False)
    assert (later - cached).abs().max() < (fp32 - cached).abs().max() / 4


def test_each_precision_keeps_its_own_states_file(tiny_parts, tmp_path):
    keys = {}
    for precision in ("32", "bf16"):
        encoder = frozen_encoder(tiny_parts, precision, store_dir=tmp_path)
        encoder.compute_lower_states()
        keys[precision] = encoder._lower_states.key()
    assert len(list(tmp_path.glob("text_states-*.pt"))) == 2
    # float32's key is the one it had before the switch: earlier run folders keep their states file
    assert len(keys["32"]) == 5 and keys["bf16"] == (*keys["32"], "bf16")


def test_bf16_needs_frozen_layers(tiny_parts):
    with pytest.raises(ConfigError, match="model.text_frozen_precision"):
        Stage1Config.from_dict({"corpus": "c", "cache_dir": "x", "model": {"text_frozen_precision": "bf16"}})
    with pytest.raises(ConfigError, match="model.text_frozen_precision"):
        Stage1Config.from_dict({"corpus": "c", "cache_dir": "x", "model": {"text_frozen_precision": "16"}})
    mlm_model = build_text_encoder(ModelConfig(**TINY_MODEL), tiny_parts.tokenizer).mlm_model
    with pytest.raises(ValueError, match="needs tuned_layers"):
        TextEncoder(mlm_model, frozen_precision="bf16")
