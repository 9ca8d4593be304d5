"""The symmetric social graph as a ``torch_sparse.SparseTensor`` (``adj_t``), built once.

``adj_t[u, v]`` is non-zero when v sends a message to u (rows are targets, PyG's transposed convention).
The graph is undirected, so the pattern is symmetric: the column pointer equals the row pointer and
the CSR->CSC permutation is the permutation that maps each directed entry to its reverse. Both are known
once the graph is built, so every adjacency made from it (the full one, or one with held-out edges
removed) carries its transpose caches from the start and torch-sparse never sorts again, and is marked
symmetric for the kernels (``ops.mark_symmetric``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_sparse import SparseStorage, SparseTensor

from stage2_graph.ops import mark_symmetric


def _csr_adj_t(row: Tensor, rowptr: Tensor, col: Tensor, rev: Tensor, num_nodes: int) -> SparseTensor:
    rowcount = rowptr.diff()
    storage = SparseStorage(
        row=row,
        rowptr=rowptr,
        col=col,
        value=None,
        sparse_sizes=(num_nodes, num_nodes),
        rowcount=rowcount,
        colptr=rowptr,
        colcount=rowcount,
        csr2csc=rev,
        csc2csr=rev,
        is_sorted=True,
        trust_data=True,
    )
    return mark_symmetric(SparseTensor.from_storage(storage))


class GraphStructure(nn.Module):
    """The merged, symmetric, self-loop-free adjacency of an undirected edge list.

    Holds its index tensors as non-persistent buffers, so it follows the module to a device but never
    enters a checkpoint.

    Args:
        edges (Tensor): undirected edges ``[E, 2]`` (any order; duplicates merged, self loops dropped).
        num_nodes (int): number of nodes ``N``.

    Attributes:
        num_edges (int): merged undirected edges ``E_m``.
        edge_pairs: ``[E_m, 2]`` merged edges with ``u < v``, sorted.
        edge_of_input: ``[E]`` merged edge of each input row (``-1`` for a self loop).
        row, col, rowptr: CSR of the ``2 E_m`` directed entries (row = target u, col = source v).
        edge_id: ``[2 E_m]`` merged edge of each directed entry.
        rev: ``[2 E_m]`` position of each entry's reverse (the CSR->CSC permutation).
    """

    def __init__(self, edges: Tensor, num_nodes: int):
        super().__init__()
        edges = torch.as_tensor(edges, dtype=torch.long).reshape(-1, 2)
        if edges.numel() and (edges.min() < 0 or edges.max() >= num_nodes):
            raise ValueError(f"edges refer to nodes outside [0, {num_nodes})")
        self.num_nodes = int(num_nodes)
        low = torch.minimum(edges[:, 0], edges[:, 1])
        high = torch.maximum(edges[:, 0], edges[:, 1])
        loop = low == high
        keys, inverse = torch.unique(low[~loop] * num_nodes + high[~loop], return_inverse=True)
        edge_of_input = torch.full((edges.shape[0],), -1, dtype=torch.long)
        edge_of_input[~loop] = inverse
        pairs = torch.stack([keys // num_nodes, keys % num_nodes], dim=1)
        num_edges = pairs.shape[0]

        # Directed entry k < E_m is v -> u with (u, v) = pairs[k] reversed; k >= E_m the other direction.
        target = torch.cat([pairs[:, 0], pairs[:, 1]])
        source = torch.cat([pairs[:, 1], pairs[:, 0]])
        order = torch.argsort(target * num_nodes + source)
        position = torch.empty_like(order)
        position[order] = torch.arange(order.numel())
        rev = position[(order + num_edges) % (2 * num_edges)] if num_edges else order
        row = target[order]
        rowptr = torch.zeros(num_nodes + 1, dtype=torch.long)
        rowptr[1:] = torch.cumsum(torch.bincount(row, minlength=num_nodes), 0)

        self.num_edges = num_edges
        self.register_buffer("edge_pairs", pairs, persistent=False)
        self.register_buffer("edge_of_input", edge_of_input, persistent=False)
        self.register_buffer("row", row, persistent=False)
        self.register_buffer("col", source[order], persistent=False)
        self.register_buffer("rowptr", rowptr, persistent=False)
        self.register_buffer("edge_id", order % num_edges if num_edges else order, persistent=False)
        self.register_buffer("rev", rev, persistent=False)

    def adj_t(self, keep_edges: Tensor | None = None) -> tuple[SparseTensor, Tensor]:
        """The adjacency used for message passing, and the merged edge id of each of its entries.

        Args:
            keep_edges: optional bool ``[E_m]``; edges marked False are removed in both directions
                (held out). ``None`` keeps every edge.

        Returns:
            ``adj_t`` (``SparseTensor [N, N]`` without values, transpose caches filled) and
            ``edge_id [nnz]`` (merged edge of each CSR entry).
        """
        if keep_edges is None:
            return _csr_adj_t(self.row, self.rowptr, self.col, self.rev, self.num_nodes), self.edge_id
        if keep_edges.shape != (self.num_edges,) or keep_edges.dtype != torch.bool:
            raise ValueError(
                f"keep_edges must be bool [{self.num_edges}], got {keep_edges.dtype} {keep_edges.shape}"
            )
        keep_entry = keep_edges.index_select(0, self.edge_id)
        kept = keep_entry.nonzero().view(-1)
        new_position = torch.cumsum(keep_entry, 0) - 1
        # Kept entries before each row start = the new row pointer.
        rowptr = torch.cat([new_position.new_zeros(1), new_position + 1]).index_select(0, self.rowptr)
        rev = new_position.index_select(0, self.rev.index_select(0, kept))
        row, col = self.row.index_select(0, kept), self.col.index_select(0, kept)
        return _csr_adj_t(row, rowptr, col, rev, self.num_nodes), self.edge_id.index_select(0, kept)

    def directed_position(self) -> Tensor:
        """``[2, E_m]``: CSR position of entry v->u (row 0) and u->v (row 1) for each merged (u, v)."""
        position = torch.empty_like(self.edge_id)
        position[self._order_inverse()] = torch.arange(position.numel(), device=position.device)
        return position.view(2, -1)

    def _order_inverse(self) -> Tensor:
        # Entry k of the unsorted construction list maps to merged edge k % E_m, direction k // E_m;
        # recover it from (row, col): direction 0 has target = pairs[:, 0].
        direction = (self.row != self.edge_pairs[self.edge_id, 0]).long()
        return direction * self.num_edges + self.edge_id
