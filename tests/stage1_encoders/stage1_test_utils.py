"""Helpers shared by the stage-1 tests (imported by plain name: pytest puts this folder on sys.path)."""

from __future__ import annotations

TINY_MODEL = {
    "image_model": "mmga-vit-tiny",
    "text_hidden_size": 32,
    "text_layers": 1,
    "text_heads": 2,
    "text_intermediate_size": 64,
    "text_vocab_size": 300,
    "max_text_length": 16,
}


class GuardedCorpus:
    """A corpus that fails the test when stage 1 touches labels, fans or splits."""

    FORBIDDEN = (
        "labels",
        "label_names",
        "fans",
        "splits",
        "split_mask",
        "labelled_mask",
        "num_classes",
        "split_source",
    )

    def __init__(self, corpus):
        self._corpus = corpus

    def __getattr__(self, name):
        if name == "_corpus":  # during unpickling
            raise AttributeError(name)
        if name in self.FORBIDDEN:
            raise AssertionError(f"stage 1 read corpus.{name}")
        return getattr(self._corpus, name)
