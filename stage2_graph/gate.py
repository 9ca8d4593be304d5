"""M-Gate (MMGA eq. 4-5): a per-edge, per-head weight from both endpoints' statistics and modalities."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.utils import softmax
from torch_scatter import segment_csr
from torch_sparse import SparseTensor

from stage2_graph.config import GateNormalization


class MGate(nn.Module):
    r"""The multimodal mixture gate.

    For a message from source :math:`v` to target :math:`u` (an entry of ``adj_t``), with
    :math:`g_u = X_u \,\|\, R^I_u \,\|\, R^T_u` the node's gate inputs,

    .. math::
        e_{uv} = W \left[ X_u \,\|\, X_v \,\|\, R^I_u \,\|\, R^T_u \,\|\, R^I_v \,\|\, R^T_v \right] + b
               = W_{\mathrm{t}}\, g_u + W_{\mathrm{s}}\, g_v + b \in \mathbb{R}^H

    A linear map of a concatenation is the sum of per-node projections, so each node is projected once
    (``[N, 2H]``) and each edge only gathers and adds two ``H``-vectors: O(H) work per edge, never
    O(width). Normalisation (a config choice):

    * ``"sigmoid"``: :math:`a_{uv} = \sigma(e_{uv}) / \deg(u)`: an independent gate per edge in
      (0, 1), averaged over the neighbourhood so that a residual stack stays bounded.
    * ``"softmax"``: :math:`a_{uv} = \mathrm{softmax}_{v \in N(u)}(\mathrm{LeakyReLU}(e_{uv}))`
      (the LeakyReLU keeps the target term from cancelling out of the softmax).

    A node whose modality is missing (mask False) feeds a learned placeholder vector instead of its
    zero row.

    Args:
        feature_dim (int): width ``F`` of the statistics X.
        modality_dims (Sequence[int], optional): widths of the modality embeddings, e.g. ``(D_i, D_t)``;
            empty for a gate on X alone. (default: ``()``)
        heads (int, optional): number of gate heads ``H``. (default: ``1``)
        normalization (str, optional): ``"sigmoid"`` or ``"softmax"``. (default: ``"sigmoid"``)
        negative_slope (float, optional): LeakyReLU slope for ``"softmax"``. (default: ``0.2``)

    Shapes:
        - **inputs:** ``features [N, F]``, ``adj_t`` ``SparseTensor [N, N]`` (values ignored), modalities
          ``[N, D_k]`` with optional bool masks ``[N]`` (None = all present)
        - **output:** gate ``[nnz, H]`` in ``adj_t``'s CSR order
    """

    def __init__(
        self,
        feature_dim: int,
        modality_dims: Sequence[int] = (),
        heads: int = 1,
        normalization: GateNormalization = "sigmoid",
        negative_slope: float = 0.2,
    ):
        super().__init__()
        if normalization not in ("sigmoid", "softmax"):
            raise ValueError(f"normalization must be 'sigmoid' or 'softmax', got {normalization!r}")
        self.feature_dim = int(feature_dim)
        self.modality_dims = tuple(int(d) for d in modality_dims)
        self.heads = heads
        self.normalization = normalization
        self.negative_slope = negative_slope
        # One projection for the target part (first H outputs) and the source part (last H outputs).
        self.lin = nn.Linear(self.feature_dim + sum(self.modality_dims), 2 * heads, bias=False)
        self.bias = nn.Parameter(torch.empty(heads))
        self.placeholders = nn.ParameterList([nn.Parameter(torch.empty(d)) for d in self.modality_dims])
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.lin.reset_parameters()
        nn.init.zeros_(self.bias)
        for placeholder in self.placeholders:
            nn.init.normal_(placeholder, std=0.02)

    def node_scores(
        self,
        features: Tensor,
        modalities: Sequence[Tensor] = (),
        modality_masks: Sequence[Tensor | None] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Per-node target scores ``[N, H]`` (bias included) and source scores ``[N, H]``.

        One projection of ``X || R^I || R^T`` (``[N, 2H]``); for a user whose modality is missing, the
        projection of that row is swapped for the projection of the placeholder on the few missing rows
        only, so a missing row's content never matters and no full-width ``[N, D]`` substitution is made.
        """
        if len(modalities) != len(self.modality_dims):
            raise ValueError(f"expected {len(self.modality_dims)} modality embeddings, got {len(modalities)}")
        inputs = torch.cat([features, *modalities], dim=-1) if modalities else features
        scores = F.linear(inputs, self.lin.weight)
        masks = modality_masks if modality_masks is not None else [None] * len(modalities)
        weights = self.lin.weight.split((self.feature_dim, *self.modality_dims), dim=1)[1:]
        for embedding, mask, weight, placeholder in zip(modalities, masks, weights, self.placeholders):
            if mask is None:
                continue
            missing = (~mask).nonzero().view(-1)
            if missing.numel():
                swap = F.linear(placeholder, weight) - F.linear(embedding.index_select(0, missing), weight)
                scores = scores.index_add(0, missing, swap.to(scores.dtype))
        return scores[:, : self.heads] + self.bias, scores[:, self.heads :]

    def forward(
        self,
        features: Tensor,
        adj_t: SparseTensor,
        modalities: Sequence[Tensor] = (),
        modality_masks: Sequence[Tensor | None] | None = None,
    ) -> Tensor:
        target_score, source_score = self.node_scores(features, modalities, modality_masks)
        row, col, _ = adj_t.coo()
        logits = target_score.index_select(0, row) + source_score.index_select(0, col)
        return self.normalize(logits, adj_t)

    def normalize(self, logits: Tensor, adj_t: SparseTensor) -> Tensor:
        """Turn edge logits ``[nnz, H]`` into gate values ``[nnz, H]``."""
        rowptr = adj_t.storage.rowptr()
        if self.normalization == "softmax":
            logits = F.leaky_relu(logits, self.negative_slope)
            return softmax(logits, ptr=rowptr, num_nodes=adj_t.size(0), dim=0)
        inv_degree = adj_t.storage.rowcount().clamp(min=1).to(logits.dtype).reciprocal()
        return torch.sigmoid(logits) * inv_degree.index_select(0, adj_t.storage.row()).unsqueeze(-1)

    def relevance(self, gate: Tensor, adj_t: SparseTensor) -> Tensor:
        """Per-entry edge relevance in [0, 1] (``[nnz, H]``), the quantity exported as edge weight.

        ``sigmoid``: the sigmoid itself, ``a_uv * deg(u)``. ``softmax``: ``a_uv / max_{v'} a_uv'``,
        the weight relative to u's strongest neighbour (1 for a uniform distribution).
        """
        row = adj_t.storage.row()
        if self.normalization == "sigmoid":
            degree = adj_t.storage.rowcount().clamp(min=1).to(gate.dtype)
            return (gate * degree.index_select(0, row).unsqueeze(-1)).clamp(0.0, 1.0)
        row_max = segment_csr(gate, adj_t.storage.rowptr(), reduce="max")
        return gate / row_max.index_select(0, row).clamp(min=torch.finfo(gate.dtype).tiny)


def uniform_gate(adj_t: SparseTensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """Mean aggregation as a gate: ``a_uv = 1 / deg(u)``, shape ``[nnz, 1]``."""
    inv_degree = adj_t.storage.rowcount().clamp(min=1).to(dtype).reciprocal()
    return inv_degree.index_select(0, adj_t.storage.row()).unsqueeze(-1)
