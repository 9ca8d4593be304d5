"""Tokenizers: a WordPiece vocabulary learnt from the corpus's captions (tiny preset), or the pretrained
model's own tokenizer. Either way a ``PreTrainedTokenizerFast`` with BERT's special tokens."""

from __future__ import annotations

import string
from collections import Counter
from collections.abc import Iterable
from itertools import islice

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from stage1_encoders.config import ModelConfig
from stage1_encoders.encoders import text_source

BASIC_CHARACTERS = string.ascii_lowercase + string.digits + string.punctuation
SPECIAL_TOKENS = {
    "pad_token": "[PAD]",
    "unk_token": "[UNK]",
    "cls_token": "[CLS]",
    "sep_token": "[SEP]",
    "mask_token": "[MASK]",
}


def wrap_tokenizer(backend: Tokenizer, max_length: int) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(tokenizer_object=backend, model_max_length=max_length, **SPECIAL_TOKENS)


def word_counts(texts: Iterable[str], normalizer, pre_tokenizer, chunk: int = 10_000) -> Counter:
    """How often each word of ``texts`` occurs, as the normaliser and pre-tokenizer split them.

    Both act per character or split at whitespace, so one call over captions joined by newlines equals one call
    per caption; ``chunk`` captions go in each call, so the list of (word, span) tuples held at once stays small
    (over a paper-size corpus's 2 million captions it would be some 20 million tuples).
    """
    counts: Counter = Counter()
    it = iter(texts)
    while batch := list(islice(it, chunk)):
        words = pre_tokenizer.pre_tokenize_str(normalizer.normalize_str("\n".join(batch)))
        counts.update(word for word, _ in words)
    return counts


def train_wordpiece(texts: Iterable[str], vocab_size: int, max_length: int) -> PreTrainedTokenizerFast:
    """A lower-cased BERT WordPiece tokenizer (``[CLS] text [SEP]``) whose vocabulary is learnt from ``texts``.

    Vocabulary: the special tokens, every character seen and the ASCII letters, digits and punctuation (alone
    and as ``##`` continuations, so a word made of them is never ``[UNK]``), then whole words by decreasing count (ties by spelling) up to ``vocab_size`` tokens. Words come
    from the tokenizer's own BERT normaliser and pre-tokenizer; tokenization is ``tokenizers``' WordPiece.
    ``tokenizers.trainers.WordPieceTrainer`` is not used because it breaks ties between equally frequent merges
    in hash order, so two processes (DDP ranks, or a rerun) get different vocabularies from the same captions.
    """
    normalizer = normalizers.BertNormalizer(lowercase=True)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    counts = word_counts(texts, normalizer, pre_tokenizer)
    alphabet = sorted({char for word in counts for char in word} | set(BASIC_CHARACTERS))
    vocab = [*SPECIAL_TOKENS.values(), *alphabet, *(f"##{char}" for char in alphabet)]
    room = max(vocab_size - len(vocab), 0)
    top_words = sorted((w for w in counts if len(w) > 1), key=lambda w: (-counts[w], w))[:room]
    vocab.extend(top_words)
    backend = Tokenizer(
        models.WordPiece({token: i for i, token in enumerate(vocab)}, unk_token=SPECIAL_TOKENS["unk_token"])
    )
    backend.normalizer = normalizer
    backend.pre_tokenizer = pre_tokenizer
    backend.decoder = decoders.WordPiece()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab.index("[CLS]")), ("[SEP]", vocab.index("[SEP]"))],
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
