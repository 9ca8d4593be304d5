"""The on-disk formats shared by the stages: one HDF5 file per stage and round, written atomically.

Also the safety rules of the stages' checkpoint files (``cache.checkpoint``: weights-only reads, atomic writes) and
the one ownership check (``check_owner``: a cache file belongs to one corpus fingerprint). See docs/cache.md for the
format and ``python -m cache.inspect --help`` to look inside a cache.

Imports no other package of the project but the neutral mmga_common (for `mmga inspect`'s program name); the
stages and the bridge import it (it is where the stages meet).
"""

from cache.io import (
    check_owner,
    read_cache_info,
    read_encoder_embeddings,
    read_graph_outputs,
    read_producer,
    write_encoder_embeddings,
    write_graph_outputs,
)
from cache.lazy import LazyEmbeddings
from cache.schema import SCHEMA_VERSION, cache_file, encoder_file, graph_file, round_dir
from cache.types import CacheError, CacheInfo, EncoderEmbeddings, GraphOutputs

__all__ = [
    "SCHEMA_VERSION",
    "CacheError",
    "CacheInfo",
    "EncoderEmbeddings",
    "GraphOutputs",
    "LazyEmbeddings",
    "cache_file",
    "check_owner",
    "encoder_file",
    "graph_file",
    "read_cache_info",
    "read_encoder_embeddings",
    "read_graph_outputs",
    "read_producer",
    "round_dir",
    "write_encoder_embeddings",
    "write_graph_outputs",
]
