"""M-Gate (MMGA eq. 4-5): a per-edge, per-head weight from both endpoints' statistics and modalities."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.utils import softmax
from torch_scatter import segment_csr
from torch_sparse import SparseTensor

from stage2_graph.config import GateForm, GateNormalization
from stage2_graph.ops import pair_scores


class GateTerms(NamedTuple):
    """Per-node parts of the gate, computed once per call; every edge score is assembled from them.

    ``additive``: ``target [N, H]`` (bias included) and ``source [N, H]``, ``e_uv = target_u + source_v``.
    ``cosine``: the same two, plus ``unit [N, H, K]`` (every block's unit projection side by side, ``K = B r``;
    zero rows where a user lacks the block) and ``scale [H, K]`` (each block's learned weight, repeated over
    its ``r`` columns): ``e_uv = target_u + source_v + sum_k scale_k unit_uk unit_vk``; ``unit`` and ``scale``
    are None for a gate without pair blocks. ``gatv2``: ``target, source [N, H, r]``.
    """

    target: Tensor
    source: Tensor
    unit: Tensor | None = None
    scale: Tensor | None = None


class MGate(nn.Module):
    r"""The multimodal mixture gate.

    For a message from source :math:`v` to target :math:`u` (an entry of ``adj_t``), with
    :math:`g_u = X_u \,\|\, R^I_u \,\|\, R^T_u` the node's gate inputs and :math:`R^m` the blocks
    :math:`m \in \{X, R^I, R^T\}`, the score :math:`e_{uv} \in \mathbb{R}^H` has one of three forms:

    * ``"additive"`` (eq. 5 literally, static attention):

      .. math::
          e_{uv} = W [X_u \| X_v \| R^I_u \| R^T_u \| R^I_v \| R^T_v] + b = W_t g_u + W_s g_v + b

      Every target ranks its neighbours by :math:`W_s g_v` alone, the same ranking for all targets.
    * ``"cosine"`` (pair-aware, default):

      .. math::
          e^{(k)}_{uv} = (W_t g_u + W_s g_v + b)^{(k)}
              + \sum_m \beta^{(k)}_m\, \mathbb{1}[u, v \text{ have } m]\,
                \cos\big(P^{(k)}_m R^m_u, P^{(k)}_m R^m_v\big)

      with learned projections :math:`P^{(k)}_m` of rank ``r`` per head; a block missing at either end
      contributes 0 (no evidence either way).
    * ``"gatv2"`` (pair-aware): :math:`e^{(k)}_{uv} = a_k^\top \mathrm{LeakyReLU}\big((W_t g_u + W_s
      g_v)^{(k)}\big) + b_k` with a hidden width ``r`` per head (Brody et al., 2022).

    Every per-node projection (``[N, 2H]``, ``[N, H, r]``) is made once; each edge only gathers and adds
    (or dots) them: O(H r) work per edge, never O(input width), no per-edge concatenation. Normalisation:

    * ``"sigmoid"``: :math:`a_{uv} = \sigma(e_{uv}) / \deg(u)`: an independent gate per edge in
      (0, 1), averaged over the neighbourhood so that a residual stack stays bounded.
    * ``"softmax"``: :math:`a_{uv} = \mathrm{softmax}_{v \in N(u)}(\mathrm{LeakyReLU}(e_{uv}))`
      (the LeakyReLU keeps the target term from cancelling out of the softmax).

    A node whose modality is missing (mask False) feeds a learned placeholder vector instead of its
    zero row into :math:`W_t, W_s`.

    Args:
        feature_dim (int): width ``F`` of the statistics X.
        modality_dims (Sequence[int], optional): widths of the modality embeddings, e.g. ``(D_i, D_t)``;
            empty for a gate on X alone. (default: ``()``)
        heads (int, optional): number of gate heads ``H``. (default: ``1``)
        normalization (str, optional): ``"sigmoid"`` or ``"softmax"``. (default: ``"sigmoid"``)
        negative_slope (float, optional): LeakyReLU slope for ``"softmax"`` and ``"gatv2"``. (default: ``0.2``)
        form (str, optional): ``"additive"``, ``"cosine"`` or ``"gatv2"``. (default: ``"cosine"``)
        rank (int, optional): ``r``, the width of each block's projection (cosine) or the hidden width
            (gatv2), per head. (default: ``8``)

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
        form: GateForm = "cosine",
        rank: int = 8,
    ):
        super().__init__()
        if normalization not in ("sigmoid", "softmax"):
            raise ValueError(f"normalization must be 'sigmoid' or 'softmax', got {normalization!r}")
        if form not in ("additive", "cosine", "gatv2"):
            raise ValueError(f"form must be 'additive', 'cosine' or 'gatv2', got {form!r}")
        self.feature_dim = int(feature_dim)
        self.modality_dims = tuple(int(d) for d in modality_dims)
        self.heads = heads
        self.normalization = normalization
        self.negative_slope = negative_slope
        self.form = form
        self.rank = rank
        # One projection for the target part (first half of the outputs) and the source part (second).
        hidden = heads * rank if form == "gatv2" else heads
        self.lin = nn.Linear(self.feature_dim + sum(self.modality_dims), 2 * hidden, bias=False)
        self.bias = nn.Parameter(torch.empty(heads))
        self.placeholders = nn.ParameterList([nn.Parameter(torch.empty(d)) for d in self.modality_dims])
        block_dims = (self.feature_dim, *self.modality_dims) if form == "cosine" else ()
        self.pair_projections = nn.ModuleList(
            [nn.Linear(d, heads * rank, bias=False) for d in block_dims if d > 0]
        )
        self.pair_blocks = tuple(index for index, d in enumerate(block_dims) if d > 0)
        self.pair_scale = nn.Parameter(torch.empty(len(self.pair_blocks), heads)) if block_dims else None
        self.att = nn.Parameter(torch.empty(heads, rank)) if form == "gatv2" else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.lin.reset_parameters()
        nn.init.zeros_(self.bias)
        for placeholder in self.placeholders:
            nn.init.normal_(placeholder, std=0.02)
        for projection in self.pair_projections:
            projection.reset_parameters()
        if self.pair_scale is not None:
            nn.init.ones_(self.pair_scale)
        if self.att is not None:
            nn.init.normal_(self.att, std=self.rank**-0.5)

    def node_terms(
        self,
        features: Tensor,
        modalities: Sequence[Tensor] = (),
        modality_masks: Sequence[Tensor | None] | None = None,
    ) -> GateTerms:
        """The per-node parts of the gate (see :class:`GateTerms`).

        One projection of ``X || R^I || R^T``; for a user whose modality is missing, the projection of
        that row is swapped for the projection of the placeholder on the few missing rows only, so a
        missing row's content never matters and no full-width ``[N, D]`` substitution is made.
        """
        if len(modalities) != len(self.modality_dims):
            raise ValueError(f"expected {len(self.modality_dims)} modality embeddings, got {len(modalities)}")
        if self.form == "cosine" and self.pair_projections:
            scores, pair = self._project_pairs((features, *modalities))
        else:
            scores, pair = self._project((features, *modalities), self.lin.weight), None
        masks = list(modality_masks) if modality_masks is not None else [None] * len(modalities)
        weights = self.lin.weight.split((self.feature_dim, *self.modality_dims), dim=1)[1:]
        for embedding, mask, weight, placeholder in zip(modalities, masks, weights, self.placeholders):
            if mask is None:
                continue
            missing = (~mask).nonzero().view(-1)
            if missing.numel():
                swap = F.linear(placeholder, weight) - F.linear(embedding.index_select(0, missing), weight)
                scores = scores.index_add(0, missing, swap.to(scores.dtype))
        target, source = scores.chunk(2, dim=-1)
        if self.form == "gatv2":
            shape = (features.shape[0], self.heads, self.rank)
            return GateTerms(target.reshape(shape), source.reshape(shape))
        target = target + self.bias
        if self.form == "additive":
            return GateTerms(target, source)
        if pair is None:
            return GateTerms(target, source)
        # cosine: the unit projections p_m of every block at once, [N, blocks, H, r], zeroed for a user without
        # the block (so a missing end contributes exactly 0). The normalisation (F.normalize's x / max(|x|,
        # 1e-12)) and the mask are per-(node, block, head) factors, multiplied together first.
        num_nodes, num_blocks = features.shape[0], len(self.pair_blocks)
        pair = pair.view(num_nodes, num_blocks, self.heads, self.rank)
        inverse_norm = pair.norm(dim=-1, keepdim=True).clamp_min(1e-12).reciprocal()
        block_masks = (None, *masks)
        present = [block_masks[index] for index in self.pair_blocks]
        if any(mask is not None for mask in present):
            ones_n = torch.ones(num_nodes, dtype=torch.bool, device=pair.device)
            has = torch.stack([ones_n if mask is None else mask for mask in present], dim=1)
            inverse_norm = inverse_norm * has.to(pair.dtype).view(num_nodes, num_blocks, 1, 1)
        unit = pair * inverse_norm
        if self.heads == 1:  # [N, B, 1, r] -> [N, 1, B r] is a view
            unit = unit.view(num_nodes, 1, -1)
        else:
            unit = unit.transpose(1, 2).reshape(num_nodes, self.heads, -1)
        scale = self.pair_scale.t().unsqueeze(-1).expand(self.heads, num_blocks, self.rank)
        return GateTerms(target, source, unit, scale.reshape(self.heads, -1))

    def _project(self, blocks: Sequence[Tensor], weight: Tensor) -> Tensor:
        """``[X || R^I || R^T] @ weight^T`` without concatenating the inputs: each block's product with its own
        columns of ``weight``, accumulated (``addmm``). At 60,000 users the concatenation alone cost twice the
        product (docs/performance.md)."""
        columns = weight.split((self.feature_dim, *self.modality_dims), dim=1)
        out = None
        for block, block_weight in zip(blocks, columns):
            if block_weight.shape[1] == 0:
                continue
            out = F.linear(block, block_weight) if out is None else torch.addmm(out, block, block_weight.t())
        return out if out is not None else blocks[0].new_zeros(blocks[0].shape[0], weight.shape[0])

    def _project_pairs(self, blocks: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """The cosine form's ``[X || R^I || R^T] @ W^T`` (``[N, 2H]``) and every block's ``P_m R^m`` side by side
        (``[N, B H r]``), one product per block: each block is read once, with ``W``'s columns of the block and
        ``P_m`` stacked as its weight. (One product of all blocks with the ``P_m`` placed block-diagonally under
        ``W`` computed and differentiated the zeros too: 26 outputs per block instead of 10 at rank 8.)"""
        hidden = self.lin.weight.shape[0]
        columns = self.lin.weight.split((self.feature_dim, *self.modality_dims), dim=1)
        projections = iter(self.pair_projections)
        scores, pairs = None, []
        for block, block_weight in zip(blocks, columns):
            if block_weight.shape[1] == 0:
                continue
            projection = next(projections).weight
            block_scores, block_pair = F.linear(block, torch.cat([block_weight, projection])).split(
                (hidden, projection.shape[0]), dim=-1
            )
            scores = block_scores if scores is None else scores + block_scores
            pairs.append(block_pair)
        return scores, torch.cat(pairs, dim=-1)

    def edge_logits(self, terms: GateTerms, target_index: Tensor, source_index: Tensor) -> Tensor:
        """Scores ``e_uv`` ``[P, H]`` of the messages ``source_index[p] -> target_index[p]`` (gathers)."""
        target = terms.target.index_select(0, target_index)
        source = terms.source.index_select(0, source_index)
        if self.form == "additive":
            return target + source
        if self.form == "cosine":
            if terms.unit is None:
                return target + source
            # The scale on the per-node side: the per-pair product is the only [P, H, K] temporary besides the
            # two gathers (a pair count of 800,000 is 77 MB each at rank 8).
            scaled = (terms.unit * terms.scale).index_select(0, target_index)
            return target + source + (scaled * terms.unit.index_select(0, source_index)).sum(-1)
        hidden = F.leaky_relu(target + source, self.negative_slope)
        return (hidden * self.att).sum(-1) + self.bias

    def adjacency_logits(self, terms: GateTerms, adj_t: SparseTensor) -> Tensor:
        """Scores ``[nnz, H]`` of every entry of ``adj_t`` (CSR order); the cosine form's are one SDDMM per head
        (:func:`pair_scores`), no per-edge ``[nnz, K]`` tensor."""
        if self.form == "cosine" and terms.unit is not None:
            heads = [
                pair_scores(adj_t, terms.target[:, k], terms.source[:, k], terms.unit[:, k], terms.scale[k])
                for k in range(self.heads)
            ]
            return heads[0].unsqueeze(1) if self.heads == 1 else torch.stack(heads, dim=1)
        row, col, _ = adj_t.coo()
        return self.edge_logits(terms, row, col)

    def pair_logits(
        self,
        features: Tensor,
        pairs: Tensor,
        modalities: Sequence[Tensor] = (),
        modality_masks: Sequence[Tensor | None] | None = None,
    ) -> Tensor:
        """Scores ``[P, H]`` of arbitrary pairs ``[2, P]`` (row 0 = target u, row 1 = source v)."""
        terms = self.node_terms(features, modalities, modality_masks)
        return self.edge_logits(terms, pairs[0], pairs[1])

    def forward(
        self,
        features: Tensor,
        adj_t: SparseTensor,
        modalities: Sequence[Tensor] = (),
        modality_masks: Sequence[Tensor | None] | None = None,
    ) -> Tensor:
        terms = self.node_terms(features, modalities, modality_masks)
        return self.normalize(self.adjacency_logits(terms, adj_t), adj_t)

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
