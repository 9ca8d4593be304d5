"""The peers a user would pick instead of MMGA, built from PyG's own layers over frozen encoder embeddings.

- ``peer_sgc`` (Wu et al. 2019, SGC), K chosen on val from ``EvalConfig.sgc_hops``: a parameter-free K-hop propagation of the no-alignment encoders'
  features ``F = [R^T || R^I || X]`` (each column standardized over all users), ``[F || S F || ... || S^K F]`` with
  ``S = D^-1/2 (A + I) D^-1/2`` computed by PyG's ``SGConv`` (its linear map fixed to the identity); then the
  standard frozen-embedding heads of :mod:`bridge.evaluation.heads`.
- ``peer_gcn`` (Kipf & Welling 2017, the supervised recipe of SimTeG / GLEM / MAGB): a 2-layer PyG ``GCNConv``
  network trained end to end on each downstream task's train split over the same frozen ``F``, early-stopped on
  val, learning rate and weight decay chosen on val, test scored once per head seed
  (``bridge.evaluation.networks``). It spends the labels inside the graph model.
- ``peer_gatv2`` (Brody et al. 2022): the same protocol with a 2-layer PyG ``GATv2Conv`` network (multi-head
  attention in the hidden layer, PyG's GAT example sizes).
- ``peer_cs`` (Huang et al. 2021, Correct & Smooth): the linear heads' predictions over ``F`` for every user,
  their train residuals propagated (correct) and then the train labels propagated (smooth) by PyG's
  ``CorrectAndSmooth``; val chooses the head, its weight decay and the two propagation strengths. Topic only:
  C&S propagates class probabilities, so ``peer_cs``'s fans score is its base heads'.

The ``peer_frozen_*`` rows run ``peer_sgc`` / ``peer_gcn`` over the frozen pretrained encoders' features.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch_geometric.nn import GATv2Conv, GCNConv, SGConv
from torch_geometric.nn.models import CorrectAndSmooth
from torch_geometric.utils import add_self_loops, remove_self_loops
from torch_sparse import SparseTensor

from bridge.evaluation.config import EvalConfig
from bridge.evaluation.heads import head_candidates, head_outputs, standardize
from bridge.evaluation.loop import Candidate, TaskTargets, evaluate_tasks, select_and_score
from bridge.evaluation.networks import NetworkFactory, TrainGrid, evaluate_network
from bridge.evaluation.results import Evaluation, TaskScores
from mmga_common.threads import torch_threads


def evaluate_sgc(
    x: np.ndarray,
    edges: np.ndarray,
    labels: np.ndarray,
    fans: np.ndarray,
    splits: np.ndarray,
    cfg: EvalConfig | None = None,
) -> Evaluation:
    """``peer_sgc``: the standard heads over ``[F || SF || ... || S^K F]`` for every K of ``cfg.sgc_hops``; val
    chooses K together with the head and its weight decay, per head seed (the chosen head reads ``linear(K=2)``).
    """
    cfg = cfg or EvalConfig()
    feats = {k: sgc_features(x, edges, hops=k) for k in cfg.sgc_hops}

    def per_task(targets: TaskTargets) -> TaskScores:
        candidates = [c for k, f in feats.items() for c in head_candidates(f, targets, cfg, tag=f"(K={k})")]
        return select_and_score(targets, candidates, cfg.head_seeds)

    with torch_threads(1):
        scores = evaluate_tasks(labels, fans, splits, cfg.fans_buckets, per_task)
    return Evaluation(scores["topic"], scores["fans"], int(feats[max(cfg.sgc_hops)].shape[1]))


def edge_index_of(edges: np.ndarray) -> torch.Tensor:
    """``[2, 2E]`` directed edge index (both directions) of an undirected ``[E, 2]`` edge list."""
    e = torch.as_tensor(np.asarray(edges, dtype=np.int64).reshape(-1, 2))
    return torch.cat([e.t(), e.flip(1).t()], dim=1)


def sgc_features(x: np.ndarray, edges: np.ndarray, hops: int = 2) -> np.ndarray:
    """``[F || S F || ... || S^hops F]`` with F the column-standardized ``x [N, D]``; returns ``[N, (hops+1) D]``.

    ``S`` is SGC's normalized adjacency with self loops, applied by PyG's ``SGConv`` with its linear map set to
    the identity, so the propagation is exactly PyG's and has no parameters.
    """
    x = np.asarray(x, dtype=np.float64)
    feats = torch.from_numpy(standardize(x, np.ones(len(x), dtype=bool)).astype(np.float32))
    edge_index = edge_index_of(edges)
    dim = feats.shape[1]
    out = [feats]
    with torch.no_grad():
        for k in range(1, hops + 1):
            conv = SGConv(dim, dim, K=k, bias=False)
            conv.lin.weight.copy_(torch.eye(dim))
            out.append(conv(feats, edge_index))
    return torch.cat(out, dim=1).numpy()


def feature_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """``F.dropout``'s result (each entry kept with probability ``1 - p`` and scaled by ``1 / (1 - p)``, identity
    when not training), with its mask drawn by ``torch.rand_like`` instead of ``bernoulli_``: on CPU,
    ``bernoulli_`` draws one number at a time and took 6.7 ms for the default run's ``[1000, 422]`` inputs, about
    half of a GCN peer's epoch; this takes 2.9 ms. A GCN peer's epoch is 0.74x, a GATv2 peer's 0.87x
    (``benchmarks/bench_peer_dropout.py``, 2026-12-03, one thread). Another random stream than ``F.dropout``'s,
    the same distribution."""
    if not training or p == 0.0:
        return x
    return x * (torch.rand_like(x) >= p) * (1.0 / (1.0 - p))


class TwoLayerGNN(torch.nn.Module):
    """Dropout, ``conv1``, the activation, dropout, ``conv2``: the shape both supervised GNN peers share.
    Shapes: ``x [N, D]``, ``edge_index [2, E]`` (or a ``SparseTensor``) -> ``[N, C]``."""

    activation = staticmethod(F.relu)

    def __init__(self, conv1: torch.nn.Module, conv2: torch.nn.Module, dropout: float):
        super().__init__()
        self.conv1, self.conv2, self.dropout = conv1, conv2, dropout

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        x = feature_dropout(x, self.dropout, self.training)
        x = self.activation(self.conv1(x, edge_index))
        x = feature_dropout(x, self.dropout, self.training)
        return self.conv2(x, edge_index)


class GCN(TwoLayerGNN):
    """Two ``GCNConv`` layers with ReLU and dropout."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, dropout: float = 0.5):
        super().__init__(GCNConv(in_dim, hidden, cached=True), GCNConv(hidden, out_dim, cached=True), dropout)


