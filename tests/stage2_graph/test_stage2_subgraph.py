"""Random-walk subgraph mini-batches (trainer.batching=subgraph, GraphSAINT's sampler on torch-sparse): a batch
is exactly the subgraph its nodes induce in the propagated graph (held-out edges never in it), its nodes are its
roots and what walks of ``walk_length`` steps reach from them; one batch holding every node gives the full-batch
forward and losses; the batch count and the ranks' shares; the CLI. A short fit of both mini-batch paths, and
under ddp_spawn, is in test_stage2_minibatch.py."""

from __future__ import annotations

import math
from collections import deque

import numpy as np
import pytest
import torch
from test_stage2_objectives import N, make_inputs, make_system
from torch_sparse import SparseTensor

from stage2_graph.data import MaskingDataset
from stage2_graph.minibatch import SubgraphBatches, random_walk


def _batches(system, walk_length=2, batch_size=4, epoch=0, rank=0, world_size=1):
    masking = MaskingDataset(N, system.structure.edge_pairs, 0.3, 0.25, 1.0, seed=0)
    batches = SubgraphBatches(system.structure, masking, walk_length, batch_size, epoch, 0, rank, world_size)
    return masking[(epoch, 0)], batches


def _propagated_edges(system, masks) -> set[tuple[int, int]]:
    """The directed (source, target) pairs of the graph minus the held-out edges, from the corpus's edge list."""
    held = {tuple(p) for p in masks["pos_pairs"].t().tolist()}
    kept = [tuple(e) for e in system.structure.edge_pairs.tolist() if tuple(e) not in held]
    return {(u, v) for a, b in kept for u, v in ((a, b), (b, a))}


def _within_hops(edges: set[tuple[int, int]], roots: list[int], hops: int) -> set[int]:
    """Nodes at most ``hops`` steps from a root (breadth first), the reference for what walks can reach."""
    neighbours: dict[int, list[int]] = {}
    for u, v in edges:
        neighbours.setdefault(u, []).append(v)
    seen, queue = set(roots), deque((r, 0) for r in roots)
    while queue:
        node, depth = queue.popleft()
        if depth == hops:
            continue
        for other in neighbours.get(node, []):
            if other not in seen:
                seen.add(other)
                queue.append((other, depth + 1))
    return seen


def test_random_walk_equals_torch_sparses_where_every_node_has_a_neighbour_and_stays_where_none():
    generator = torch.Generator().manual_seed(3)
    n = 200
    row, col = torch.randint(0, n, (2, 600), generator=generator)
    ring = torch.arange(n)  # every node has a neighbour
    row, col = torch.cat([row, col, ring]), torch.cat([col, row, (ring + 1) % n])
    adj = SparseTensor(row=row, col=col, sparse_sizes=(n, n)).coalesce()
    start = torch.randint(0, n, (500,), generator=generator)
    torch.manual_seed(7)
    expected = adj.random_walk(start, 4)  # torch-sparse's kernel draws from the global generator
    walks = random_walk(adj, start, 4, torch.Generator().manual_seed(7))
    assert torch.equal(walks, expected)
    # nodes 2 and 4 (the last row) have no neighbour: walks from them stay; the others alternate along 0-1, 3-5
    adj = SparseTensor(row=torch.tensor([0, 1, 3, 5]), col=torch.tensor([1, 0, 5, 3]), sparse_sizes=(6, 6))
    walks = random_walk(adj, torch.tensor([2, 4, 0, 3]), 3, torch.Generator().manual_seed(0))
    assert walks.tolist() == [[2, 2, 2, 2], [4, 4, 4, 4], [0, 1, 0, 1], [3, 5, 3, 5]]
    empty = SparseTensor(
        row=torch.tensor([], dtype=torch.long), col=torch.tensor([], dtype=torch.long), sparse_sizes=(3, 3)
    )
    assert random_walk(empty, torch.tensor([1, 2]), 2, generator).tolist() == [[1, 1, 1], [2, 2, 2]]


