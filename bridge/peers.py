"""The peers a user would pick instead of MMGA, built from PyG's own layers over frozen encoder embeddings.

- ``peer_sgc`` (Wu et al. 2019, SGC): a parameter-free K-hop propagation of the no-alignment encoders'
  features ``F = [R^T || R^I || X]`` (each column standardized over all users), ``[F || S F || ... || S^K F]`` with
  ``S = D^-1/2 (A + I) D^-1/2`` computed by PyG's ``SGConv`` (its linear map fixed to the identity); then the
  standard frozen-embedding heads of :mod:`bridge.evaluate`.
- ``peer_gcn`` (Kipf & Welling 2017, the supervised recipe of SimTeG / GLEM / MAGB): a 2-layer PyG ``GCNConv``
  network trained end to end on each downstream task's train split over the same frozen ``F``, early-stopped on
  val, weight decay chosen on val, test scored once per head seed. It spends the labels inside the graph model,
  so it is the ceiling a user reaches with the same encoders.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch_geometric.nn import GCNConv, SGConv

from bridge import metrics, tasks
from bridge.config import EvalConfig
from bridge.evaluate import standardize, summarize
from mmga_common.threads import torch_threads


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


def _gcn_task(
    x: np.ndarray,
    edge_index: torch.Tensor,
    y: np.ndarray,
    known: np.ndarray,
    splits: np.ndarray,
    task: Literal["topic", "fans"],
    cfg: EvalConfig,
) -> dict[str, Any]:
    masks = {name: known & (splits == code) for name, code in (("train", 0), ("val", 1), ("test", 2))}
    for name, mask in masks.items():
        if not mask.any():
            raise ValueError(f"task {task}: no users with a known target in the {name} split")
    feats = torch.from_numpy(standardize(x.astype(np.float64), masks["train"]).astype(np.float32))
    idx = {name: torch.from_numpy(np.flatnonzero(mask)) for name, mask in masks.items()}
    if task == "topic":
        out_dim = int(y[known].max()) + 1
        edges = None  # fans buckets only
        target = torch.from_numpy(np.where(known, y, 0).astype(np.int64))
    else:
        mu, sd = float(y[masks["train"]].mean()), float(y[masks["train"]].std()) or 1.0
        out_dim = 1
        target = torch.from_numpy(np.where(known, (y - mu) / sd, 0.0).astype(np.float32))
        edges = metrics.quantile_edges(y[masks["train"]], cfg.fans_buckets)
    y_val, y_test = y[masks["val"]], y[masks["test"]]

    def predict(out: torch.Tensor, split: str) -> np.ndarray:
        o = out[idx[split]].numpy()
        return o.argmax(-1) if task == "topic" else o[:, 0].astype(np.float64) * sd + mu

    per_seed: dict[str, list[float]] = {}
    chosen = []
    for seed in cfg.seeds:
        best = None  # (val score, lower is better; weight decay; epochs; the best epoch's outputs)
        for wd in cfg.gcn_weight_decays:
            _, out, epochs = _train_gcn(feats, edge_index, target, idx, task, out_dim, seed, wd, cfg)
            val_pred = predict(out, "val")
            score = metrics.selection_score(task, y_val, val_pred)
            if best is None or score < best[0]:
                best = (score, wd, epochs, out)
        score, wd, epochs, out = best
        pred = predict(out, "test")  # test is scored once, with the model val chose
        chosen.append(
            {"seed": seed, "head": "gcn", "weight_decay": wd, "epochs": epochs, "val_score": abs(score)}
        )
        for k, v in metrics.task_scores(task, y_test, pred, edges).items():
            per_seed.setdefault(k, []).append(v)
    result: dict[str, Any] = {name: summarize(values) for name, values in per_seed.items()}
    result["chosen"] = chosen
    result["n"] = {name: int(mask.sum()) for name, mask in masks.items()}
    return result


def evaluate_gcn(
    x: np.ndarray,
    edges: np.ndarray,
    labels: np.ndarray,
    fans: np.ndarray,
    splits: np.ndarray,
    cfg: EvalConfig | None = None,
) -> dict[str, Any]:
    """Train and score ``peer_gcn`` on both tasks; same result layout as ``evaluate_representation``.

    Every user is a node (unlabelled ones still pass messages); only train-split users with a known target
    enter the loss, val picks the epoch and the weight decay, and test is scored once per head seed.
    """
    cfg = cfg or EvalConfig()
    x = np.asarray(x)
    labels, fans, splits = np.asarray(labels), np.asarray(fans, dtype=np.float64), np.asarray(splits)
    edge_index = edge_index_of(edges)
    known = tasks.known_targets(labels, fans)
    targets = {"topic": labels, "fans": np.log1p(np.where(known["fans"], fans, 0.0))}
    skipped = tasks.unavailable_tasks(labels, fans, splits)  # the same rule as the frozen-embedding heads
    with torch_threads(1):
        return {
            task: tasks.skipped_task(task, skipped[task])
            if task in skipped
            else _gcn_task(x, edge_index, targets[task], known[task], splits, task, cfg)
            for task in tasks.TASKS
        }
