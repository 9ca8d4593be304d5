"""Linear and MLP heads on frozen user embeddings (the linear probe): topic classification and fans prediction.

For one representation ``x [N, D]`` (e.g. ``[R^G || R^T || R^I]``) and each task, small torch heads are fitted on
the train split only (inputs standardized with train statistics), early-stopped on the val split, and the
head type / weight decay is chosen on val; the test split is scored once per seed with the chosen head.

All heads of a grid (head type x weight decay x seed) of one task are trained together as one batched model
(independent parameters, summed losses, so independent gradients): this keeps the whole evaluation of a run
to seconds on a CPU at the default corpus's size. The heads train on ``EvalConfig.device`` (``auto``: a CUDA GPU
when torch sees one): at the paper's 60,000 users one row's heads take minutes on one CPU thread (171 s for the
1,708 columns of ``mmga_round_0``, docs/performance.md). On a GPU the sums run in another order, so its numbers
can differ from the CPU's by rounding.

Tasks:
- topic: softmax classifier, cross-entropy; early stopping on val cross-entropy; choice on val macro-F1;
  test accuracy and macro-F1. Users with label -1 are excluded.
- fans: regressor on ``log1p(fans)`` (standardized with train mean/std), Huber loss; early stopping and
  choice on val MAE; test MAE, Spearman and accuracy over quantile buckets (edges from the train targets).
  Users with unknown fans (nan) are excluded.
"""

from __future__ import annotations

import math
from itertools import product
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from bridge.evaluation.config import EvalConfig, HeadType
from bridge.evaluation.loop import Candidate, TaskTargets, evaluate_tasks, select_and_score
from bridge.evaluation.results import Evaluation, TaskScores
from mmga_common.runtime import resolve_torch_device
from mmga_common.threads import torch_threads

# the dropout streams' seeds are the heads' seeds plus this, apart from the streams that draw the initial weights
_DROPOUT_SEED_OFFSET = 1_000_003


