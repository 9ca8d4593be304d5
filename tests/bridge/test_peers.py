"""The peer rows: SGC propagation against a dense reference and PyG's SGConv, the GCN's val-only selection."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch
from torch_geometric.nn import SGConv

from bridge.evaluation import metrics, peers
from bridge.evaluation.config import EvalConfig
from bridge.evaluation.results import METRICS
from tests.planted import planted_communities

EDGES = np.array([[0, 1], [1, 2], [2, 3], [0, 2]])  # node 4 is isolated


def dense_sgc(x: np.ndarray, edges: np.ndarray, hops: int) -> np.ndarray:
    n = len(x)
    a = np.eye(n)
    for u, v in edges:
        a[u, v] = a[v, u] = 1.0
    d = a.sum(1)
    s = a / np.sqrt(np.outer(d, d))
    f = (x - x.mean(0)) / x.std(0)
    out, cur = [f], f
    for _ in range(hops):
        cur = s @ cur
        out.append(cur)
    return np.concatenate(out, axis=1)


def test_sgc_features_match_a_dense_reference_and_pyg_sgconv():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 3))
    got = peers.sgc_features(x, EDGES, hops=2)
    assert got.shape == (5, 9)
    np.testing.assert_allclose(got, dense_sgc(x, EDGES, 2), rtol=1e-5, atol=1e-6)
    # the K = 2 block is exactly what a PyG SGConv with an identity linear map computes
    conv = SGConv(3, 3, K=2, bias=False)
    with torch.no_grad():
        conv.lin.weight.copy_(torch.eye(3))
        f = torch.from_numpy(((x - x.mean(0)) / x.std(0)).astype(np.float32))
        ref = conv(f, peers.edge_index_of(EDGES)).numpy()
    np.testing.assert_allclose(got[:, 6:], ref, rtol=1e-5, atol=1e-6)
    # an isolated node keeps its own (standardized) features: its only neighbour is its self loop
    np.testing.assert_allclose(got[4, 3:6], got[4, :3], rtol=1e-5)


def test_edge_index_has_both_directions():
    ei = peers.edge_index_of(EDGES)
    assert ei.shape == (2, 8)
    pairs = set(map(tuple, ei.t().tolist()))
    assert all((u, v) in pairs and (v, u) in pairs for u, v in EDGES)


# two communities, features weakly informative alone, the graph strongly homophilous
_planted = partial(
    planted_communities, communities=2, features=4, shift=0.4, edges_per_user=4, cross=0.1, fans_base=2.0
)


CFG = EvalConfig(
    head_seeds=(0, 1),
    network_seeds=(0, 1),
    gcn_max_epochs=200,
    gcn_patience=10,
    gcn_lrs=(1e-2,),
    gcn_weight_decays=(5e-4, 5e-3),
)


def test_gcn_learns_from_the_graph_and_selects_on_val_only(monkeypatch):
    x, edges, labels, fans, splits = _planted(240)
    test_sizes = {"topic": int((splits == 2).sum())}
    calls: list[int] = []
    real_f1 = metrics.f1_score

    def spy_f1(y_true, y_pred, **kwargs):
        calls.append(len(y_true))
        return real_f1(y_true, y_pred, **kwargs)

    monkeypatch.setattr(metrics, "f1_score", spy_f1)  # the one call both evaluations make
    res = peers.evaluate_gcn(x, edges, labels, fans, splits, CFG)
    # val scores: 2 seeds x 2 weight decays; test: once per seed
    n_val, n_test = int((splits == 1).sum()), test_sizes["topic"]
    assert calls.count(n_test) == 2 and calls.count(n_val) == 4
    assert res.topic["macro_f1"].mean > 0.9  # the graph makes the communities easy
    assert res.fans["mae"].mean < 0.8
    assert [c.head for c in res.topic.chosen] == ["gcn", "gcn"]
    assert all(c.epochs < CFG.gcn_max_epochs for c in res.topic.chosen)  # early stopping stopped it

    # changing the test labels changes nothing that was chosen: selection never sees test
    flipped = labels.copy()
    flipped[splits == 2] = 1 - flipped[splits == 2]
    again = peers.evaluate_gcn(x, edges, flipped, fans, splits, CFG)
    assert again.topic.chosen == res.topic.chosen
    assert again.topic["accuracy"].mean == pytest.approx(1 - res.topic["accuracy"].mean)


def test_gcn_skips_a_task_without_val_users_like_the_heads_do():
    x, edges, labels, fans, splits = _planted(60)
    res = peers.evaluate_gcn(x, edges, labels, fans, np.where(splits == 1, 0, splits), CFG)
    for task in ("topic", "fans"):
        assert "val split" in res[task].skipped and np.isnan(res[task][METRICS[task][0]].mean)
    unlabelled = peers.evaluate_gcn(x, edges, np.full_like(labels, -1), fans, splits, CFG)
    assert "no user has a known label" in unlabelled.topic.skipped and unlabelled.fans.skipped is None


def test_sgc_chooses_its_hop_count_on_val_only():
    from bridge.evaluation.heads import evaluate_representation

    x, edges, labels, fans, splits = _planted(120)
    cfg = EvalConfig(head_seeds=(0, 1), weight_decays=(1e-3,), max_epochs=60, sgc_hops=(1, 2, 3))
    res = peers.evaluate_sgc(x, edges, labels, fans, splits, cfg)
    chosen = [c.head for c in res.topic.chosen]
    assert all(h.startswith("linear(K=") for h in chosen)
    # one K only: exactly the heads on that K's features (the old fixed-K peer)
    single = peers.evaluate_sgc(
        x, edges, labels, fans, splits, EvalConfig(**{**cfg.__dict__, "sgc_hops": (2,)})
    )
    direct = evaluate_representation(peers.sgc_features(x, edges, hops=2), labels, fans, splits, cfg)
    assert single.topic["macro_f1"] == direct.topic["macro_f1"] and single.fans["mae"] == direct.fans["mae"]
    # test labels play no part in the choice of K
    flipped = labels.copy()
    flipped[splits == 2] = 1 - flipped[splits == 2]
    again = peers.evaluate_sgc(x, edges, flipped, fans, splits, cfg)
    assert [c.head for c in again.topic.chosen] == chosen


def _dense_cs(z: np.ndarray, y_train: np.ndarray, train: np.ndarray, edges: np.ndarray, a1, a2, layers):
    """Correct & Smooth (Huang et al. 2021, autoscale) written out densely, as a reference for PyG's."""
    n, c = z.shape
    a = np.zeros((n, n))
    for u, v in edges:
        a[u, v] = a[v, u] = 1.0
    d = a.sum(1)
    inv = np.where(d > 0, 1 / np.sqrt(np.where(d > 0, d, 1)), 0.0)
    s = inv[:, None] * a * inv[None, :]  # D^-1/2 A D^-1/2, no self loops
    y = np.eye(c)[y_train]
    err = np.zeros_like(z)
    err[train] = y - z[train]
    out = err.copy()
    for _ in range(layers):
        out = np.clip(a1 * s @ out + (1 - a1) * err, -1, 1)
    sigma = np.abs(err[train]).sum() / train.sum()
    with np.errstate(divide="ignore"):
        scale = sigma / np.abs(out).sum(1, keepdims=True)
    scale[np.isinf(scale) | (scale > 1000)] = 1.0
    corrected = z + scale * out
    corrected[train] = y
    out = corrected.copy()
    for _ in range(layers):
        out = np.clip(a2 * s @ out + (1 - a2) * corrected, 0, 1)
    return out


