"""Mini-batch training, with PyG's ``NeighborLoader`` (``trainer.batching = "neighbor"``) or on random-walk
subgraphs (``"subgraph"``, GraphSAINT), and layer-wise full-graph inference, for graphs whose full-batch step
does not fit one process.

Each epoch draws one set of masks (which users' X is masked, which edges are held out, the negatives) from a
generator seeded by ``(seed, epoch)``, removes the held-out edges from the graph the batches are sampled from
(so they never reach message passing), and splits the work into batches (:class:`EpochBatches`): batch ``b``
takes its share of all nodes and its share of the held-out edges and negatives (the structure and gate-link
terms; at most ``batch_size / 4`` of each, so that a batch seeds about ``2 x batch_size`` nodes, and different
held-out edges are scored each epoch). :class:`NeighborBatches` seeds all of its node share (the feature term
covers the masked ones among them) and ``NeighborLoader`` samples ``fanouts[l]`` neighbours per node and hop
around the seeds; :class:`SubgraphBatches` starts random walks from ``batch_size`` of them and the pairs'
endpoints and keeps the subgraph the walks induce. The model then runs on the batch's own ``adj_t`` with the
batch's gate inputs (X, image/text embeddings, masks sliced by the batch's node ids) and the nodes' log-degree
in the whole propagated graph (a sampled subgraph does not hold every neighbour). Under DDP each rank takes
every ``world_size``-th batch (the same count on every rank).

Every batch has a different size, so its tensors (a few MiB to tens of MiB) have sizes glibc's allocator has
not seen: with its default dynamic threshold, blocks that size stay in the heap after being freed and the
resident set grew by about 35 MiB per batch without levelling off (issue 23). :func:`limit_allocator_caching`
(:mod:`mmga_common.allocator`) fixes the threshold at 1 MiB when the batches are built, so large blocks are
mapped and returned on free.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torch_geometric.data import Data
from torch_geometric.loader import NeighborLoader
from torch_sparse import SparseTensor

from mmga_common.allocator import limit_allocator_caching
from stage2_graph.adjacency import GraphStructure
from stage2_graph.data import MaskingDataset
from stage2_graph.model import GraphEncoder, NodeInputs, node_log_degree


def sampled_adj_t(edge_index: Tensor, num_nodes: int) -> tuple[SparseTensor, Tensor]:
    """A batch's ``adj_t`` (row = target) from its ``edge_index [2, e]`` (row 0 = source, PyG's convention),
    and the position in ``edge_index`` of each CSR entry ``[e]``."""
    order = torch.arange(edge_index.shape[1], device=edge_index.device)
    adj_t = SparseTensor(
        row=edge_index[1], col=edge_index[0], value=order, sparse_sizes=(num_nodes, num_nodes)
    )
    return adj_t.set_value(None, layout="csr"), adj_t.storage.value()


def random_walk(adj: SparseTensor, start: Tensor, walk_length: int, generator: torch.Generator) -> Tensor:
    """Uniform random walks ``[len(start), walk_length + 1]`` over ``adj``'s rows (CSR), the start first; a walk
    that reaches a node without neighbours stays there.

    torch-sparse's ``SparseTensor.random_walk`` expects no such node: from one it follows an entry of the next
    row, and past the last row it reads beyond the column array (wrong walks, or a segfault;
    rusty1s/pytorch_sparse#324, where pyg-lib, not installable here, is named as the fix). This is the same
    walk in torch operations (the same draws: equal to it where every node has a neighbour, tested), from
    ``generator``, so that a batch is the same whatever ran before it.
    """
    rowptr, col, _ = adj.csr()
    if col.numel() == 0:
        return start.unsqueeze(1).repeat(1, walk_length + 1)
    walk, current = [start], start
    uniform = torch.rand((start.numel(), walk_length), generator=generator)
    for hop in range(walk_length):
        first = rowptr.index_select(0, current)
        degree = rowptr.index_select(0, current + 1) - first
        step = (uniform[:, hop] * degree).long()
        following = col.index_select(0, (first + step).clamp_(max=col.numel() - 1))
        current = torch.where(degree > 0, following, current)
        walk.append(current)
    return torch.stack(walk, dim=1)


def _edge_index(adj_t: SparseTensor) -> Tensor:
    """``edge_index [2, nnz]`` of ``adj_t`` (row = target) in its CSR order, PyG's convention (row 0 = source)."""
    return torch.stack([adj_t.storage.col(), adj_t.storage.row()])


def _directed(structure: GraphStructure, keep_edges: Tensor | None) -> tuple[Tensor, Tensor]:
    """``edge_index [2, nnz]`` of the propagated graph (CSR order, row 0 = source) and ``log(1 + deg)`` ``[N]``."""
    adj_t, _ = structure.adj_t(keep_edges)
    return _edge_index(adj_t), node_log_degree(adj_t)


class EpochBatches(Dataset):
    """One epoch's masks and each batch's share of the nodes and pairs on one rank, for both samplers.

    ``num_batches`` batches (rounded up to a multiple of ``world_size``); batch ``b`` takes chunk ``b`` of a
    random permutation of the nodes (its first ``roots`` nodes when given) and its share of the epoch's
    held-out edges and negatives (at most ``batch_size / 4`` of each). ``adj_t`` is the propagated graph (the
    held-out edges removed) and ``log_degree`` its nodes' ``log(1 + deg)``.
    """

    def __init__(
        self,
        structure: GraphStructure,
        masking: MaskingDataset,
        batch_size: int,
        num_batches: int,
        epoch: int,
        seed: int,
        rank: int,
        world_size: int,
        roots: int | None = None,
    ):
        limit_allocator_caching()
        masks = masking[(epoch, 0)]
        self.node_mask = masks["node_mask"]
        # The samplers run on CPU, whatever device the structure's buffers are on.
        adj_t, _ = structure.adj_t(masks["keep_edges"].to(structure.row.device))
        self.adj_t = adj_t.cpu()
        self.log_degree = node_log_degree(self.adj_t)
        num_nodes = structure.num_nodes
        generator = torch.Generator().manual_seed((seed * 1_000_003 + epoch) * 7 + 1)
        num_batches = max(1, math.ceil(num_batches / world_size)) * world_size
        pos, neg = masks["pos_pairs"], masks["neg_pairs"]
        self.nodes = [
            chunk[:roots]
            for chunk in torch.randperm(num_nodes, generator=generator).tensor_split(num_batches)
        ]
        # Each batch scores at most batch_size / 4 held-out edges and as many negatives, so that its seeds
        # stay within about 2 x batch_size nodes; the edges held out this epoch still never reach messages.
        cap = math.ceil(batch_size / 4)
        pos = pos[:, torch.randperm(pos.shape[1], generator=generator)]
        neg = neg[:, torch.randperm(neg.shape[1], generator=generator)]
        self.pos = [chunk[:, :cap] for chunk in pos.tensor_split(num_batches, dim=1)]
        self.neg = [chunk[:, :cap] for chunk in neg.tensor_split(num_batches, dim=1)]
        self.mine = list(range(rank, num_batches, world_size))

    def __len__(self) -> int:
        return len(self.mine)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        b = self.mine[index]
        nodes, pos, neg = self.nodes[b], self.pos[b], self.neg[b]
        seeds = torch.unique(torch.cat([nodes, pos.reshape(-1), neg.reshape(-1)]))
        return self.sample(seeds, nodes, pos, neg)

    def sample(self, seeds: Tensor, nodes: Tensor, pos: Tensor, neg: Tensor) -> dict[str, Tensor]:
        """The batch around sorted unique ``seeds`` (its node share ``nodes`` and pairs, in global ids)."""
        raise NotImplementedError

    def batch(
        self, n_id: Tensor, num_seeds: int, edge_index: Tensor, loss_nodes: Tensor, pos: Tensor, neg: Tensor
    ) -> dict[str, Tensor]:
        """The batch dict over ``n_id`` (local ids = positions in it; ``pos``, ``neg`` and ``loss_nodes`` are
        global ids found in ``n_id[:num_seeds]``, which is sorted)."""
        seeds = n_id[:num_seeds]
        loss_mask = torch.zeros(n_id.numel(), dtype=torch.bool)
        loss_mask[torch.searchsorted(seeds, loss_nodes)] = True
        node_mask = self.node_mask.index_select(0, n_id)
        return {
            "n_id": n_id,
            "num_seeds": num_seeds,
            "edge_index": edge_index,
            "log_degree": self.log_degree.index_select(0, n_id),
            "node_mask": node_mask,
            "loss_mask": loss_mask & node_mask,
            "pos_pairs": torch.searchsorted(seeds, pos.contiguous()),
            "neg_pairs": torch.searchsorted(seeds, neg.contiguous()),
        }


class NeighborBatches(EpochBatches):
    """One epoch's neighbour-sampled mini-batches on one rank (``trainer.batching=neighbor``; the module
    docstring).

    Args:
        structure (GraphStructure): the whole graph.
        masking (MaskingDataset): draws the epoch's masks (item ``(epoch, 0)``).
        fanouts (Sequence[int]): neighbours per node and hop, one per layer (``-1`` = all).
        batch_size (int): seed nodes per batch (each batch also seeds the endpoints of its pairs).
        epoch (int): epoch index (masks and batch order depend on it and on ``seed``).
        seed (int): base seed.
        rank, world_size (int): this process's share of the batches.

    Each item is a dict: ``n_id [n]`` (global ids; the ``num_seeds`` seeds first), ``edge_index [2, e]`` (local,
    row 0 = source), ``log_degree [n]``, ``node_mask`` bool ``[n]`` (X masked), ``loss_mask`` bool ``[n]`` (masked
    seed nodes of the batch's node share: the feature term's rows), ``pos_pairs [2, P_b]`` and
    ``neg_pairs [2, Q_b]`` (local ids of the batch's held-out edges and negatives).
    """

    def __init__(
        self,
        structure: GraphStructure,
        masking: MaskingDataset,
        fanouts: Sequence[int],
        batch_size: int,
        epoch: int = 0,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        num_batches = math.ceil(structure.num_nodes / batch_size)
        super().__init__(structure, masking, batch_size, num_batches, epoch, seed, rank, world_size)
        # Only the loader's sampler and filtering are used: the seeds of each batch are chosen here.
        self.loader = NeighborLoader(
            Data(edge_index=_edge_index(self.adj_t), num_nodes=structure.num_nodes),
            num_neighbors=list(fanouts),
            batch_size=batch_size,
        )

    def sample(self, seeds: Tensor, nodes: Tensor, pos: Tensor, neg: Tensor) -> dict[str, Tensor]:
        """The batch around sorted unique ``seeds`` (``nodes``, ``pos``, ``neg`` in global ids, within seeds)."""
        out = self.loader.collate_fn(seeds)
        data = out if self.loader.filter_per_worker else self.loader.filter_fn(out)
        n_id = data.n_id
        if not torch.equal(n_id[: seeds.numel()], seeds):
            raise RuntimeError("NeighborLoader did not put the seed nodes first")
        return self.batch(n_id, seeds.numel(), data.edge_index, nodes, pos, neg)


class SubgraphBatches(EpochBatches):
    """One epoch's random-walk subgraphs on one rank (``trainer.batching=subgraph``; GraphSAINT's random-walk
    sampler, Zeng et al. 2020: the walks of PyG's ``GraphSAINTRandomWalkSampler`` by :func:`random_walk`, its
    induced subgraph by torch-sparse's ``saint_subgraph``, which that sampler uses).

    Batch ``b`` starts a walk of ``walk_length`` steps from each of its roots (``batch_size`` nodes of the
    epoch's permutation, plus the endpoints of its share of held-out edges and negatives) and keeps the
    subgraph the walks' nodes induce in the propagated graph: every node of it is computed from its
    neighbours inside the subgraph only. The feature term's rows are the masked nodes among the batch's own
    roots (its node share), not every masked node of the subgraph: walks reach well-connected users more
    often, and every node's rows would weight the term toward them (GraphSAINT corrects that with estimated
    sampling probabilities; uniform roots need none). There are ``ceil(N / (batch_size x (walk_length + 1)))``
    batches per epoch, so that an epoch visits about as many nodes as the graph holds, as one full-batch step
    does (GraphSAINT's epoch); a node is a root, and a feature row when masked, about once every
    ``walk_length + 1`` epochs. Unlike neighbour sampling, the subgraph does not grow with the hops (no
    neighbour explosion), but a node sees only its neighbours inside it: fewer than in the graph, which
    GraphSAINT's normalisation corrects in expectation and this sampler does not (docs/performance.md).

    Items are dicts as :class:`NeighborBatches`' (``n_id`` sorted, all of it seeds; ``loss_mask`` the masked
    roots of the node share).
    """

    def __init__(
        self,
        structure: GraphStructure,
        masking: MaskingDataset,
        walk_length: int,
        batch_size: int,
        epoch: int = 0,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        num_batches = math.ceil(structure.num_nodes / (batch_size * (walk_length + 1)))
        super().__init__(
            structure, masking, batch_size, num_batches, epoch, seed, rank, world_size, roots=batch_size
        )
        self.walk_length, self.seed, self.epoch = walk_length, seed, epoch
        self.generator = torch.Generator()

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        b = self.mine[index]
        self.generator.manual_seed((self.seed * 1_000_003 + self.epoch) * 1_000_003 + b)
        return super().__getitem__(index)

    def sample(self, seeds: Tensor, nodes: Tensor, pos: Tensor, neg: Tensor) -> dict[str, Tensor]:
        """The subgraph induced by the walks from sorted unique ``seeds`` (the roots)."""
        walks = random_walk(self.adj_t, seeds, self.walk_length, self.generator)
        n_id = torch.unique(walks.flatten())
        sub, _ = self.adj_t.saint_subgraph(n_id)  # rows = targets, as adj_t's
        return self.batch(n_id, n_id.numel(), _edge_index(sub), nodes, pos, neg)


class MiniBatchDataModule(L.LightningDataModule):
    """Serves the mini-batches of the trainer's current epoch and this rank (reloaded every epoch: the
    Trainer runs with ``reload_dataloaders_every_n_epochs=1``). Picklable, for ``ddp_spawn``.

    Args:
        batches: builds one epoch's batches given ``epoch=``, ``rank=`` and ``world_size=``, e.g.
            ``functools.partial(NeighborBatches, structure, masking, fanouts, batch_size, seed=seed)``.
    """

    def __init__(self, batches: Callable[..., EpochBatches]):
        super().__init__()
        self.batches = batches

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        epoch = trainer.current_epoch if trainer is not None else 0
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        batches = self.batches(epoch=epoch, rank=rank, world_size=world)
        return DataLoader(batches, batch_size=None, shuffle=False, num_workers=0)


@torch.no_grad()
def layerwise_forward(
    model: GraphEncoder,
    features: Tensor,
    structure: GraphStructure,
    modalities: Sequence[Tensor] = (),
    modality_masks: Sequence[Tensor | None] | None = None,
    batch_size: int = 256,
) -> tuple[Tensor, Tensor]:
    """R^G ``[N, hidden_dim]`` and the gate ``[nnz, H]`` of the whole graph (no masking), one layer at a time.

    PyG's layer-wise inference: every layer's states of all nodes are kept (``[N, hidden_dim]``), and each
    layer is computed for ``batch_size`` target nodes at a time over their 1-hop neighbourhood
    (``NeighborLoader`` with all neighbours), so no batch ever holds more than one hop. The gate is made once
    for the whole graph (it is an output, ``[nnz, H]``, in ``structure.adj_t()``'s CSR order) and sliced per
    batch by edge id. Equals the full forward in eval mode (tested).
    """
    adj_t, _ = structure.adj_t()
    gate = model.compute_gate(NodeInputs(features, adj_t, modalities, modality_masks))
    edge_index, log_degree = _directed(structure, None)
    num_nodes = structure.num_nodes
    chunks = torch.arange(num_nodes, device=features.device).split(batch_size)
    masks = list(modality_masks) if modality_masks is not None else [None] * len(modalities)
    hidden = torch.cat(
        [
            model.input_states(
                NodeInputs(
                    features[chunk],
                    adj_t,
                    [m[chunk] for m in modalities],
                    [None if k is None else k[chunk] for k in masks],
                    log_degree[chunk],
                )
            )
            for chunk in chunks
        ]
    )
    loader = NeighborLoader(
        Data(edge_index=edge_index.cpu(), num_nodes=num_nodes), num_neighbors=[-1], batch_size=batch_size
    )
    for index in range(len(model.convs)):
        parts = []
        for batch in loader:
            n_id = batch.n_id.to(features.device)
            local, position = sampled_adj_t(batch.edge_index.to(features.device), n_id.numel())
            entry_gate = gate.index_select(0, batch.e_id.to(features.device).index_select(0, position))
            parts.append(
                model.layer(index, hidden.index_select(0, n_id), local, entry_gate)[: batch.batch_size]
            )
        hidden = torch.cat(parts)
    return hidden, gate