class GATv2(TwoLayerGNN):
    """Two ``GATv2Conv`` layers: ``heads`` attention heads of width ``hidden // heads`` concatenated, ELU, then one
    head to the output; dropout on the inputs and on the attention coefficients.

    Each node attends to itself too, as ``GATv2Conv``'s default ``add_self_loops=True`` has it: the graph's own self
    loops are removed and one per node appended, the same edge index both convolutions would build. With
    ``cached=True`` (as the GCN peer's ``GCNConv(cached=True)``: one graph, transductive) it is built on the first
    call and reused while the same edge index comes in, instead of twice per forward (the outputs are the same
    bit for bit, an epoch 3-7% shorter on the default corpus).
    """

    activation = staticmethod(F.elu)

    def __init__(
        self,
        in_dim: int,
        hidden: int,
        out_dim: int,
        heads: int = 8,
        dropout: float = 0.5,
        cached: bool = True,
    ):
        width = max(1, hidden // heads)
        super().__init__(
            GATv2Conv(in_dim, width, heads=heads, dropout=dropout, add_self_loops=False),
            GATv2Conv(width * heads, out_dim, heads=1, dropout=dropout, add_self_loops=False),
            dropout,
        )
        self.cached = cached
        self._looped: tuple[torch.Tensor, torch.Tensor] | None = None  # (the edge index given, it with loops)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        if self.cached and self._looped is not None and self._looped[0] is edge_index:
            looped = self._looped[1]
        else:
            looped = add_self_loops(remove_self_loops(edge_index)[0], num_nodes=x.shape[0])[0]
            if self.cached:
                self._looped = (edge_index, looped)
        return super().forward(x, looped)


class Bound(torch.nn.Module):
    """A graph network with its inputs bound: ``Bound(net, x, graph)()`` is ``net(x, graph)`` (``graph``: an edge
    index ``[2, E]`` or a ``SparseTensor`` adjacency)."""

    def __init__(self, net: torch.nn.Module, x: torch.Tensor, graph: torch.Tensor | SparseTensor):
        super().__init__()
        self.net = net
        self.register_buffer("x", x, persistent=False)
        self.graph = graph

    def forward(self) -> torch.Tensor:
        return self.net(self.x, self.graph)

    def _apply(self, fn, recurse=True):
        """``to(device)`` and the like move the graph along with the parameters and ``x`` (it is no buffer)."""
        super()._apply(fn, recurse)
        self.graph = self.graph.to(self.x.device)
        return self


def graph_network(kind: str, x: np.ndarray, edge_index: torch.Tensor, cfg: EvalConfig) -> NetworkFactory:
    """The factory of the ``kind`` (``"gcn"`` or ``"gatv2"``) peer over features ``x [N, D]``, standardized with
    each task's train statistics."""

    # GCN propagates over a SparseTensor (PyG's sparse-matrix path: the same normalized sum, measured 1.8x faster
    # per epoch than the edge-index path on the default corpus); GATv2 needs per-edge attention either way.
    adj = SparseTensor(row=edge_index[1], col=edge_index[0], sparse_sizes=(len(x), len(x)))

    def make(targets: TaskTargets, seed: int, lr: float) -> tuple[torch.nn.Module, None]:
        feats = torch.from_numpy(standardize(x.astype(np.float64), targets.masks["train"]).astype(np.float32))
        if kind == "gcn":
            net = GCN(x.shape[1], cfg.gcn_hidden, targets.out_dim, cfg.gcn_dropout)
            return Bound(net, feats, adj), None
        net = GATv2(x.shape[1], cfg.gcn_hidden, targets.out_dim, cfg.gat_heads, cfg.gcn_dropout)
        return Bound(net, feats, edge_index), None

    return make


def peer_grid(name: str, cfg: EvalConfig) -> TrainGrid:
    """The training grid of every network trained end to end (the GNN peers and the fine-tuned rows)."""
    return TrainGrid(
        name, cfg.network_seeds, cfg.gcn_lrs, cfg.gcn_weight_decays, cfg.gcn_max_epochs, cfg.gcn_patience
    )


def evaluate_gnn(
    kind: str,
    x: np.ndarray,
    edges: np.ndarray,
    labels: np.ndarray,
    fans: np.ndarray,
    splits: np.ndarray,
    cfg: EvalConfig | None = None,
) -> Evaluation:
    """Train and score the ``kind`` peer (``"gcn"``: ``peer_gcn``, ``"gatv2"``: ``peer_gatv2``) on both tasks.

    Every user is a node (unlabelled ones still pass messages); only train-split users with a known target
    enter the loss, val picks the epoch, the learning rate and the weight decay, and test is scored once per
    head seed.
    """
    cfg = cfg or EvalConfig()
    x = np.asarray(x)
    make = graph_network(kind, x, edge_index_of(edges), cfg)
    grid = peer_grid(kind, cfg)
    return evaluate_network(make, labels, fans, splits, cfg.fans_buckets, grid, x.shape[1], cfg.device)


def evaluate_gcn(x, edges, labels, fans, splits, cfg: EvalConfig | None = None) -> Evaluation:
    """``peer_gcn``: :func:`evaluate_gnn` with the 2-layer GCN."""
    return evaluate_gnn("gcn", x, edges, labels, fans, splits, cfg)


def correct_and_smooth(
    base: torch.Tensor,
    targets: TaskTargets,
    edge_index: torch.Tensor,
    correction_alpha: float,
    smoothing_alpha: float,
    layers: int,
) -> torch.Tensor:
    """PyG's ``CorrectAndSmooth`` over a classifier's base outputs ``[N, C]`` (logits, turned into class
    probabilities); the train split's known labels are the ground truth. Returns ``[N, C]``."""
    if targets.task != "topic":
        raise ValueError("Correct & Smooth propagates class probabilities: topic only")
    train = torch.from_numpy(targets.masks["train"])
    y_train = torch.from_numpy(targets.standardized())[train]
    y_soft = base.softmax(dim=-1)
    cs = CorrectAndSmooth(layers, correction_alpha, layers, smoothing_alpha, autoscale=True)
    with torch.no_grad():
        corrected = cs.correct(y_soft, y_train, train, edge_index)
        return cs.smooth(corrected, y_train, train, edge_index)


def evaluate_cs(
    x: np.ndarray,
    edges: np.ndarray,
    labels: np.ndarray,
    fans: np.ndarray,
    splits: np.ndarray,
    cfg: EvalConfig | None = None,
) -> Evaluation:
    """``peer_cs``: the linear heads over ``x`` (as the frozen-embedding rows), then Correct & Smooth; val
    chooses the head, its weight decay and (correction, smoothing) strength per head seed. C&S is defined on
    class probabilities (PyG's smoothing clamps to [0, 1]), so the fans task is scored with the base heads alone."""
    cfg = cfg or EvalConfig()
    x = np.asarray(x)
    edge_index = edge_index_of(edges)

    def per_task(targets: TaskTargets) -> TaskScores:
        if targets.task != "topic":  # C&S propagates class probabilities (its smoothing clamps to [0, 1])
            return select_and_score(targets, head_candidates(x, targets, cfg), cfg.head_seeds)
        val, test = (torch.from_numpy(targets.masks[s]) for s in ("val", "test"))
        candidates = []
        for seed, head, wd, base in head_outputs(x, targets, cfg):
            for a1, a2 in cfg.cs_alphas:
                out = correct_and_smooth(base, targets, edge_index, a1, a2, cfg.cs_layers).numpy()
                candidates.append(
                    Candidate(
                        seed,
                        f"{head}+C&S({a1:g},{a2:g})",
                        wd,
                        targets.decode(out[val]),
                        targets.decode(out[test]),
                    )
                )
        return select_and_score(targets, candidates, cfg.head_seeds)

    with torch_threads(1):
        scores = evaluate_tasks(labels, fans, splits, cfg.fans_buckets, per_task)
    return Evaluation(scores["topic"], scores["fans"], int(x.shape[1]))