def test_correct_and_smooth_is_the_published_algorithm_via_pyg():
    from bridge.evaluation.loop import prepare_targets

    x, edges, labels, fans, splits = _planted(60)
    targets = prepare_targets("topic", labels, labels >= 0, splits, 5)
    base = torch.from_numpy(np.random.default_rng(1).normal(size=(60, 2)).astype(np.float32))
    got = peers.correct_and_smooth(base, targets, peers.edge_index_of(edges), 0.7, 0.6, 10).numpy()
    train = targets.masks["train"]
    want = _dense_cs(base.softmax(-1).double().numpy(), labels[train], train, edges, 0.7, 0.6, 10)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_peer_cs_beats_its_base_heads_on_a_homophilous_graph_and_selects_on_val():
    from bridge.evaluation.heads import evaluate_representation

    x, edges, labels, fans, splits = _planted(120)
    cfg = EvalConfig(
        head_seeds=(0, 1), weight_decays=(1e-3,), max_epochs=60, cs_alphas=((0.5, 0.5), (1.0, 0.8))
    )
    res = peers.evaluate_cs(x, edges, labels, fans, splits, cfg)
    base = evaluate_representation(x, labels, fans, splits, cfg)
    assert res.topic["macro_f1"].mean > base.topic["macro_f1"].mean + 0.1
    assert all(c.head.startswith("linear+C&S(") for c in res.topic.chosen)
    assert res.fans["mae"] == base.fans["mae"]  # fans: the base heads (C&S is for class probabilities)
    flipped = labels.copy()
    flipped[splits == 2] = 1 - flipped[splits == 2]
    again = peers.evaluate_cs(x, edges, flipped, fans, splits, cfg)
    assert again.topic.chosen == res.topic.chosen