class BatchedHeads(torch.nn.Module):
    """``G`` independent linear or one-hidden-layer MLP heads evaluated in one pass.

    Args:
        seeds: one seed per head, used for its initialisation and dropout masks.
        in_dim: input width ``D``.
        out_dim: output width ``C``.
        hidden: hidden width of the MLP, ``None`` for a linear head.
        dropout: dropout on the MLP's hidden layer during training.

    Shapes: input ``[N, D]`` -> output ``[G, N, C]``.
    """

    def __init__(self, seeds: list[int], in_dim: int, out_dim: int, hidden: int | None, dropout: float = 0.0):
        super().__init__()
        self.seeds = list(seeds)
        self.hidden = hidden
        self.dropout = dropout
        dims = [in_dim, out_dim] if hidden is None else [in_dim, hidden, out_dim]
        self.weights = torch.nn.ParameterList()
        self.biases = torch.nn.ParameterList()
        for d_in, d_out in zip(dims[:-1], dims[1:]):
            self.weights.append(torch.nn.Parameter(torch.empty(len(seeds), d_in, d_out)))
            self.biases.append(torch.nn.Parameter(torch.empty(len(seeds), d_out)))
        self._generators = [torch.Generator().manual_seed(int(s)) for s in self.seeds]
        # each head's dropout masks from a stream of its own, seeded from its seed: a head draws the same masks
        # whatever heads share its batch
        self._dropout_generators = [
            torch.Generator().manual_seed(_DROPOUT_SEED_OFFSET + int(s)) for s in self.seeds
        ]
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # nn.Linear's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), drawn per head from its own seed
        with torch.no_grad():
            for g, gen in enumerate(self._generators):
                for w, b in zip(self.weights, self.biases):
                    bound = 1.0 / math.sqrt(w.shape[1])
                    w[g].copy_(torch.rand(w.shape[1:], generator=gen) * 2 * bound - bound)
                    b[g].copy_(torch.rand(b.shape[1:], generator=gen) * 2 * bound - bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w0 = self.weights[0]
        num_heads, in_dim, width = w0.shape
        # all heads' first layers as one [N, D] @ [D, G*K] product
        h = (x @ w0.permute(1, 0, 2).reshape(in_dim, num_heads * width)).view(-1, num_heads, width)
        h = h.transpose(0, 1) + self.biases[0][:, None, :]
        if self.hidden is None:
            return h
        h = F.relu(h)
        if self.training and self.dropout > 0:
            # drawn from the CPU streams on every device: the same masks as on the CPU
            draws = torch.stack([torch.rand(h.shape[1:], generator=g) for g in self._dropout_generators])
            keep = (draws >= self.dropout).to(h.device)
            h = h * keep / (1.0 - self.dropout)
        return torch.bmm(h, self.weights[1]) + self.biases[1][:, None, :]

    def l2(self) -> torch.Tensor:
        """Squared norm of each head's weights (not biases). ``[G]``"""
        return sum(w.pow(2).sum(dim=(1, 2)) for w in self.weights)


def standardize(x: np.ndarray, train: np.ndarray) -> np.ndarray:
    """``x`` standardized per column with the mean and std of the rows ``train`` (a constant column: std 1)."""
    mean = x[train].mean(axis=0)
    std = x[train].std(axis=0)
    std[std == 0] = 1.0
    return (x - mean) / std


def _fit_heads(
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_val: torch.Tensor,
    y_val: torch.Tensor,
    task: Literal["topic", "fans"],
    out_dim: int,
    head: HeadType,
    weight_decays: list[float],
    seeds: list[int],
    cfg: EvalConfig,
) -> BatchedHeads:
    """Train one batched model of heads (one per (weight decay, seed) pair) with per-head early stopping (a head
    stops after ``cfg.patience`` epochs without a better val loss, and an epoch after that is never its best);
    returns it holding each head's best-on-val parameters."""
    device = x_train.device
    model = BatchedHeads(
        seeds, x_train.shape[1], out_dim, None if head == "linear" else cfg.hidden, cfg.dropout
    ).to(device)  # drawn on the CPU from each head's seed, then moved
    wd = torch.tensor(weight_decays, dtype=torch.float32, device=device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    num = len(seeds)
    best_val = torch.full((num,), float("inf"), device=device)
    best_params = [p.detach().clone() for p in model.parameters()]
    since_best = torch.zeros(num, dtype=torch.long, device=device)

    def per_head_loss(out: torch.Tensor, y: torch.Tensor, training: bool) -> torch.Tensor:
        if task == "topic":
            return (
                F.cross_entropy(out.reshape(-1, out_dim), y.repeat(num), reduction="none")
                .view(num, -1)
                .mean(1)
            )
        pred = out[..., 0]
        if training:
            return F.huber_loss(pred, y.expand_as(pred), reduction="none").mean(1)
        return (pred - y).abs().mean(1)  # val MAE in standardized units, a constant factor from real units

    for _ in range(cfg.max_epochs):
        model.train()
        opt.zero_grad(set_to_none=True)
        loss = per_head_loss(model(x_train), y_train, training=True) + wd * model.l2()
        loss.sum().backward()
        opt.step()
        model.eval()
        with torch.no_grad():
            val = per_head_loss(model(x_val), y_val, training=False)
            # a head that has stopped keeps training with the others (they are one batched model) but its best
            # epoch is final: each head's result is what it alone would give, whatever heads share its batch
            improved = (val < best_val) & (since_best <= cfg.patience)
            best_val = torch.where(improved, val, best_val)
            since_best = torch.where(improved, 0, since_best + 1)
            for bp, p in zip(best_params, model.parameters()):
                bp[improved] = p[improved]
        if bool((since_best > cfg.patience).all()):
            break
    with torch.no_grad():
        for bp, p in zip(best_params, model.parameters()):
            p.copy_(bp)
    model.eval()
    return model


def _evaluate_heads(x: np.ndarray, targets: TaskTargets, cfg: EvalConfig) -> TaskScores:
    """Every head type x weight decay x head seed of ``cfg`` on one task; val chooses per head seed."""
    return select_and_score(targets, head_candidates(x, targets, cfg), cfg.head_seeds)


def _fitted_grid(x: np.ndarray, targets: TaskTargets, cfg: EvalConfig):
    """Yield ``(head type, [(weight decay, seed)], fitted BatchedHeads, {split: x}, standardized x [N, D] float32
    array)`` for every head type of ``cfg``, trained on the known train targets, early-stopped on val, on
    ``cfg.device`` (the heads and the split tensors are there; the array of every user stays on the host)."""
    device = torch.device(resolve_torch_device(cfg.device))
    rows = targets.known  # the heads see the users with a known target only
    masks = {name: mask[rows] for name, mask in targets.masks.items()}
    x = np.asarray(x, dtype=np.float64)
    full = standardize(x, targets.masks["train"]).astype(np.float32)  # train statistics, every user
    known = full[rows]
    y = targets.standardized()[rows]
    xt = {split: torch.from_numpy(known[mask]).to(device) for split, mask in masks.items()}
    yt = {split: torch.from_numpy(y[masks[split]]).to(device) for split in ("train", "val")}
    grid = list(product(cfg.weight_decays, cfg.head_seeds))
    for head in cfg.heads:
        model = _fit_heads(
            xt["train"],
            yt["train"],
            xt["val"],
            yt["val"],
            targets.task,
            targets.out_dim,
            head,
            [wd for wd, _ in grid],
            [s for _, s in grid],
            cfg,
        )
        yield head, grid, model, xt, full


def head_candidates(x: np.ndarray, targets: TaskTargets, cfg: EvalConfig, tag: str = "") -> list[Candidate]:
    """Every head type x weight decay x head seed of ``cfg`` trained on ``x`` for one task, as candidates
    (their head named ``<type><tag>``)."""
    candidates = []
    for head, grid, model, xt, _ in _fitted_grid(x, targets, cfg):
        with torch.no_grad():
            val_pred, test_pred = (targets.decode(model(xt[s]).cpu().numpy()) for s in ("val", "test"))
        candidates += [
            Candidate(seed, head + tag, wd, val_pred[g], test_pred[g]) for g, (wd, seed) in enumerate(grid)
        ]
    return candidates


def head_outputs(
    x: np.ndarray, targets: TaskTargets, cfg: EvalConfig
) -> list[tuple[int, str, float, torch.Tensor]]:
    """The same heads as :func:`head_candidates`, with their raw outputs ``[N, C]`` for **every** user (the base
    predictions that Correct & Smooth propagates): ``(seed, head type, weight decay, outputs)`` per head."""
    out = []
    for head, grid, model, xt, full in _fitted_grid(x, targets, cfg):
        with torch.no_grad():  # every user's rows go to the device here only, where they are read
            outputs = model(torch.from_numpy(full).to(xt["train"].device)).cpu()  # C&S propagates on the CPU
        out += [(seed, head, wd, outputs[g]) for g, (wd, seed) in enumerate(grid)]
    return out


def evaluate_representation(
    x: np.ndarray, labels: np.ndarray, fans: np.ndarray, splits: np.ndarray, cfg: EvalConfig | None = None
) -> Evaluation:
    """Fit and score the topic and fans heads on one frozen representation.

    Args:
        x: user representation ``[N, D]`` (rows in corpus user order).
        labels: topic index ``[N]``, -1 = unknown (excluded from the topic task).
        fans: follower counts ``[N]``, nan = unknown (excluded from the fans task).
        splits: ``[N]`` with 0 train, 1 val, 2 test.

    Returns the :class:`Evaluation` (each metric a :class:`Stat` over the head seeds).
    """
    cfg = cfg or EvalConfig()
    x = np.asarray(x)
    n = len(x)
    if x.ndim != 2 or len(labels) != n or len(fans) != n or len(splits) != n:
        raise ValueError(
            f"shape mismatch: x {x.shape}, labels {np.shape(labels)}, fans {np.shape(fans)}, splits {np.shape(splits)}"
        )
    if not np.isfinite(x).all():
        raise ValueError("the representation contains non-finite values")
    # On the CPU: the heads' matrices are small (a few hundred rows at the default size): intra-op threads cost
    # more than they save (measured 5-25x slower with 2 threads on a busy 2-core machine), and one thread makes
    # the sums' order, hence the numbers, the same on every machine.
    with torch_threads(1):
        scores = evaluate_tasks(labels, fans, splits, cfg.fans_buckets, lambda t: _evaluate_heads(x, t, cfg))
    return Evaluation(scores["topic"], scores["fans"], int(x.shape[1]))
