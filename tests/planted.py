"""A small graph of planted communities for the tests of networks trained on labels (``bridge`` peers, stage 2
fine-tuning): users of ``communities`` topics, features that shift a little with the topic, edges mostly within a
topic, fans that grow with it, and train/val/test splits of different sizes."""

from __future__ import annotations

import numpy as np


def planted_communities(
    n: int,
    *,
    communities: int,
    features: int,
    shift: float,
    edges_per_user: int,
    cross: float,
    fans_base: float,
    seed: int = 0,
):
    """``(X [n, features], edges [E, 2] u < v, labels [n], fans [n], splits [n])``: ``n / communities`` users per
    topic, X standard normal plus ``shift x topic``, ``edges_per_user x n`` distinct edges drawn uniformly and kept
    when both ends share a topic, or else with probability ``cross``; fans ``exp(fans_base + topic + noise)``."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(communities), n // communities)
    x = rng.normal(size=(n, features)) + shift * labels[:, None]
    edges = set()
    while len(edges) < edges_per_user * n:
        u, v = rng.integers(0, n, 2)
        if u != v and (labels[u] == labels[v] or rng.random() < cross):
            edges.add((min(u, v), max(u, v)))
    fans = np.exp(fans_base + labels + rng.normal(scale=0.3, size=n))
    splits = np.tile([0, 0, 0, 1, 1, 2], n // 6 + 1)[:n]  # val and test of different sizes
    return x, np.array(sorted(edges)), labels, fans, splits
