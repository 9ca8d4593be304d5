"""The run's cache files read for one corpus: every check the cache format offers (schema, shapes, finiteness, the
corpus fingerprint, the users' ids and order), in one place for every room of the bridge."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from cache import EncoderEmbeddings, GraphOutputs, read_encoder_embeddings, read_graph_outputs


class CorpusLike(Protocol):
    """What the reads check a cache file against (``corpus.Corpus`` has it)."""

    fingerprint: str
    user_ids: list[str]

    @property
    def num_users(self) -> int: ...

    @property
    def num_edges(self) -> int: ...


def read_encoders(cache_dir: Path, round_idx: int, corpus: CorpusLike) -> EncoderEmbeddings:
    """Stage 1's embeddings of round ``round_idx`` in ``cache_dir``, checked against ``corpus``."""
    return read_encoder_embeddings(
        cache_dir,
        round_idx,
        fingerprint=corpus.fingerprint,
        num_users=corpus.num_users,
        user_ids=corpus.user_ids,
    )


def read_graph(cache_dir: Path, round_idx: int, corpus: CorpusLike) -> GraphOutputs:
    """Stage 2's outputs of round ``round_idx`` in ``cache_dir``, checked against ``corpus``."""
    return read_graph_outputs(
        cache_dir,
        round_idx,
        fingerprint=corpus.fingerprint,
        num_users=corpus.num_users,
        num_edges=corpus.num_edges,
        user_ids=corpus.user_ids,
    )
