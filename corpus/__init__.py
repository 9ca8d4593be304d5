"""The input data set: format, reader with validation, splits, synthetic generator (docs/corpus.md)."""

from corpus.reader import load_corpus, reuse_or_load
from corpus.types import Corpus, CorpusError, CorpusWarning

__all__ = ["Corpus", "CorpusError", "CorpusWarning", "load_corpus", "reuse_or_load"]