def test_a_batch_is_the_induced_subgraph_of_its_walks_without_held_out_edges():
    system = make_system(make_inputs())  # two isolated nodes, more once edges are held out
    masks, batches = _batches(system, walk_length=2, batch_size=3)
    assert len(batches) == math.ceil(N / (3 * 3)) == 5
    edges = _propagated_edges(system, masks)
    held = {tuple(p) for p in masks["pos_pairs"].t().tolist()}
    for index in range(len(batches)):
        batch = batches[index]
        n_id = batch["n_id"]
        assert torch.equal(n_id, n_id.unique()) and batch["num_seeds"] == n_id.numel()
        members = set(n_id.tolist())
        source, target = batch["edge_index"]
        got = sorted(zip(n_id[source].tolist(), n_id[target].tolist()))
        expected = sorted((u, v) for u, v in edges if u in members and v in members)
        assert got == expected  # exactly the induced subgraph, both directions, no duplicates
        assert not {(min(u, v), max(u, v)) for u, v in got} & held
        b = batches.mine[index]
        roots = torch.cat([batches.nodes[b], batches.pos[b].reshape(-1), batches.neg[b].reshape(-1)])
        assert set(roots.tolist()) <= members
        assert members <= _within_hops(edges, roots.tolist(), 2)
        # local pair ids point at the batch's share of held-out edges and negatives
        assert torch.equal(n_id[batch["pos_pairs"]], batches.pos[b])
        assert torch.equal(n_id[batch["neg_pairs"]], batches.neg[b])
        assert batches.pos[b].shape[1] <= 1  # at most ceil(batch_size / 4)
        # the feature term's rows: the masked nodes among the batch's own roots (its node share)
        own = torch.isin(n_id, batches.nodes[b])
        assert torch.equal(batch["loss_mask"], masks["node_mask"][n_id] & own)
        assert batches.nodes[b].numel() == 3  # the first batch_size of its chunk of the permutation
        assert torch.equal(batch["log_degree"], batches.log_degree[n_id])
    # each user is a root (and, masked, a feature row) at most once an epoch: 5 x 3 distinct users
    roots = torch.cat(batches.nodes)
    assert roots.numel() == 15 and roots.unique().numel() == 15


def test_walks_reach_further_with_a_longer_walk():
    system = make_system(make_inputs())
    sizes = {}
    for walk_length in (1, 4):
        _, batches = _batches(system, walk_length=walk_length, batch_size=2)
        sizes[walk_length] = np.mean([batches[i]["n_id"].numel() for i in range(len(batches))])
    assert sizes[4] > sizes[1]


def test_one_subgraph_of_every_node_gives_the_full_batch_forward_and_losses():
    system = make_system(make_inputs())
    masks, batches = _batches(system, walk_length=1, batch_size=N)
    assert len(batches) == 1
    batch = batches[0]
    assert torch.equal(batch["n_id"], torch.arange(N))  # every node is a root
    with torch.no_grad():
        full = system(masks["keep_edges"], masks["node_mask"])
        node_emb = system.minibatch_forward(batch)[0]
        torch.testing.assert_close(node_emb, full, rtol=0, atol=1e-5)
        losses = system.minibatch_losses(batch)
        expected = system.feature_loss(full, system.features, masks["node_mask"])["feature_loss"]
        torch.testing.assert_close(losses["feature_loss"], expected, rtol=0, atol=1e-5)
        pos, neg = batches.pos[0], batches.neg[0]
        expected = system.structure_loss(full, pos, neg)["structure_loss"]
        torch.testing.assert_close(losses["structure_loss"], expected, rtol=0, atol=1e-5)


def test_ranks_split_the_subgraphs_evenly_and_epochs_differ():
    system = make_system(make_inputs())
    _, single = _batches(system, batch_size=3)
    shares = [_batches(system, batch_size=3, rank=r, world_size=2)[1] for r in range(2)]
    assert len(single) == 5 and len(shares[0]) == len(shares[1]) == 3  # 5 rounded up to 6
    assert sorted(shares[0].mine + shares[1].mine) == list(range(6))
    _, other_epoch = _batches(system, batch_size=3, epoch=1)
    assert not torch.equal(single.nodes[0], other_epoch.nodes[0])
    # a batch's walks depend on (seed, epoch, batch) only, not on what was drawn before
    assert torch.equal(single[4]["n_id"], _batches(system, batch_size=3)[1][4]["n_id"])
    first = single[0]["n_id"]
    single[3]
    assert torch.equal(single[0]["n_id"], first)


