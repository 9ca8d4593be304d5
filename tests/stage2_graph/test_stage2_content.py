"""The content readout of R^G: gate-weighted smoothing of the node-input content, against a dense loop."""

from __future__ import annotations

import numpy as np
import torch
from torch_sparse import SparseTensor

from stage2_graph.model import GraphEncoder, NodeInputs

EDGES = [(0, 1), (1, 2), (2, 3), (0, 2), (3, 4)]  # node 5 is isolated


def _adj(n: int) -> SparseTensor:
    row = torch.tensor([u for u, v in EDGES] + [v for u, v in EDGES])
    col = torch.tensor([v for u, v in EDGES] + [u for u, v in EDGES])
    return SparseTensor(row=row, col=col, sparse_sizes=(n, n))  # row = target u, col = source v


def _standardize(block: np.ndarray, mask: np.ndarray) -> np.ndarray:
    mean = block[mask].mean(0)
    std = block[mask].std(0)
    return (block - mean) / np.where(std > 0, std, 1.0) * mask[:, None]


def dense_readout(blocks, masks, weights: dict, n: int, hops: int) -> np.ndarray:
    """The docstring's rule with explicit loops over users and neighbours."""
    neighbours = {u: [] for u in range(n)}
    for u, v in EDGES:
        neighbours[u].append(v)
        neighbours[v].append(u)
    out = []
    for block, mask in zip(blocks, masks):
        feats, present = _standardize(block, mask), mask.astype(float)
        for _ in range(hops):
            new, new_present = np.zeros_like(feats), np.zeros(n)
            for u in range(n):
                num = present[u] * feats[u] + sum(
                    weights[(u, v)] * present[v] * feats[v] for v in neighbours[u]
                )
                den = present[u] + sum(weights[(u, v)] * present[v] for v in neighbours[u])
                if den > 0:
                    new[u], new_present[u] = num / den, 1.0
            feats, present = new, new_present
            out.append(feats)
    # per block: [hop 1 || hop 2], blocks in node-input order
    per_block = [np.concatenate(out[i * hops : (i + 1) * hops], axis=1) for i in range(len(blocks))]
    return np.concatenate(per_block, axis=1)


def test_content_readout_matches_a_dense_loop_with_masks_and_isolated_nodes():
    n, rng = 6, np.random.default_rng(0)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    image = rng.normal(size=(n, 4)).astype(np.float32)
    text = rng.normal(size=(n, 2)).astype(np.float32)
    image_mask = np.array([1, 0, 1, 1, 0, 1], dtype=bool)
    text_mask = np.array([0, 1, 1, 0, 0, 0], dtype=bool)  # node 4 has neither: reached through its neighbour
    enc = GraphEncoder(
        num_features=3, modality_dims=(4, 2), hidden_dim=8, node_inputs=("stats", "degree", "image", "text")
    )
    adj_t = _adj(n)
    row, col, _ = adj_t.coo()
    w = torch.rand(row.numel(), generator=torch.Generator().manual_seed(1))
    weights = {(int(u), int(v)): float(a) for u, v, a in zip(row, col, w)}
    inputs = NodeInputs(
        torch.from_numpy(x),
        adj_t,
        [torch.from_numpy(image), torch.from_numpy(text)],
        [torch.from_numpy(image_mask), torch.from_numpy(text_mask)],
    )
    got = enc.content_readout(inputs, w, 2)
    ref = dense_readout([x, image, text], [np.ones(n, bool), image_mask, text_mask], weights, n, 2)
    assert got.shape == (n, 2 * (3 + 4 + 2))
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-5, atol=1e-6)
    # the isolated node keeps its own standardized content; without a text anywhere near, its text is 0
    np.testing.assert_allclose(got[5, :3].numpy(), _standardize(x, np.ones(n, bool))[5], rtol=1e-5)
    assert torch.all(got[5, -4:] == 0)


def test_uniform_weights_give_the_mean_over_self_and_neighbours_and_degree_is_not_content():
    n = 6
    x = torch.arange(n * 2, dtype=torch.float32).view(n, 2) ** 2
    enc = GraphEncoder(num_features=2, hidden_dim=4, node_inputs=("stats", "degree"))
    adj_t = _adj(n)
    got = enc.content_readout(NodeInputs(x, adj_t), torch.ones(adj_t.nnz()), 1)
    f = _standardize(x.numpy(), np.ones(n, bool))
    expected = np.stack(
        [
            (f[u] + sum(f[v] for v in ([b for a, b in EDGES if a == u] + [a for a, b in EDGES if b == u])))
            / (1 + sum(1 for e in EDGES if u in e))
            for u in range(n)
        ]
    )
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-6)
    assert enc.content_readout(NodeInputs(x, adj_t), torch.ones(adj_t.nnz()), 0).shape == (n, 0)
