"""The stage-2 graph encoder: standardized X (+ stage 1's modalities in the gate) -> R^G."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch_sparse import SparseTensor

from stage2_graph.config import ActivationKind, GateKind, GateNormalization, NormKind
from stage2_graph.gate import MGate, uniform_gate
from stage2_graph.layers import MGateConv

_ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "elu": nn.ELU}


def _norm(kind: NormKind, width: int) -> nn.Module:
    if kind == "layer":
        return nn.LayerNorm(width)
    if kind == "batch":
        return nn.BatchNorm1d(width)
    return nn.Identity()


def node_log_degree(adj_t: SparseTensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """``log(1 + deg(u))`` ``[N]`` of the adjacency's rows (its stored entries: the neighbours of ``u``)."""
    return torch.log1p(adj_t.storage.rowcount().to(dtype))


class GraphEncoder(nn.Module):
    r"""A stack of :class:`MGateConv` layers sharing one gate per forward pass.

    The gate :math:`a_{uv}` of eq. 4-5 depends on the inputs (X and the modality embeddings), not on the
    layer, so it is computed once per call and every layer propagates with it. With ``gate="uniform"``
    the gate is ``1/deg(u)`` (mean aggregation): the no-alignment baseline.

    Args:
        num_features (int): width ``F`` of X.
        modality_dims (Sequence[int], optional): widths of the modality embeddings fed to the gate, e.g.
            ``(D_i, D_t)``; empty for the X-only variant. (default: ``()``)
        hidden_dim (int, optional): width of node states and output. (default: ``64``)
        num_layers (int, optional): propagation layers. (default: ``2``)
        heads (int, optional): gate heads. (default: ``1``)
        gate (str, optional): ``"mgate"`` or ``"uniform"``. (default: ``"mgate"``)
        gate_normalization (str, optional): ``"sigmoid"`` or ``"softmax"``. (default: ``"sigmoid"``)
        negative_slope (float, optional): LeakyReLU slope of the softmax gate. (default: ``0.2``)
        dropout (float, optional): dropout before each layer. (default: ``0.1``)
        norm (str, optional): ``"none"``, ``"layer"`` or ``"batch"`` after hidden layers. (default: ``"layer"``)
        activation (str, optional): ``"relu"``, ``"gelu"`` or ``"elu"``. (default: ``"gelu"``)
        input_proj (bool, optional): project X to ``hidden_dim`` before the first layer. (default: ``True``)
        degree_input (bool, optional): append ``log(1 + deg(u))`` in the propagated adjacency to the node
            input (not to the gate). Mean-like aggregation (sigmoid/deg, softmax, uniform) cannot count
            neighbours, so without it R^G does not know how connected a user is. Computed from the ``adj_t``
            of the call, so edges held out of message passing do not count. (default: ``True``)

    Shapes:
        - **input:** ``x [N, F]``, ``adj_t`` ``SparseTensor [N, N]``, modalities ``[N, D_k]`` with bool
          masks ``[N]``, optional ``node_mask`` bool ``[N]`` (rows replaced by the learned mask token)
        - **output:** ``[N, hidden_dim]`` (and the gate ``[nnz, H]`` when ``return_gate=True``)
    """

    def __init__(
        self,
        num_features: int,
        modality_dims: Sequence[int] = (),
        hidden_dim: int = 64,
        num_layers: int = 2,
        heads: int = 1,
        gate: GateKind = "mgate",
        gate_normalization: GateNormalization = "sigmoid",
        negative_slope: float = 0.2,
        dropout: float = 0.1,
        norm: NormKind = "layer",
        activation: ActivationKind = "gelu",
        input_proj: bool = True,
        degree_input: bool = True,
    ):
        super().__init__()
        if gate not in ("mgate", "uniform"):
            raise ValueError(f"gate must be 'mgate' or 'uniform', got {gate!r}")
        self.num_features = num_features
        self.modality_dims = tuple(int(d) for d in modality_dims)
        self.hidden_dim = hidden_dim
        self.degree_input = degree_input
        in_dim = num_features + int(degree_input)
        self.mask_token = nn.Parameter(torch.empty(num_features))
        self.input_proj = nn.Linear(in_dim, hidden_dim) if input_proj else None
        self.gate = (
            MGate(num_features, self.modality_dims, heads, gate_normalization, negative_slope)
            if gate == "mgate"
            else None
        )
        widths = [hidden_dim if input_proj else in_dim] + [hidden_dim] * num_layers
        self.convs = nn.ModuleList(
            [MGateConv(widths[i], widths[i + 1], heads=heads) for i in range(num_layers)]
        )
        self.norms = nn.ModuleList([_norm(norm, hidden_dim) for _ in range(num_layers - 1)])
        self.activation = _ACTIVATIONS[activation]()
        self.dropout = nn.Dropout(dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.mask_token, std=0.02)
        if self.input_proj is not None:
            self.input_proj.reset_parameters()
        if self.gate is not None:
            self.gate.reset_parameters()
        for conv in self.convs:
            conv.reset_parameters()
        for norm in self.norms:
            if hasattr(norm, "reset_parameters"):
                norm.reset_parameters()

    def compute_gate(
        self,
        x: Tensor,
        adj_t: SparseTensor,
        modalities: Sequence[Tensor] = (),
        modality_masks: Sequence[Tensor | None] | None = None,
    ) -> Tensor:
        """The gate ``[nnz, H]`` (``[nnz, 1]`` for uniform) for the given (already masked) X."""
        if self.gate is None:
            return uniform_gate(adj_t, x.dtype)
        return self.gate(x, adj_t, modalities, modality_masks)

    def forward(
        self,
        x: Tensor,
        adj_t: SparseTensor,
        modalities: Sequence[Tensor] = (),
        modality_masks: Sequence[Tensor | None] | None = None,
        node_mask: Tensor | None = None,
        return_gate: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        if node_mask is not None:
            # Masked nodes' statistics are gone everywhere, including from the gate.
            x = torch.where(node_mask.view(-1, 1), self.mask_token.to(x.dtype), x)
        gate = self.compute_gate(x, adj_t, modalities, modality_masks)
        if self.degree_input:
            x = torch.cat([x, node_log_degree(adj_t, x.dtype).view(-1, 1)], dim=-1)
        hidden = self.input_proj(x) if self.input_proj is not None else x
        last = len(self.convs) - 1
        for index, conv in enumerate(self.convs):
            hidden = conv(self.dropout(hidden), adj_t, gate=gate)
            if index < last:
                hidden = self.activation(self.norms[index](hidden))
        return (hidden, gate) if return_gate else hidden