def test_subgraph_fields_are_checked_and_reach_the_cli():
    from stage2_graph import ConfigError, Stage2Config
    from stage2_graph.run import config_from_argv

    base = {"corpus": "c", "cache_dir": "d"}
    with pytest.raises(ConfigError, match="'trainer.walk_length'"):
        Stage2Config.from_dict({**base, "trainer": {"batching": "subgraph", "walk_length": 0}})
    # one fan-out per layer is a neighbour-sampling rule only; several processes are fine with subgraphs
    cfg = Stage2Config.from_dict(
        {**base, "trainer": {"batching": "subgraph", "fanouts": [3], "devices": "2"}}
    )
    assert cfg.trainer.processes() == 2
    cfg, _ = config_from_argv(
        "--corpus c --cache d --batching subgraph --walk-length 3 --batch-size 64".split()
    )
    assert (cfg.trainer.batching, cfg.trainer.walk_length, cfg.trainer.batch_size) == ("subgraph", 3, 64)


def test_a_batch_without_feature_rows_still_gives_every_parameter_a_gradient():
    """Under DDP every rank must reduce the same gradients: a batch whose roots hold no masked user (common with
    small batches, since the feature rows are the masked roots) still runs the decoder, with zero weight; a
    rank without its gradients hung the other (the slow ddp_spawn test of the subgraph path did)."""
    system = make_system(make_inputs())
    _, batches = _batches(system)
    batch = dict(batches[0])
    batch["loss_mask"] = torch.zeros_like(batch["loss_mask"])
    losses = system.minibatch_losses(batch)
    assert float(losses["feature_loss"]) == 0.0
    losses["loss"].backward()
    missing = [name for name, p in system.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing
    decoder = [p.grad for name, p in system.named_parameters() if name.startswith("feature_loss.")]
    assert decoder and all(bool((g == 0).all()) for g in decoder)


def test_batch_size_defaults_per_path_and_reaches_the_samplers():
    """``trainer.batch_size`` left unset: 1,024 random-walk roots with subgraphs, 256 seed nodes (and layer-wise
    chunks) otherwise; a value given wins; the pipeline's samplers get the resolved size."""
    from stage2_reference import random_graph

    from stage2_graph import GraphInputs, ModelConfig, ObjectiveConfig, OptimConfig, Stage2Config
    from stage2_graph.pipeline import build_datamodule
    from stage2_graph.system import Stage2System

    base = {"corpus": "c", "cache_dir": "d", "use_modalities": False}
    resolved = {
        batching: Stage2Config.from_dict(
            {**base, "trainer": {"batching": batching}}
        ).trainer.resolved_batch_size
        for batching in ("full", "neighbor", "subgraph")
    }
    assert resolved == {"full": 256, "neighbor": 256, "subgraph": 1024}
    given = Stage2Config.from_dict({**base, "trainer": {"batching": "subgraph", "batch_size": 64}})
    assert given.trainer.resolved_batch_size == 64
    inputs = GraphInputs(torch.randn(2000, 4), random_graph(2000, 4000, num_isolated=0, seed=0), "f" * 64)
    system = Stage2System(
        inputs, ModelConfig(hidden_dim=8), ObjectiveConfig(), OptimConfig(), use_modalities=False
    )
    counts = {}
    for batching, batch_size in (("subgraph", None), ("subgraph", 256), ("neighbor", None)):
        cfg = Stage2Config.from_dict({**base, "trainer": {"batching": batching, "batch_size": batch_size}})
        batches = build_datamodule(cfg, system).batches(epoch=0, rank=0, world_size=1)
        counts[batching, batch_size] = (len(batches), {len(nodes) for nodes in batches.nodes})
    # subgraphs: ceil(2000 / (roots x 3)) batches of `roots` roots; neighbours: ceil(2000 / 256) node shares
    assert counts == {
        ("subgraph", None): (1, {1024}),
        ("subgraph", 256): (3, {256}),
        ("neighbor", None): (8, {250}),
    }
