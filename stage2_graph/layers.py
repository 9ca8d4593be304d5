"""The gated propagation layer (MMGA eq. 6) on a torch-sparse adjacency."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch_sparse import SparseTensor

from stage2_graph.config import GateForm, GateNormalization
from stage2_graph.gate import MGate
from stage2_graph.ops import gated_spmm


class MGateConv(nn.Module):
    r"""Gated residual propagation (MMGA eq. 6) with the M-Gate of eq. 4-5.

    .. math::
        h'_u = R\, h_u + \sum_{v \in N(u)} a^{(k)}_{uv} \, \big(W h_v\big)^{(k)} + b

    where head :math:`k` owns the channel slice :math:`(k)` of :math:`W h_v` (``out_channels / heads``
    channels), :math:`a^{(k)}_{uv}` is the M-Gate value of edge :math:`v \to u` (see :class:`MGate`),
    and :math:`R` is the identity when ``in_channels == out_channels`` (the node keeps itself through the
    residual, so ``adj_t`` has no self loops) and a linear map otherwise. The sum is one sparse-dense
    product per head with the gate values on ``adj_t``'s edges; the gate is computed once per call.

    Args:
        in_channels (int): width of ``x``.
        out_channels (int): width of the output; divisible by ``heads``.
        heads (int, optional): gate heads. (default: ``1``)
        gate_feature_dim (int, optional): width ``F`` of the statistics X fed to the gate; the layer then owns
            an :class:`MGate`. ``None``: the gate must be passed to ``forward`` (shared across layers, or the
            uniform baseline). (default: ``None``)
        modality_dims (Sequence[int], optional): widths of the modality embeddings fed to the gate, e.g.
            ``(D_i, D_t)``. (default: ``()``)
        gate_normalization (str, optional): ``"sigmoid"`` or ``"softmax"``. (default: ``"sigmoid"``)
        negative_slope (float, optional): LeakyReLU slope of the softmax and gatv2 gates. (default: ``0.2``)
        gate_form (str, optional): ``"additive"`` (eq. 5, static), ``"cosine"`` or ``"gatv2"`` (pair-aware);
            see :class:`MGate`. (default: ``"cosine"``)
        gate_rank (int, optional): rank of the cosine projections / gatv2 hidden width. (default: ``8``)
        bias (bool, optional): add a learnable bias. (default: ``True``)

    Shapes:
        - **input:** node states ``x [N, in_channels]``, ``adj_t`` ``SparseTensor [N, N]``
          (row = target), gate inputs ``gate_features [N, F]`` and ``modalities [N, D_k]`` with bool
          ``modality_masks [N]``, or a precomputed
          ``gate [nnz, heads]`` (or ``[nnz, 1]``, shared by all heads) in ``adj_t``'s CSR order
        - **output:** ``[N, out_channels]`` (and the gate ``[nnz, H]`` when ``return_gate=True``)
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        heads: int = 1,
        gate_feature_dim: int | None = None,
        modality_dims: Sequence[int] = (),
        gate_normalization: GateNormalization = "sigmoid",
        negative_slope: float = 0.2,
        gate_form: GateForm = "cosine",
        gate_rank: int = 8,
        bias: bool = True,
    ):
        super().__init__()
        if out_channels % heads != 0:
            raise ValueError(f"out_channels={out_channels} must be divisible by heads={heads}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.heads = heads
        self.lin = nn.Linear(in_channels, out_channels, bias=False)
        self.lin_root = (
            nn.Linear(in_channels, out_channels, bias=False) if in_channels != out_channels else None
        )
        self.gate = (
            MGate(
                gate_feature_dim,
                modality_dims,
                heads,
                gate_normalization,
                negative_slope,
                gate_form,
                gate_rank,
            )
            if gate_feature_dim is not None
            else None
        )
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.lin.reset_parameters()
        if self.lin_root is not None:
            self.lin_root.reset_parameters()
        if self.gate is not None:
            self.gate.reset_parameters()
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(
        self,
        x: Tensor,
        adj_t: SparseTensor,
        gate_features: Tensor | None = None,
        modalities: Sequence[Tensor] = (),
        modality_masks: Sequence[Tensor | None] | None = None,
        gate: Tensor | None = None,
        return_gate: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        # Per-node work first: projections (and the gate's per-node scores inside MGate).
        messages = self.lin(x)
        out = x if self.lin_root is None else self.lin_root(x)
        if gate is None:
            if self.gate is None or gate_features is None:
                raise ValueError(
                    "MGateConv needs gate_features (with gate_feature_dim set) or a precomputed gate"
                )
            gate = self.gate(gate_features, adj_t, modalities, modality_masks)
        if gate.dim() != 2 or gate.shape[1] not in (1, self.heads):
            raise ValueError(f"gate must be [nnz, 1] or [nnz, {self.heads}], got {tuple(gate.shape)}")
        # Per-edge work last: one gated SpMM per head on its channel slice.
        out = out + self.propagate(adj_t, messages, gate)
        if self.bias is not None:
            out = out + self.bias
        return (out, gate) if return_gate else out

    def propagate(self, adj_t: SparseTensor, messages: Tensor, gate: Tensor) -> Tensor:
        """``sum_v a_uv^(k) messages_v^(k)`` for every node: ``[N, out_channels]``."""
        if gate.shape[1] == 1:
            return gated_spmm(adj_t, gate.view(-1), messages)
        num_nodes, channels = messages.shape
        per_head = messages.view(num_nodes, self.heads, channels // self.heads).transpose(0, 1)
        outs = [gated_spmm(adj_t, gate[:, k], per_head[k].contiguous()) for k in range(self.heads)]
        return torch.stack(outs, dim=1).view(num_nodes, channels)

    def __repr__(self) -> str:
        gate = "none" if self.gate is None else f"{self.gate.form}, {self.gate.normalization}"
        return (
            f"{type(self).__name__}({self.in_channels}, {self.out_channels}, heads={self.heads}, gate={gate})"
        )
