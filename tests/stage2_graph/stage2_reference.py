"""Straightforward references for the M-Gate layer: dense matrices with explicit per-edge concatenation,
and the same rule written on PyG's ``MessagePassing``. Both read the parameters of an ``MGateConv`` and of
the ``MGate`` whose gate it propagates with."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.nn import MessagePassing
from torch_geometric.utils import degree
from torch_geometric.utils import softmax as pyg_softmax

from stage2_graph import MGate, MGateConv


def random_graph(num_nodes: int, num_edges: int, num_isolated: int, seed: int) -> Tensor:
    """Undirected edges ``[E, 2]`` (``u < v``, unique) that avoid the last ``num_isolated`` nodes."""
    generator = torch.Generator().manual_seed(seed)
    active = num_nodes - num_isolated
    pairs: set[tuple[int, int]] = set()
    while len(pairs) < num_edges:
        u, v = torch.randint(0, active, (2,), generator=generator).tolist()
        if u != v:
            pairs.add((min(u, v), max(u, v)))
    return torch.tensor(sorted(pairs), dtype=torch.long)


def with_placeholders(gate: MGate, inputs: list[Tensor], masks: list[Tensor]) -> list[Tensor]:
    """``[X, R^I, R^T]`` with missing-modality rows replaced by the gate's placeholders (a 0/1 blend)."""
    out = [inputs[0]]
    for tensor, mask, placeholder in zip(inputs[1:], masks, gate.placeholders):
        keep = mask.to(tensor.dtype).unsqueeze(-1)
        out.append(keep * tensor + (1 - keep) * placeholder.unsqueeze(0))
    return out


def paper_order_weight(gate: MGate, dims: list[int]) -> Tensor:
    """``W [H', 2 sum(dims)]`` acting on ``X_u || X_v || R^I_u || R^T_u || R^I_v || R^T_v`` (eq. 4);
    ``H' = H`` (additive, cosine) or ``H r`` (gatv2)."""
    half = gate.lin.weight.shape[0] // 2
    target = gate.lin.weight[:half].split(dims, dim=1)
    source = gate.lin.weight[half:].split(dims, dim=1)
    return torch.cat([target[0], source[0], *target[1:], *source[1:]], dim=1)


def unit(vectors: Tensor, eps: float = 1e-12) -> Tensor:
    """Rows scaled to unit length (``eps`` guards a zero row, as ``F.normalize`` does)."""
    return vectors / vectors.norm(dim=-1, keepdim=True).clamp(min=eps)


def edge_scores(
    gate: MGate,
    weight: Tensor,
    concatenated: Tensor,
    blocks_u: list[Tensor],
    blocks_v: list[Tensor],
    both: list[Tensor | None],
) -> Tensor:
    """``e_uv [P, H]`` from the explicit per-edge concatenation and each block at both endpoints
    (every projection is applied per edge, the naive way)."""
    heads = gate.heads
    if gate.form == "gatv2":
        hidden = (concatenated @ weight.t()).view(-1, heads, gate.rank)
        return (F.leaky_relu(hidden, gate.negative_slope) * gate.att).sum(-1) + gate.bias
    logits = concatenated @ weight.t() + gate.bias
    if gate.form == "cosine":
        for slot, (index, projection) in enumerate(zip(gate.pair_blocks, gate.pair_projections)):
            pu = unit((blocks_u[index] @ projection.weight.t()).view(-1, heads, gate.rank))
            pv = unit((blocks_v[index] @ projection.weight.t()).view(-1, heads, gate.rank))
            cosine = (pu * pv).sum(-1)
            if both[index] is not None:
                cosine = cosine * both[index].unsqueeze(-1).to(cosine.dtype)
            logits = logits + gate.pair_scale[slot] * cosine
    return logits