def test_gatv2_peer_learns_and_chooses_lr_and_weight_decay_on_val(monkeypatch):
    x, edges, labels, fans, splits = _planted(120)
    cfg = EvalConfig(head_seeds=(0,), gcn_max_epochs=80, gcn_patience=10, gcn_lrs=(1e-3, 1e-2), gat_heads=2)
    calls: list[int] = []
    real_f1 = metrics.f1_score
    monkeypatch.setattr(metrics, "f1_score", lambda t, p, **k: calls.append(len(t)) or real_f1(t, p, **k))
    res = peers.evaluate_gnn("gatv2", x, edges, labels, fans, splits, cfg)
    n_val, n_test = int((splits == 1).sum()), int((splits == 2).sum())
    assert calls.count(n_val) == 4 and calls.count(n_test) == 1  # 2 lrs x 2 weight decays on val; test once
    assert res.topic["macro_f1"].mean > 0.85
    assert res.topic.chosen[0].head in ("gatv2(lr=0.001)", "gatv2(lr=0.01)")


def test_feature_dropout_is_dropout():
    """The peers' dropout keeps each entry with probability 1 - p, scales it by 1 / (1 - p), passes gradients
    through the kept entries only, and is the identity in eval mode (as ``F.dropout``)."""
    from bridge.evaluation.peers import feature_dropout

    torch.manual_seed(0)
    x = torch.rand(400, 500) + 0.5  # no exact zeros: a zero in the output is a dropped entry
    assert feature_dropout(x, 0.5, training=False) is x
    assert feature_dropout(x, 0.0, training=True) is x
    for p in (0.2, 0.5, 0.8):
        x.requires_grad_(True)
        out = feature_dropout(x, p, training=True)
        kept = out != 0
        assert abs(kept.float().mean().item() - (1 - p)) < 0.01  # 200,000 draws: sd 0.001
        torch.testing.assert_close(out[kept], x[kept] / (1 - p))
        out.sum().backward()
        torch.testing.assert_close(x.grad, kept.float() / (1 - p))
        x = x.detach()


def test_every_network_trains_within_the_retained_heap(monkeypatch):
    from contextlib import contextmanager

    from bridge.evaluation import networks
    from bridge.evaluation.loop import prepare_targets

    inside, seen = [False], []

    @contextmanager
    def spy(enabled: bool = True):
        inside[0] = True
        try:
            yield True
        finally:
            inside[0] = False

    def train(model, *args):
        seen.append(inside[0])
        return networks.train_network(model, *args)

    monkeypatch.setattr(networks, "retained_heap", spy)
    x, edges, labels, fans, splits = _planted(60)
    targets = prepare_targets("topic", labels, labels >= 0, splits, 5)
    grid = networks.TrainGrid("linear", (0, 1), (1e-2,), (0.0, 1e-3), 3, 1)

    def make(t, seed, lr):
        features = torch.from_numpy(x.astype(np.float32))
        layer = torch.nn.Linear(features.shape[1], t.out_dim)
        return _Net(layer, features), None

    candidates = networks.network_candidates(make, targets, grid, train)
    assert len(candidates) == 4 and seen == [True] * 4 and inside[0] is False


class _Net(torch.nn.Module):
    def __init__(self, layer: torch.nn.Module, features: torch.Tensor):
        super().__init__()
        self.layer, self.features = layer, features

    def forward(self) -> torch.Tensor:
        return self.layer(self.features)


