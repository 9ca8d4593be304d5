"""Networks trained end to end on each task, under one protocol: the supervised GNN peers (``peer_gcn``,
``peer_gatv2``) and the fine-tuned rows (``mmga_finetuned``, ``scratch_finetuned``) alike.

A network is built by a :data:`NetworkFactory` ``(targets, seed, lr) -> (module, optimizer groups)`` whose
module takes no input and returns ``[N, C]`` outputs for every user (it holds its graph and features itself),
so this room never needs to know what the network is: the orchestration can hand in one built from a stage's
checkpoint without the evaluation importing the stage.

Per task, head seed, learning rate and weight decay, one network is trained full batch on the train split's
known targets (cross-entropy for topic, Huber on the standardized ``log1p(fans)`` for fans), early-stopped on the
val loss (cross-entropy / MAE); val then chooses the learning rate and weight decay per head seed by the task's
selection score, and test is scored once per head seed with the chosen network (``bridge.evaluation.loop``).
The networks train with freed memory kept in glibc's heap (:func:`mmga_common.allocator.retained_heap`): the
results are the same, the steps faster on large graphs.

Device: ``EvalConfig.device`` (``auto``: a CUDA device when torch sees one). The network is built on the CPU and
moved with ``module.to(device)``, so a network that holds its graph outside its buffers (a ``SparseTensor``, an edge
index) moves it in its ``_apply`` (``bridge.evaluation.peers.Bound``, ``stage2_graph.finetune.FinetuneNetwork``).
On a GPU the sparse sums run in a nondeterministic order, so two runs there agree to rounding, not bit for bit as on
the CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from bridge.evaluation.loop import Candidate, TaskTargets, evaluate_tasks, select_and_score
from bridge.evaluation.results import Evaluation, TaskScores
from mmga_common.allocator import retained_heap
from mmga_common.runtime import resolve_torch_device
from mmga_common.threads import torch_threads

# (targets of the task, seed, learning rate) -> (the network, its optimizer parameter groups or None for one
# group of every parameter at that learning rate)
NetworkFactory = Callable[[TaskTargets, int, float], tuple[torch.nn.Module, list[dict[str, Any]] | None]]


@dataclass(frozen=True)
class TrainGrid:
    """How the networks of one row are trained and what val chooses from.

    Attributes:
        name: the chosen network's name in the report (``"gcn"``, ``"finetuned"``, ...).
        seeds: the head seeds (one network per seed and setting).
        lrs: the learning rates val chooses from.
        weight_decays: the weight decays val chooses from.
        max_epochs: full-batch epochs at most.
        patience: epochs without a better val loss before stopping.
    """

    name: str
    seeds: tuple[int, ...]
    lrs: tuple[float, ...]
    weight_decays: tuple[float, ...]
    max_epochs: int
    patience: int


def task_loss(out: torch.Tensor, target: torch.Tensor, task: str, training: bool) -> torch.Tensor:
    """The training loss (cross-entropy, or Huber on the standardized regression target) or, with
    ``training=False``, the early-stopping loss (cross-entropy, or MAE)."""
    if task == "topic":
        return F.cross_entropy(out, target)
    pred = out[:, 0]
    return F.huber_loss(pred, target) if training else (pred - target).abs().mean()


def train_step(
    model: torch.nn.Module, opt: torch.optim.Optimizer, target: torch.Tensor, train: torch.Tensor, task: str
) -> None:
    """One full-batch training step: every user's outputs, the loss on the ``train`` users, backward, ``opt``."""
    model.train()
    opt.zero_grad(set_to_none=True)
    out = model()
    task_loss(out[train], target[train], task, training=True).backward()
    opt.step()


def val_outputs(
    model: torch.nn.Module, target: torch.Tensor, val: torch.Tensor, task: str
) -> tuple[float, torch.Tensor]:
    """Every user's outputs ``[N, C]`` in eval mode, without gradients, and the early-stopping loss on ``val``."""
    model.eval()
    with torch.no_grad():
        out = model()
        return float(task_loss(out[val], target[val], task, training=False)), out


def train_network(
    model: torch.nn.Module,
    groups: list[dict[str, Any]] | None,
    target: torch.Tensor,
    idx: dict[str, torch.Tensor],
    task: str,
    lr: float,
    weight_decay: float,
    max_epochs: int,
    patience: int,
) -> tuple[float, torch.Tensor, int]:
    """Train ``model`` full batch with Adam, early-stopped on the val loss; returns (the best val loss, the
    outputs ``[N, C]`` of that epoch, the epochs run)."""
    params = (
        groups if groups is not None else [{"params": [p for p in model.parameters() if p.requires_grad]}]
    )
    opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    best_val, best_out, since_best, epochs = float("inf"), None, 0, 0
    while epochs < max_epochs:
        epochs += 1
        train_step(model, opt, target, idx["train"], task)
        val, out = val_outputs(model, target, idx["val"], task)
        if val < best_val:
            best_val, best_out, since_best = val, out.detach().clone(), 0
        else:
            since_best += 1
            if since_best > patience:
                break
    assert best_out is not None
    return best_val, best_out, epochs


def network_candidates(
    make: NetworkFactory,
    targets: TaskTargets,
    grid: TrainGrid,
    train: Callable[..., tuple[float, torch.Tensor, int]] = train_network,
    device: str = "cpu",
) -> list[Candidate]:
    """One trained network per head seed x learning rate x weight decay of ``grid`` on one task, each trained by
    ``train`` (:func:`train_network`'s arguments and result; another protocol may be passed in, as
    ``benchmarks/finetune_protocols.py`` does) on ``device`` (``auto``, ``cpu`` or ``cuda``)."""
    on = torch.device(resolve_torch_device(device))
    positions = {name: np.flatnonzero(mask) for name, mask in targets.masks.items()}
    idx = {name: torch.from_numpy(rows).to(on) for name, rows in positions.items()}
    target = torch.from_numpy(targets.standardized()).to(on)
    tag = len(grid.lrs) > 1
    candidates = []
    # Full batch: the same large blocks every epoch, kept in the heap for reuse (mmga_common.allocator).
    with retained_heap():
        for seed in grid.seeds:
            for lr in grid.lrs:
                for wd in grid.weight_decays:
                    torch.manual_seed(seed)
                    model, groups = make(targets, seed, lr)
                    model.to(on)  # the optimizer groups hold the same parameter objects, moved in place
                    _, out, epochs = train(
                        model, groups, target, idx, targets.task, lr, wd, grid.max_epochs, grid.patience
                    )
                    out = out.cpu().numpy()
                    val_pred, test_pred = (targets.decode(out[positions[s]]) for s in ("val", "test"))
                    name = f"{grid.name}(lr={lr:g})" if tag else grid.name
                    candidates.append(Candidate(seed, name, wd, val_pred, test_pred, epochs))
    return candidates


def evaluate_network(
    make: NetworkFactory,
    labels: np.ndarray,
    fans: np.ndarray,
    splits: np.ndarray,
    fans_buckets: int,
    grid: TrainGrid,
    dim: int,
    device: str = "cpu",
) -> Evaluation:
    """Train and score the networks of ``make`` on both tasks (val chooses per head seed, test scored once) on
    ``device``; ``dim`` is the width of the network's input, reported as the row's dimension."""

    def per_task(targets: TaskTargets) -> TaskScores:
        return select_and_score(targets, network_candidates(make, targets, grid, device=device), grid.seeds)

    with torch_threads(1):
        scores = evaluate_tasks(labels, fans, splits, fans_buckets, per_task)
    return Evaluation(scores["topic"], scores["fans"], int(dim))