def dense_reference(
    conv: MGateConv, gate: MGate, x: Tensor, edges: Tensor, inputs: list[Tensor], masks: list[Tensor]
) -> tuple[Tensor, Tensor]:
    """Output ``[N, C]`` of ``conv`` propagating with ``gate``'s values, and those values ``[nnz, H]``
    (entries in (target, source) row-major order).

    ``inputs`` is ``[X, R^I, R^T]`` (the gate's inputs), ``masks`` the modality masks
    ``[image_mask, text_mask]``.
    """
    num_nodes = x.shape[0]
    heads, normalization = conv.heads, gate.normalization
    adjacency = torch.zeros(num_nodes, num_nodes, dtype=torch.bool)
    adjacency[edges[:, 0], edges[:, 1]] = True
    adjacency[edges[:, 1], edges[:, 0]] = True
    target, source = adjacency.nonzero().t()  # row-major: sorted by target u, then source v
    gate_x, *modalities = with_placeholders(gate, inputs, masks)
    concatenated = torch.cat(
        [gate_x[target], gate_x[source]] + [m[target] for m in modalities] + [m[source] for m in modalities],
        dim=1,
    )
    weight = paper_order_weight(gate, [t.shape[1] for t in inputs])
    both = [None] + [mask[target] & mask[source] for mask in masks]
    logits = edge_scores(
        gate, weight, concatenated, [t[target] for t in inputs], [t[source] for t in inputs], both
    )
    dense_gate = torch.zeros(heads, num_nodes, num_nodes, dtype=x.dtype)
    if normalization == "sigmoid":
        deg = adjacency.sum(1).clamp(min=1).to(x.dtype)
        values = torch.sigmoid(logits) / deg[target].unsqueeze(-1)
        dense_gate = dense_gate.index_put(
            (torch.arange(heads).repeat_interleave(len(target)), target.repeat(heads), source.repeat(heads)),
            values.t().reshape(-1),
        )
    else:
        scores = torch.full((heads, num_nodes, num_nodes), float("-inf"), dtype=x.dtype)
        scores = scores.index_put(
            (torch.arange(heads).repeat_interleave(len(target)), target.repeat(heads), source.repeat(heads)),
            F.leaky_relu(logits, gate.negative_slope).t().reshape(-1),
        )
        dense_gate = torch.nan_to_num(torch.softmax(scores, dim=-1), nan=0.0)
    messages = x @ conv.lin.weight.t()
    channels = conv.out_channels // heads
    aggregated = torch.cat(
        [dense_gate[k] @ messages[:, k * channels : (k + 1) * channels] for k in range(heads)], dim=1
    )
    root = x if conv.lin_root is None else x @ conv.lin_root.weight.t()
    out = root + aggregated + (conv.bias if conv.bias is not None else 0)
    return out, dense_gate[:, target, source].t()


class PygMGate(MessagePassing):
    """The same update rule on PyG's ``MessagePassing`` (edge-level concatenation in ``message``)."""

    def __init__(self, conv: MGateConv, gate: MGate):
        super().__init__(aggr="add", node_dim=0)
        self.conv = conv
        self.gate = gate

    def forward(self, x: Tensor, edge_index: Tensor, inputs: list[Tensor], masks: list[Tensor]) -> Tensor:
        conv = self.conv
        self.dims = [t.shape[1] for t in inputs]
        gate_inputs = torch.cat(with_placeholders(self.gate, inputs, masks), dim=1)
        raw = torch.cat(inputs, dim=1)
        present = torch.stack([torch.ones_like(masks[0]), *masks], dim=1).to(x.dtype)
        messages = (x @ conv.lin.weight.t()).view(x.shape[0], conv.heads, -1)
        deg = degree(edge_index[1], x.shape[0]).clamp(min=1)
        aggregated = self.propagate(edge_index, m=messages, g=gate_inputs, r=raw, k=present, deg=deg)
        root = x if conv.lin_root is None else x @ conv.lin_root.weight.t()
        return root + aggregated.reshape(x.shape[0], -1) + conv.bias

    def message(
        self,
        m_j: Tensor,
        g_i: Tensor,
        g_j: Tensor,
        r_i: Tensor,
        r_j: Tensor,
        k_i: Tensor,
        k_j: Tensor,
        deg_i: Tensor,
        index: Tensor,
        ptr,
        size_i,
    ) -> Tensor:
        gate = self.gate
        half = gate.lin.weight.shape[0] // 2
        weight = torch.cat([gate.lin.weight[:half], gate.lin.weight[half:]], dim=1)
        both = [None] + [(k_i[:, m] * k_j[:, m]).bool() for m in range(1, k_i.shape[1])]
        logits = edge_scores(
            gate,
            weight,
            torch.cat([g_i, g_j], dim=-1),
            list(r_i.split(self.dims, 1)),
            list(r_j.split(self.dims, 1)),
            both,
        )
        if gate.normalization == "sigmoid":
            alpha = torch.sigmoid(logits) / deg_i.unsqueeze(-1)
        else:
            alpha = pyg_softmax(F.leaky_relu(logits, gate.negative_slope), index, ptr, size_i)
        return alpha.unsqueeze(-1) * m_j
