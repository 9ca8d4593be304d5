"""Random payloads for cache tests: no corpus needed, a fake fingerprint stands in for one."""

from __future__ import annotations

import numpy as np

from cache import EncoderEmbeddings, GraphOutputs

FINGERPRINT = "f" * 8 + "0123456789abcdef" * 3 + "e" * 8
PRODUCER = {"model": {"vision": "vit-tiny", "width": 32}, "lr": 0.001, "seed": 0, "corpus": "/data/x"}


def random_encoders(
    num_users: int = 50, seed: int = 0, dims: tuple[int, int] = (32, 16)
) -> EncoderEmbeddings:
    """Random embeddings with about a third of the users missing each modality (zero rows)."""
    rng = np.random.default_rng(seed)
    image_mask = rng.random(num_users) > 0.3
    text_mask = rng.random(num_users) > 0.3
    image = rng.standard_normal((num_users, dims[0])).astype(np.float32) * image_mask[:, None]
    text = rng.standard_normal((num_users, dims[1])).astype(np.float32) * text_mask[:, None]
    return EncoderEmbeddings(image, text, image_mask, text_mask)


def random_edges(num_users: int, num_edges: int, rng: np.random.Generator) -> np.ndarray:
    """int64 [E, 2], unique, u < v, sorted (like ``corpus.edges``)."""
    pairs = set()
    while len(pairs) < num_edges:
        u, v = sorted(int(x) for x in rng.integers(0, num_users, 2))
        if u != v:
            pairs.add((u, v))
    return np.array(sorted(pairs), dtype=np.int64)


def random_graph(num_users: int = 50, num_edges: int = 120, heads: int = 4, seed: int = 0) -> GraphOutputs:
    rng = np.random.default_rng(seed)
    edges = random_edges(num_users, num_edges, rng)
    edge_index = np.concatenate([edges.T, edges.T[::-1]], axis=1)  # [2, 2E]: u -> v then v -> u
    gate = rng.random((2 * num_edges, heads)).astype(np.float32)
    edge_weight = 0.5 * (gate[:num_edges].mean(1) + gate[num_edges:].mean(1))
    emb = rng.standard_normal((num_users, 24)).astype(np.float32)
    return GraphOutputs(emb, edge_index, gate, edge_weight.astype(np.float32))
