"""The input data set: format, reader with validation, splits, synthetic generator (docs/corpus.md).

May import ``mmga_common`` only (the config layer for the generator's CLI); every other package imports it.
"""

from corpus.reader import load_corpus, reuse_or_load
from corpus.types import Corpus, CorpusError, CorpusWarning

__all__ = ["Corpus", "CorpusError", "CorpusWarning", "load_corpus", "reuse_or_load"]
