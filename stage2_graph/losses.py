"""Stage 2's self-supervised objectives: small modules that turn node embeddings into named losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stage2_graph.config import FeatureLossKind


class FeatureReconstructionLoss(nn.Module):
    """Node-feature modelling: predict masked nodes' standardized statistics with a linear head.

    Args:
        hidden_dim (int): width of the node embeddings.
        num_features (int): width ``F`` of X.
        loss (str, optional): ``"mse"`` or ``"smooth_l1"``. (default: ``"mse"``)

    Shapes:
        - **input:** ``node_emb [N, D]``, ``target [N, F]`` (unmasked standardized X),
          ``node_mask`` bool ``[N]`` (True = masked; the loss only covers these rows)
        - **output:** ``{"feature_loss": []}``
    """

    def __init__(self, hidden_dim: int, num_features: int, loss: FeatureLossKind = "mse"):
        super().__init__()
        if loss not in ("mse", "smooth_l1"):
            raise ValueError(f"loss must be 'mse' or 'smooth_l1', got {loss!r}")
        self.head = nn.Linear(hidden_dim, num_features)
        self.loss = loss

    def forward(self, node_emb: Tensor, target: Tensor, node_mask: Tensor) -> dict[str, Tensor]:
        if target.shape[1] == 0:  # a corpus without statistics columns has nothing to reconstruct
            return {"feature_loss": node_emb.sum() * 0.0}
        index = node_mask.nonzero().view(-1)
        prediction = self.head(node_emb.index_select(0, index))
        expected = target.index_select(0, index).to(prediction.dtype)
        if self.loss == "mse":
            value = F.mse_loss(prediction, expected)
        else:
            value = F.smooth_l1_loss(prediction, expected)
        return {"feature_loss": value}


class StructureReconstructionLoss(nn.Module):
    """Graph-structure modelling: tell held-out edges from sampled non-edges (binary cross-entropy).

    The score of a pair is the scaled dot product of linearly projected embeddings,
    ``<P z_u, P z_v> / sqrt(D) + c``.

    Args:
        hidden_dim (int): width of the node embeddings.

    Shapes:
        - **input:** ``node_emb [N, D]``, ``pos_pairs [2, P]`` (held-out edges), ``neg_pairs [2, Q]``
        - **output:** ``{"structure_loss": [], "structure_acc": []}`` (accuracy at logit 0, not a loss)
    """

    def __init__(self, hidden_dim: int):
        super().__init__()
        self.proj = nn.Linear(hidden_dim, hidden_dim)
        self.offset = nn.Parameter(torch.zeros(()))
        self.scale = hidden_dim**-0.5

    def score(self, node_emb: Tensor, pairs: Tensor) -> Tensor:
        """Logits ``[P]`` of the pairs ``[2, P]``."""
        projected = self.proj(node_emb)
        first, second = projected.index_select(0, pairs[0]), projected.index_select(0, pairs[1])
        return (first * second).sum(-1) * self.scale + self.offset

    def forward(self, node_emb: Tensor, pos_pairs: Tensor, neg_pairs: Tensor) -> dict[str, Tensor]:
        logits = self.score(node_emb, torch.cat([pos_pairs, neg_pairs], dim=1))
        labels = torch.cat([logits.new_ones(pos_pairs.shape[1]), logits.new_zeros(neg_pairs.shape[1])])
        loss = F.binary_cross_entropy_with_logits(logits, labels)
        accuracy = ((logits > 0) == labels.bool()).float().mean()
        return {"structure_loss": loss, "structure_acc": accuracy.detach()}


class GateLinkLoss(nn.Module):
    """The gate's own link prediction: its pair scores must tell held-out edges from non-edges.

    Feature masking and edge hold-out reward the gate only through R^G, a weak, indirect signal; this
    term scores the gate's ``e_uv`` itself (binary cross-entropy per head, both directions of each pair),
    so on a homophilous graph the gate learns which content makes two users likely to be linked. It owns
    no parameters: the scores come from the M-Gate.

    Shapes:
        - **input:** ``pos_logits [P, H]`` (held-out edges), ``neg_logits [Q, H]`` (sampled non-edges)
        - **output:** ``{"gate_link_loss": [], "gate_link_acc": []}`` (accuracy at logit 0, not a loss)
    """

    def forward(self, pos_logits: Tensor, neg_logits: Tensor) -> dict[str, Tensor]:
        logits = torch.cat([pos_logits, neg_logits])
        labels = torch.cat([pos_logits.new_ones(pos_logits.shape), neg_logits.new_zeros(neg_logits.shape)])
        loss = F.binary_cross_entropy_with_logits(logits, labels)
        accuracy = ((logits > 0) == labels.bool()).float().mean()
        return {"gate_link_loss": loss, "gate_link_acc": accuracy.detach()}
