"""Stage 2's outputs: R^G for every user and the gate of every edge, in the cache's layout."""

from __future__ import annotations

import torch
from torch_sparse import SparseTensor

from cache import GraphOutputs
from stage2_graph.minibatch import layerwise_forward
from stage2_graph.system import Stage2System


def readout(
    system: Stage2System, adj_t: SparseTensor, node_emb: torch.Tensor, gate: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """R^G ``[N, hidden_dim + content width]`` from the GNN's output and gate: the output followed by
    ``model.content_hops`` hops of the node-input content smoothed with the gate's edge relevance; and that
    relevance ``[nnz, H]``. Differentiable (fine-tuning trains through it, ``stage2_graph.finetune``)."""
    if system.model.gate is None:
        relevance = torch.ones_like(gate)
    else:
        relevance = system.model.gate.relevance(gate, adj_t)
    content = system.model.content_readout(
        system.readout_inputs(adj_t), relevance.mean(dim=1), system.content_hops
    )
    return torch.cat([node_emb, content.to(node_emb.dtype)], dim=1), relevance


def graph_representation(system: Stage2System, adj_t: SparseTensor) -> torch.Tensor:
    """R^G ``[N, D]`` of one full-graph forward over ``adj_t`` (with gradients when enabled): what
    :func:`compute_graph_outputs` exports, and what fine-tuning trains through."""
    node_emb, gate = system.model(system.node_inputs(adj_t), return_gate=True)
    return readout(system, adj_t, node_emb, gate)[0]


@torch.no_grad()
def compute_graph_outputs(system: Stage2System, layerwise_batch_size: int | None = None) -> GraphOutputs:
    """R^G and the gates from the full graph, no masking, eval mode: one full forward, or with
    ``layerwise_batch_size`` layer-wise inference over chunks of that many target nodes
    (:func:`stage2_graph.minibatch.layerwise_forward`, the same values).

    R^G is the GNN's output followed by ``model.content_hops`` hops of the node-input content smoothed with the
    gate's edge relevance (``GraphEncoder.content_readout``; none with ``content_hops=0``).

    Column ``k < E`` of ``edge_index`` is the message ``edges[k, 0] -> edges[k, 1]`` and column ``E + k``
    the reverse (row 0 = source, row 1 = target, PyG's convention); ``gate`` holds ``a_uv`` per head exactly
    as used in propagation. ``edge_weight[k]`` is the edge's relevance averaged over heads and both
    directions, in [0, 1]: the sigmoid itself (``a_uv * deg(u)``) for the sigmoid gate, ``a_uv`` over the
    largest ``a_uv'`` of the same target for the softmax gate, and 1.0 for the uniform gate.
    """
    was_training = system.training
    system.eval()
    try:
        structure = system.structure
        adj_t, _ = structure.adj_t()
        if layerwise_batch_size is None:
            node_emb, gate = system.model(system.node_inputs(adj_t), return_gate=True)
        else:
            node_emb, gate = layerwise_forward(
                system.model,
                system.features,
                structure,
                system.modalities,
                system.modality_masks,
                batch_size=layerwise_batch_size,
            )
        node_emb, relevance = readout(system, adj_t, node_emb, gate)
    finally:
        system.train(was_training)

    merged = structure.edge_of_input
    if bool((merged < 0).any()):
        raise ValueError("the corpus edge list holds self loops; the corpus reader should have dropped them")
    position = structure.directed_position()
    forward, backward = position[1, merged], position[0, merged]  # edges[k,0] -> edges[k,1], and reverse
    order = torch.cat([forward, backward])
    edge_index = torch.stack([structure.col[order], structure.row[order]])
    edge_weight = relevance.mean(dim=1)
    edge_weight = ((edge_weight[forward] + edge_weight[backward]) / 2).clamp(0.0, 1.0)
    return GraphOutputs(
        user_graph_emb=node_emb.float().cpu().numpy(),
        edge_index=edge_index.cpu().numpy(),
        gate=gate[order].float().cpu().numpy(),
        edge_weight=edge_weight.float().cpu().numpy(),
    )
