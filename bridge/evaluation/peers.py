"""The peers a user would pick instead of MMGA, built from PyG's own layers over frozen encoder embeddings.

- ``peer_sgc`` (Wu et al. 2019, SGC), K chosen on val from ``EvalConfig.sgc_hops``: a parameter-free K-hop propagation of the no-alignment encoders'
  features ``F = [R^T || R^I || X]`` (each column standardized over all users), ``[F || S F || ... || S^K F]`` with
  ``S = D^-1/2 (A + I) D^-1/2`` computed by PyG's ``SGConv`` (its linear map fixed to the identity); then the
  standard frozen-embedding heads of :mod:`bridge.evaluation.heads`.
- ``peer_gcn`` (Kipf & Welling 2017, the supervised recipe of SimTeG / GLEM / MAGB): a 2-layer PyG ``GCNConv``
  network trained end to end on each downstream task's train split over the same frozen ``F``, early-stopped on
  val, weight decay chosen on val, test scored once per head seed. It spends the labels inside the graph model,
  so it is the ceiling a user reaches with the same encoders.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch_geometric.nn import GCNConv, SGConv

from bridge.evaluation.config import EvalConfig
from bridge.evaluation.heads import head_candidates, standardize
from bridge.evaluation.loop import Candidate, TaskTargets, evaluate_tasks, select_and_score
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


class GCN(torch.nn.Module):
    """Two ``GCNConv`` layers with ReLU and dropout. Shapes: ``x [N, D]``, ``edge_index [2, E]`` -> ``[N, C]``."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, dropout: float = 0.5):
        super().__init__()
        self.conv1 = GCNConv(in_dim, hidden, cached=True)
        self.conv2 = GCNConv(hidden, out_dim, cached=True)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        x = F.dropout(x, self.dropout, self.training)
        x = F.relu(self.conv1(x, edge_index))
        x = F.dropout(x, self.dropout, self.training)
        return self.conv2(x, edge_index)


def _train_gcn(
    x: torch.Tensor,
    edge_index: torch.Tensor,
    y: torch.Tensor,
    idx: dict[str, torch.Tensor],
    task: Literal["topic", "fans"],
    out_dim: int,
    seed: int,
    weight_decay: float,
    cfg: EvalConfig,
) -> tuple[float, torch.Tensor, int]:
    """Train one GCN with early stopping on val loss; returns (val loss of the best epoch, its predictions
    ``[N, C]``, epochs run)."""
    torch.manual_seed(seed)
    model = GCN(x.shape[1], cfg.gcn_hidden, out_dim, cfg.gcn_dropout)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.gcn_lr, weight_decay=weight_decay)

    def loss_on(out: torch.Tensor, split: str, training: bool) -> torch.Tensor:
        pred, target = out[idx[split]], y[idx[split]]
        if task == "topic":
            return F.cross_entropy(pred, target)
        pred = pred[:, 0]
        return F.huber_loss(pred, target) if training else (pred - target).abs().mean()

    best_val, best_out, since_best, epochs = float("inf"), None, 0, 0
    while epochs < cfg.gcn_max_epochs:
        epochs += 1
        model.train()
        opt.zero_grad(set_to_none=True)
        loss_on(model(x, edge_index), "train", training=True).backward()
        opt.step()
        model.eval()
        with torch.no_grad():
            out = model(x, edge_index)
            val = float(loss_on(out, "val", training=False))
        if val < best_val:
            best_val, best_out, since_best = val, out.clone(), 0
        else:
            since_best += 1
            if since_best > cfg.gcn_patience:
                break
    assert best_out is not None
    return best_val, best_out, epochs


def _gcn_candidates(
    x: np.ndarray, edge_index: torch.Tensor, targets: TaskTargets, cfg: EvalConfig
) -> TaskScores:
    """One GCN per head seed and weight decay on one task; val chooses the weight decay per head seed."""
    feats = torch.from_numpy(standardize(x.astype(np.float64), targets.masks["train"]).astype(np.float32))
    idx = {name: torch.from_numpy(np.flatnonzero(mask)) for name, mask in targets.masks.items()}
    target = torch.from_numpy(targets.standardized())
    candidates = []
    for seed in cfg.head_seeds:
        for wd in cfg.gcn_weight_decays:
            _, out, epochs = _train_gcn(
                feats, edge_index, target, idx, targets.task, targets.out_dim, seed, wd, cfg
            )
            val_pred, test_pred = (targets.decode(out[idx[s]].numpy()) for s in ("val", "test"))
            candidates.append(Candidate(seed, "gcn", wd, val_pred, test_pred, epochs))
    return select_and_score(targets, candidates, cfg.head_seeds)


def evaluate_gcn(
    x: np.ndarray,
    edges: np.ndarray,
    labels: np.ndarray,
    fans: np.ndarray,
    splits: np.ndarray,
    cfg: EvalConfig | None = None,
) -> Evaluation:
    """Train and score ``peer_gcn`` on both tasks; the same :class:`Evaluation` as the frozen-embedding heads.

    Every user is a node (unlabelled ones still pass messages); only train-split users with a known target
    enter the loss, val picks the epoch and the weight decay, and test is scored once per head seed.
    """
    cfg = cfg or EvalConfig()
    x = np.asarray(x)
    edge_index = edge_index_of(edges)
    with torch_threads(1):
        scores = evaluate_tasks(
            labels, fans, splits, cfg.fans_buckets, lambda t: _gcn_candidates(x, edge_index, t, cfg)
        )
    return Evaluation(scores["topic"], scores["fans"], int(x.shape[1]))
