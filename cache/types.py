"""What the cache holds in memory: the two payloads, the file attributes and the error type."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


class CacheError(ValueError):
    """A cache file that is missing, damaged, or does not fit the corpus or this code.

    ``str(err)`` reads ``"runs/x/cache/round_0/encoders.h5, dataset 'user_text_emb': ... : <what to do>"``.
    ``dataset`` is ``None`` when the problem is the whole file (attributes, schema, fingerprint).
    """

    def __init__(self, file: str | Path, dataset: str | None, msg: str):
        self.file = str(file)
        self.dataset = dataset
        self.msg = msg
        where = self.file if dataset is None else f"{self.file}, dataset '{dataset}'"
        super().__init__(f"{where}: {msg}")

    def __reduce__(self):
        return (type(self), (self.file, self.dataset, self.msg))


@dataclass
class EncoderEmbeddings:
    """Stage 1 output, rows in the corpus's user order.

    Users without a modality have a zero row and mask False.

    Attributes:
        user_image_emb: float32 [N, Di]
        user_text_emb: float32 [N, Dt]
        image_mask: bool [N], True = the user has at least one image
        text_mask: bool [N], True = the user has at least one non-empty caption
    """

    user_image_emb: np.ndarray
    user_text_emb: np.ndarray
    image_mask: np.ndarray
    text_mask: np.ndarray


@dataclass
class GraphOutputs:
    """Stage 2 output.

    Attributes:
        user_graph_emb: float32 [N, Dg]
        edge_index: int64 [2, 2E], both directions of every corpus edge; ``edge_index[0]`` is the
            source v, ``edge_index[1]`` the target u (PyG convention)
        gate: float32 [2E, H], ``gate[k]`` weighs the message v -> u of column k, per head
        edge_weight: float32 [E] in [0, 1], aligned with ``corpus.edges`` (mean over heads and both
            directions); stage 1 reads it to weight its graph-contrastive positives in the next round
    """

    user_graph_emb: np.ndarray
    edge_index: np.ndarray
    gate: np.ndarray
    edge_weight: np.ndarray


@dataclass(frozen=True)
class CacheInfo:
    """The root attributes of one cache file (see ``cache.schema`` for their names)."""

    path: Path
    kind: str
    schema_version: int
    round: int
    corpus_fingerprint: str
    producer: dict
    model: str
    created: str
    num_users: int
    num_edges: int | None
    run_dir: str | None = None  # the writing run's output folder, absolute (schema 2; None when not recorded)
    has_user_ids: bool = False  # the file stores the corpus user id of each row (schema 2)