@pytest.mark.parametrize("sparse", [True, False])
def test_a_bound_network_moves_its_graph_with_it(sparse):
    """``Bound(net, x, graph).to(device)`` moves the graph too (it is no buffer): the meta device stands in for a GPU."""
    from torch_sparse import SparseTensor

    edge_index = torch.tensor([[0, 1, 2], [1, 2, 0]])
    graph = SparseTensor(row=edge_index[1], col=edge_index[0], sparse_sizes=(3, 3)) if sparse else edge_index
    bound = peers.Bound(peers.GCN(4, 8, 2), torch.randn(3, 4), graph)
    assert bound.to("meta") is bound
    moved = bound.graph.device() if sparse else bound.graph.device
    assert moved.type == "meta" and bound.x.device.type == "meta"
    assert all(p.device.type == "meta" for p in bound.parameters())


def test_network_candidates_train_on_the_resolved_device(monkeypatch):
    """The requested device is resolved once per task, and every network, the targets and the split indices are on
    it while training; the predictions come back to the CPU."""
    from bridge.evaluation import networks
    from bridge.evaluation.loop import prepare_targets

    asked, seen = [], []
    monkeypatch.setattr(networks, "resolve_torch_device", lambda d: asked.append(d) or "cpu")
    x, edges, labels, fans, splits = _planted(60)
    targets = prepare_targets("topic", labels, labels >= 0, splits, 5)
    grid = networks.TrainGrid("linear", (0,), (1e-2,), (0.0, 1e-3), 3, 1)

    class Recorded(_Net):
        def to(self, *args, **kwargs):
            seen.append(torch.device(*args, **kwargs))
            return super().to(*args, **kwargs)

    def make(t, seed, lr):
        features = torch.from_numpy(x.astype(np.float32))
        return Recorded(torch.nn.Linear(features.shape[1], t.out_dim), features), None

    def train(model, groups, target, idx, *args):
        seen.append((target.device, {i.device for i in idx.values()}))
        return networks.train_network(model, groups, target, idx, *args)

    candidates = networks.network_candidates(make, targets, grid, train, device="cuda")
    cpu = torch.device("cpu")
    assert asked == ["cuda"] and seen == [cpu, (cpu, {cpu})] * 2
    assert all(isinstance(c.val_pred, np.ndarray) for c in candidates)


def test_gatv2_peer_with_its_self_loops_cached_equals_gatv2conv_adding_them():
    """The GATv2 peer builds the self-looped edge index once (``cached``) instead of letting each ``GATv2Conv`` add
    the loops per call: outputs and gradients are PyG's default convolutions' bit for bit, in train mode (dropout on
    inputs and attention, the same random draws) and in eval mode, over epochs, on a graph with a self loop."""
    from torch_geometric.nn import GATv2Conv

    torch.manual_seed(0)
    n = 30
    x = torch.randn(n, 12)
    edge_index = torch.cat([torch.randint(0, n, (2, 80)), torch.tensor([[3], [3]])], dim=1)  # one self loop
    net = peers.GATv2(12, 8, 3, heads=2, dropout=0.5)
    ref = peers.GATv2(12, 8, 3, heads=2, dropout=0.5, cached=False)
    ref.conv1 = GATv2Conv(12, 4, heads=2, dropout=0.5)  # PyG's default: the loops added inside, per call
    ref.conv2 = GATv2Conv(8, 3, heads=1, dropout=0.5)
    ref.load_state_dict(net.state_dict())
    ref.forward = lambda x, e: peers.TwoLayerGNN.forward(ref, x, e)  # no loops of its own
    for epoch in range(3):
        for model in (net, ref):
            model.train()
            model.zero_grad()
        torch.manual_seed(epoch)
        out = net(x, edge_index)
        out.square().sum().backward()
        torch.manual_seed(epoch)
        expected = ref(x, edge_index)
        expected.square().sum().backward()
        assert torch.equal(out, expected)
        for (name, p), q in zip(net.named_parameters(), ref.parameters()):
            assert torch.equal(p.grad, q.grad), name
    net.eval(), ref.eval()
    assert torch.equal(net(x, edge_index), ref(x, edge_index))
    looped = net._looped[1]
    net(x, edge_index)
    assert net._looped[1] is looped  # reused for the same edge index
    own_loops = int((edge_index[0] == edge_index[1]).sum())
    assert (
        own_loops >= 1 and looped.shape[1] == 81 - own_loops + n
    )  # the graph's own loops removed, one per node
    other = edge_index[:, :40]
    net(x, other)
    assert net._looped[0] is other and net._looped[1].shape[1] == 40 - int((other[0] == other[1]).sum()) + n
