"""Tokenizers: a WordPiece vocabulary trained on the corpus's captions (tiny preset), or the pretrained
model's own tokenizer. Either way a ``PreTrainedTokenizerFast`` with BERT's special tokens."""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from stage1_encoders.config import ModelConfig
from stage1_encoders.encoders import text_source

SPECIAL_TOKENS = {
    "pad_token": "[PAD]",
    "unk_token": "[UNK]",
    "cls_token": "[CLS]",
    "sep_token": "[SEP]",
    "mask_token": "[MASK]",
}


def wrap_tokenizer(backend: Tokenizer, max_length: int) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(tokenizer_object=backend, model_max_length=max_length, **SPECIAL_TOKENS)


def train_wordpiece(texts: Iterable[str], vocab_size: int, max_length: int) -> PreTrainedTokenizerFast:
    """Train a lower-cased BERT WordPiece tokenizer on ``texts`` (``[CLS] text [SEP]`` template)."""
    backend = Tokenizer(models.WordPiece(unk_token=SPECIAL_TOKENS["unk_token"]))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS.values()), show_progress=False
    )
    backend.train_from_iterator(texts, trainer=trainer)
    cls_id = backend.token_to_id(SPECIAL_TOKENS["cls_token"])
    sep_id = backend.token_to_id(SPECIAL_TOKENS["sep_token"])
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return wrap_tokenizer(backend, max_length)


def tokenizer_from_json(text: str, max_length: int) -> PreTrainedTokenizerFast:
    """Rebuild a tokenizer stored in a checkpoint (``tokenizer.backend_tokenizer.to_str()``)."""
    return wrap_tokenizer(Tokenizer.from_str(text), max_length)


def build_tokenizer(cfg: ModelConfig, captions: list[str] | None, stored_json: str | None = None):
    """The tokenizer for ``cfg.text_model``.

    tiny: reuse ``stored_json`` (from a checkpoint) when given, else train on ``captions``; pretrained
    models: their own tokenizer.
    """
    source = text_source(cfg)
    if source is not None:
        tokenizer = AutoTokenizer.from_pretrained(source)
        tokenizer.model_max_length = cfg.max_text_length
        return tokenizer
    if stored_json is not None:
        return tokenizer_from_json(stored_json, cfg.max_text_length)
    texts = [t for t in (captions or []) if t.strip()]
    if not texts:
        raise ValueError("the corpus has no non-empty caption to train the tiny WordPiece vocabulary on")
    return train_wordpiece(texts, cfg.text_vocab_size, cfg.max_text_length)
