"""The gated propagation layer (MMGA eq. 6) on a torch-sparse adjacency."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_sparse import SparseTensor

from stage2_graph.ops import gated_spmm


class MGateConv(nn.Module):
    r"""Gated residual propagation (MMGA eq. 6) with a precomputed gate (the M-Gate of eq. 4-5).

    .. math::
        h'_u = R\, h_u + \sum_{v \in N(u)} a^{(k)}_{uv} \, \big(W h_v\big)^{(k)} + b

    where head :math:`k` owns the channel slice :math:`(k)` of :math:`W h_v` (``out_channels / heads``
    channels), :math:`a^{(k)}_{uv}` is the gate value of edge :math:`v \to u`, and :math:`R` is the
    identity when ``in_channels == out_channels`` (the node keeps itself through the residual, so ``adj_t``
    has no self loops) and a linear map otherwise. The sum is one sparse-dense product per head with the
    gate values on ``adj_t``'s edges.

    The layer has no gate parameters: the gate is computed outside it and passed to ``forward``, e.g. by an
    :class:`MGate` (``MGate(...)(features, adj_t, modalities, modality_masks)``, once per pass and shared by
    every layer of a stack, as :class:`GraphEncoder` does) or :func:`uniform_gate` (mean aggregation).

    Args:
        in_channels (int): width of ``x``.
        out_channels (int): width of the output; divisible by ``heads``.
        heads (int, optional): gate heads. (default: ``1``)
        bias (bool, optional): add a learnable bias. (default: ``True``)

    Shapes:
        - **input:** node states ``x [N, in_channels]``, ``adj_t`` ``SparseTensor [N, N]``
          (row = target), ``gate [nnz, heads]`` (or ``[nnz, 1]``, shared by all heads) in ``adj_t``'s
          CSR order
        - **output:** ``[N, out_channels]`` (and the gate as passed when ``return_gate=True``)
    """

    def __init__(self, in_channels: int, out_channels: int, heads: int = 1, bias: bool = True):
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
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.lin.reset_parameters()
        if self.lin_root is not None:
            self.lin_root.reset_parameters()
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(
        self, x: Tensor, adj_t: SparseTensor, gate: Tensor, return_gate: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        if gate.dim() != 2 or gate.shape[0] != adj_t.nnz() or gate.shape[1] not in (1, self.heads):
            raise ValueError(
                f"gate must be [nnz, 1] or [nnz, {self.heads}] with nnz={adj_t.nnz()} (adj_t's entries), "
                f"got {tuple(gate.shape)}"
            )
        # Per-node work first (projections), per-edge work last: one gated SpMM per head on its slice.
        messages = self.lin(x)
        out = x if self.lin_root is None else self.lin_root(x)
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
        return f"{type(self).__name__}({self.in_channels}, {self.out_channels}, heads={self.heads})"
