"""The stage-2 graph encoder: node inputs (X, degree, stage 1's modalities) and the M-Gate -> R^G."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn
from torch_sparse import SparseTensor

from stage2_graph.config import (
    MODALITY_INPUTS,
    ActivationKind,
    GateForm,
    GateKind,
    GateNormalization,
    NodeInput,
    NormKind,
)
from stage2_graph.gate import MGate, uniform_gate
from stage2_graph.layers import MGateConv

_BLOCKS = ("stats", "degree", "image", "text")
_ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "elu": nn.ELU}


def _norm(kind: NormKind, width: int) -> nn.Module:
    if kind == "layer":
        return nn.LayerNorm(width)
    if kind == "batch":
        return nn.BatchNorm1d(width)
    return nn.Identity()


@dataclass(frozen=True)
class NodeInputs:
    """What the encoder reads of the nodes of one (sub)graph, passed as one object.

    Attributes:
        x: the statistics X ``[N, F]`` (masked rows are replaced inside the encoder, per ``node_mask``).
        adj_t: the transposed adjacency ``[N, N]`` the layers propagate over (None where only per-node terms are
            read: the gate's pair scores).
        modalities: stage 1's embeddings ``[N, D_m]`` in ``MODALITY_INPUTS`` order (empty without them).
        modality_masks: ``[N]`` bool per modality, True where the user has it (None: everyone has it).
        log_degree: ``[N]`` each node's log-degree in the whole graph, when ``adj_t`` is a sampled subgraph that
            does not hold every neighbour (None: computed from ``adj_t``).
    """

    x: Tensor
    adj_t: SparseTensor | None
    modalities: Sequence[Tensor] = ()
    modality_masks: Sequence[Tensor | None] | None = None
    log_degree: Tensor | None = None

    @property
    def masks(self) -> list[Tensor | None]:
        return list(self.modality_masks) if self.modality_masks is not None else [None] * len(self.modalities)


def node_log_degree(adj_t: SparseTensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """``log(1 + deg(u))`` ``[N]`` of the adjacency's rows (its stored entries: the neighbours of ``u``)."""
    return torch.log1p(adj_t.storage.rowcount().to(dtype))


class GraphEncoder(nn.Module):
    r"""Node inputs, then a stack of :class:`MGateConv` layers sharing one gate per forward pass.

    **Node inputs** (``node_inputs``): the blocks ``stats`` (X), ``degree`` (:math:`\log(1 + \deg u)` in the
    propagated adjacency), ``image`` (:math:`R^I`) and ``text`` (:math:`R^T`) are concatenated and projected
    to ``hidden_dim``, which is the same as summing one projection per block:

    .. math::
        h^{(0)}_u = W_0 \big[\, \tilde X_u \,\|\, \log(1 + \deg u) \,\|\, \tilde R^I_u \,\|\, \tilde R^T_u \,\big] + b_0
                  = \sum_{\text{block } m} W_0^{(m)} \tilde m_u + b_0

    where :math:`\tilde X_u` is the learned mask token for a masked node (feature masking) and
    :math:`\tilde R^m_u` a learned placeholder for a user without that modality (mask False).

    **Gate.** :math:`a_{uv}` (eq. 4-5, :class:`MGate`) depends on the inputs (X and the modality
    embeddings), not on the layer, so it is computed once per call and every layer propagates with it.
    With ``gate="uniform"`` the gate is ``1/deg(u)`` (mean aggregation) over the same node inputs: the
    no-alignment baseline.

    Args:
        num_features (int): width ``F`` of X.
        modality_dims (Sequence[int], optional): widths ``(D_i, D_t)`` of the image and text embeddings (fed to
            the gate, and to the node inputs per ``node_inputs``); empty without modalities. (default: ``()``)
        hidden_dim (int, optional): width of node states and output. (default: ``64``)
        num_layers (int, optional): propagation layers. (default: ``2``)
        heads (int, optional): gate heads. (default: ``1``)
        gate (str, optional): ``"mgate"`` or ``"uniform"``. (default: ``"mgate"``)
        gate_normalization (str, optional): ``"sigmoid"`` or ``"softmax"``. (default: ``"sigmoid"``)
        negative_slope (float, optional): LeakyReLU slope of the softmax and gatv2 gates. (default: ``0.2``)
        dropout (float, optional): dropout before each layer. (default: ``0.1``)
        norm (str, optional): ``"none"``, ``"layer"`` or ``"batch"`` after hidden layers. (default: ``"layer"``)
        activation (str, optional): ``"relu"``, ``"gelu"`` or ``"elu"``. (default: ``"gelu"``)
        input_proj (bool, optional): project the node inputs to ``hidden_dim`` before the first layer; off:
            the raw concatenation is propagated. (default: ``True``)
        node_inputs (Sequence[str], optional): the blocks of the node input, any of ``"stats"``,
            ``"degree"``, ``"image"``, ``"text"``. Mean-like aggregation cannot count neighbours, hence the
            degree block; it is computed from the ``adj_t`` of the call, so edges held out of message passing
            do not count. (default: ``("stats", "degree", "image", "text")``)
        gate_form (str, optional): ``"additive"``, ``"cosine"`` or ``"gatv2"`` (:class:`MGate`). (default: ``"cosine"``)
        gate_rank (int, optional): rank of the gate's pair projections / gatv2 hidden width. (default: ``8``)

    Shapes:
        - **input:** ``x [N, F]``, ``adj_t`` ``SparseTensor [N, N]``, modalities ``[N, D_k]`` with bool
          masks ``[N]``, optional ``node_mask`` bool ``[N]`` (X replaced by the learned mask token)
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
        node_inputs: Sequence[NodeInput] = ("stats", "degree", "image", "text"),
        gate_form: GateForm = "cosine",
        gate_rank: int = 8,
    ):
        super().__init__()
        if gate not in ("mgate", "uniform"):
            raise ValueError(f"gate must be 'mgate' or 'uniform', got {gate!r}")
        self.num_features = num_features
        self.modality_dims = tuple(int(d) for d in modality_dims)
        self.hidden_dim = hidden_dim
        self.node_inputs = tuple(node_inputs)
        unknown = sorted(set(self.node_inputs) - set(_BLOCKS))
        if unknown or not self.node_inputs:
            raise ValueError(f"node_inputs must be a non-empty subset of {_BLOCKS}, got {self.node_inputs}")
        widths = {"stats": num_features, "degree": 1}
        for name in MODALITY_INPUTS:
            if name in self.node_inputs:
                index = MODALITY_INPUTS.index(name)
                if index >= len(self.modality_dims):
                    raise ValueError(f"node input {name!r} needs stage 1's {name} embeddings (modality_dims)")
                widths[name] = self.modality_dims[index]
        self.input_widths = tuple(widths[name] for name in self.node_inputs)
        in_dim = sum(self.input_widths)
        self.mask_token = nn.Parameter(torch.empty(num_features))
        # Node-input placeholders for users without a modality (the gate keeps its own).
        self.input_placeholders = nn.ParameterDict(
            {name: nn.Parameter(torch.empty(widths[name])) for name in MODALITY_INPUTS if name in widths}
        )
        self.input_proj = nn.Linear(in_dim, hidden_dim) if input_proj else None
        self.gate = (
            MGate(
                num_features,
                self.modality_dims,
                heads,
                gate_normalization,
                negative_slope,
                gate_form,
                gate_rank,
            )
            if gate == "mgate"
            else None
        )
        widths_per_layer = [hidden_dim if input_proj else in_dim] + [hidden_dim] * num_layers
        self.convs = nn.ModuleList(
            [MGateConv(widths_per_layer[i], widths_per_layer[i + 1], heads=heads) for i in range(num_layers)]
        )
        self.norms = nn.ModuleList([_norm(norm, hidden_dim) for _ in range(num_layers - 1)])
        self.activation = _ACTIVATIONS[activation]()
        self.dropout = nn.Dropout(dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.mask_token, std=0.02)
        for placeholder in self.input_placeholders.values():
            nn.init.normal_(placeholder, std=0.02)
        if self.input_proj is not None:
            self.input_proj.reset_parameters()
        if self.gate is not None:
            self.gate.reset_parameters()
        for conv in self.convs:
            conv.reset_parameters()
        for norm in self.norms:
            if hasattr(norm, "reset_parameters"):
                norm.reset_parameters()

    def masked_features(self, x: Tensor, node_mask: Tensor | None) -> Tensor:
        """X with the rows of masked nodes replaced by the mask token ``[N, F]``."""
        if node_mask is None:
            return x
        return torch.where(node_mask.view(-1, 1), self.mask_token.to(x.dtype), x)

    def node_input(self, inputs: NodeInputs) -> Tensor:
        """The concatenated node-input blocks ``[N, sum of block widths]`` (``inputs.x`` already masked).

        ``inputs.log_degree`` replaces the degree block computed from ``adj_t``: a sampled subgraph (mini-batch)
        does not hold every node's neighbours, so the degree in the whole propagated graph is passed in."""
        x, adj_t, modalities, masks, log_degree = (
            inputs.x,
            inputs.adj_t,
            inputs.modalities,
            inputs.masks,
            inputs.log_degree,
        )
        blocks = []
        for name in self.node_inputs:
            if name == "stats":
                blocks.append(x)
            elif name == "degree":
                degree = node_log_degree(adj_t, x.dtype) if log_degree is None else log_degree.to(x.dtype)
                blocks.append(degree.view(-1, 1))
            else:
                index = MODALITY_INPUTS.index(name)
                if index >= len(modalities):
                    raise ValueError(
                        f"node input {name!r} needs its embedding; got {len(modalities)} modalities"
                    )
                embedding, mask = modalities[index].to(x.dtype), masks[index]
                if mask is not None:
                    placeholder = self.input_placeholders[name].to(x.dtype)
                    embedding = torch.where(mask.view(-1, 1), embedding, placeholder)
                blocks.append(embedding)
        return torch.cat(blocks, dim=-1) if len(blocks) > 1 else blocks[0]

    def compute_gate(self, inputs: NodeInputs) -> Tensor:
        """The gate ``[nnz, H]`` (``[nnz, 1]`` for uniform) for the given (already masked) X."""
        if self.gate is None:
            return uniform_gate(inputs.adj_t, inputs.x.dtype)
        return self.gate(inputs.x, inputs.adj_t, inputs.modalities, inputs.modality_masks)

    def gate_pair_logits(self, inputs: NodeInputs, pairs: Tensor, node_mask: Tensor | None = None) -> Tensor:
        """The M-Gate's scores ``e_uv`` ``[P, H]`` of arbitrary pairs ``[2, P]`` (row 0 = target u)."""
        if self.gate is None:
            raise ValueError("the uniform gate has no pair scores")
        x = self.masked_features(inputs.x, node_mask)
        return self.gate.pair_logits(x, pairs, inputs.modalities, inputs.modality_masks)

    def content_readout(self, inputs: NodeInputs, weight: Tensor, hops: int) -> Tensor:
        r"""The node-input content smoothed over the graph with the gate's edge weights, parameter-free.

        For every content block :math:`m` of the node inputs (``stats``, ``image``, ``text``; not ``degree``),
        standardized per column over the users that have it (mask :math:`\mu_u`), hop :math:`k` is the weighted
        mean over the user and its neighbours that have the block:

        .. math::
            F^{(k)}_u = \frac{\mu^{(k-1)}_u F^{(k-1)}_u + \sum_{v \in N(u)} w_{uv}\, \mu^{(k-1)}_v F^{(k-1)}_v}
                             {\mu^{(k-1)}_u + \sum_{v \in N(u)} w_{uv}\, \mu^{(k-1)}_v},
            \qquad \mu^{(k)}_u = [\text{denominator} > 0]

        with :math:`w_{uv} \in [0, 1]` the gate's relevance of the edge (mean over heads; 1 for the uniform
        gate, which makes this SGC's mean smoothing). Returns ``[N, hops * sum of block widths]``:
        :math:`[F^{(1)} \| \dots \| F^{(K)}]` per block, zero where no one within k hops has the block.
        """
        x, adj_t, modalities, masks = inputs.x, inputs.adj_t, inputs.modalities, inputs.masks
        if hops <= 0:
            return x.new_zeros(x.shape[0], 0)
        blocks: list[tuple[Tensor, Tensor]] = []
        for name in self.node_inputs:
            if name == "stats":
                blocks.append((x, torch.ones(x.shape[0], dtype=torch.bool, device=x.device)))
            elif name in MODALITY_INPUTS:
                index = MODALITY_INPUTS.index(name)
                mask = (
                    masks[index]
                    if masks[index] is not None
                    else torch.ones_like(modalities[index][:, 0]).bool()
                )
                blocks.append((modalities[index].to(x.dtype), mask.bool()))
        if not blocks:
            return x.new_zeros(x.shape[0], 0)
        weighted = adj_t.set_value(weight.to(x.dtype), layout="coo")
        out = []
        for block, mask in blocks:
            present = mask.to(x.dtype).view(-1, 1)
            count = present.sum().clamp(min=1)
            mean = (block * present).sum(0) / count
            std = (((block - mean) * present).pow(2).sum(0) / count).sqrt()
            feats = (block - mean) / torch.where(std > 0, std, torch.ones_like(std)) * present
            hop_outputs = []
            for _ in range(hops):
                total = present + weighted.matmul(present)
                feats = torch.where(
                    total > 0,
                    (feats * present + weighted.matmul(feats * present))
                    / total.clamp(min=torch.finfo(x.dtype).tiny),
                    torch.zeros_like(feats),
                )
                present = (total > 0).to(x.dtype)
                hop_outputs.append(feats)
            out.append(torch.cat(hop_outputs, dim=1))
        return torch.cat(out, dim=1)

    def forward(
        self, inputs: NodeInputs, node_mask: Tensor | None = None, return_gate: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        # Masked nodes' statistics are gone everywhere, including from the gate; their own image and
        # text stay (the target is X, which they do not contain; docs/stage2.md).
        inputs = replace(inputs, x=self.masked_features(inputs.x, node_mask))
        gate = self.compute_gate(inputs)
        hidden = self.input_states(inputs)
        for index in range(len(self.convs)):
            hidden = self.layer(index, hidden, inputs.adj_t, gate)
        return (hidden, gate) if return_gate else hidden

    def input_states(self, inputs: NodeInputs) -> Tensor:
        """``h^(0)`` ``[N, hidden_dim]`` (or the raw node inputs without ``input_proj``); ``inputs.x`` already
        masked."""
        blocks = self.node_input(inputs)
        return self.input_proj(blocks) if self.input_proj is not None else blocks

    def layer(self, index: int, hidden: Tensor, adj_t: SparseTensor, gate: Tensor) -> Tensor:
        """Layer ``index`` of the stack (dropout, gated propagation, then norm and activation unless last);
        the same code serves the full forward and layer-wise inference."""
        hidden = self.convs[index](self.dropout(hidden), adj_t, gate=gate)
        if index < len(self.convs) - 1:
            hidden = self.activation(self.norms[index](hidden))
        return hidden
