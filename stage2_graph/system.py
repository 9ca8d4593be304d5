"""The stage-2 training system: which losses, their weights, logging and optimisation."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch_sparse import SparseTensor

from stage2_graph.adjacency import GraphStructure
from stage2_graph.config import (
    MODALITY_INPUTS,
    GateKind,
    ModelConfig,
    ObjectiveConfig,
    OptimConfig,
    Stage2Config,
    resolve_node_inputs,
)
from stage2_graph.data import GraphInputs
from stage2_graph.losses import FeatureReconstructionLoss, GateLinkLoss, StructureReconstructionLoss
from stage2_graph.minibatch import sampled_adj_t
from stage2_graph.model import GraphEncoder, NodeInputs


def drop_last_columns(embedding: Tensor, k: int, modality: str = "text") -> Tensor:
    """R^T (or R^I) without its last ``k`` columns (``model.text_skip_last`` / ``model.image_skip_last``, e.g.
    stage 1's graph head; docs/stage2.md)."""
    if k >= embedding.shape[1]:
        symbol = "R^T" if modality == "text" else "R^I"
        raise ValueError(
            f"model.{modality}_skip_last={k} leaves nothing of stage 1's {symbol} ({embedding.shape[1]} columns); "
            f"it should be stage 1's model.{modality}_head_dim"
        )
    return embedding[:, : embedding.shape[1] - k]


class Stage2System(L.LightningModule):
    """Full-batch pre-training of :class:`GraphEncoder` with feature masking and edge hold-out.

    The graph (X, adjacency, stage 1's embeddings) is held as non-persistent buffers: it follows the
    module to its device but stays out of checkpoints. Each training batch holds only one step's masks
    (see :class:`stage2_graph.data.MaskingDataset`).

    Args:
        graph (GraphInputs): the inputs, in the corpus's user order.
        model (ModelConfig): encoder settings.
        objective (ObjectiveConfig): loss weights (mask ratios are used by the data pipeline).
        optim (OptimConfig): optimiser settings.
        gate (str, optional): ``"mgate"`` or ``"uniform"``. (default: ``"mgate"``)
        use_modalities (bool, optional): off: stage 1's embeddings are used nowhere (neither gate nor node
            inputs), whatever ``graph`` carries and ``model.node_inputs`` says. (default: ``True``)
        config (dict, optional): the resolved stage-2 config, stored in the checkpoint's hyper-parameters.
    """

    def __init__(
        self,
        graph: GraphInputs,
        model: ModelConfig,
        objective: ObjectiveConfig,
        optim: OptimConfig,
        gate: GateKind = "mgate",
        use_modalities: bool = True,
        config: dict[str, Any] | None = None,
    ):
        super().__init__()
        self.save_hyperparameters({"stage2_config": config or {}})
        self.objective = objective
        self.optim = optim
        modalities = graph.modalities if use_modalities else ()
        modality_masks = graph.modality_masks if use_modalities else ()
        # The whole R^T / R^I for the content readout, when the GNN reads fewer of its columns.
        whole: dict[str, Tensor | None] = {"image": None, "text": None}
        if modalities:
            blocks = list(modalities)
            for name, k, readout in (
                ("image", model.image_skip_last, model.readout_image),
                ("text", model.text_skip_last, model.readout_text),
            ):
                if k:
                    index = MODALITY_INPUTS.index(name)
                    if readout == "whole":
                        whole[name] = blocks[index]
                    blocks[index] = drop_last_columns(blocks[index], k, name)
            modalities = tuple(blocks)
        node_inputs = resolve_node_inputs(model.node_inputs, use_modalities)
        self.model = GraphEncoder(
            num_features=graph.features.shape[1],
            modality_dims=tuple(t.shape[1] for t in modalities),
            hidden_dim=model.hidden_dim,
            num_layers=model.num_layers,
            heads=model.heads,
            gate=gate,
            gate_normalization=model.gate_normalization,
            negative_slope=model.gate_negative_slope,
            dropout=model.dropout,
            norm=model.norm,
            activation=model.activation,
            input_proj=model.input_proj,
            node_inputs=node_inputs,
            gate_form=model.gate_form,
            gate_rank=model.gate_rank,
        )
        self.content_hops = model.content_hops
        self.feature_loss = FeatureReconstructionLoss(
            model.hidden_dim, graph.features.shape[1], objective.feature_loss
        )
        self.structure_loss = StructureReconstructionLoss(model.hidden_dim)
        self.gate_link_loss = GateLinkLoss()
        self.structure = GraphStructure(graph.edges, graph.num_nodes)
        self.register_buffer("features", graph.features.float(), persistent=False)
        self.num_modalities = len(modalities)
        for index, (embedding, mask) in enumerate(zip(modalities, modality_masks)):
            self.register_buffer(f"modality_{index}", embedding.float(), persistent=False)
            self.register_buffer(f"modality_mask_{index}", mask.bool(), persistent=False)
        for name, embedding in whole.items():
            self.register_buffer(
                f"whole_{name}", None if embedding is None else embedding.float(), persistent=False
            )

    @classmethod
    def from_config(cls, graph: GraphInputs, cfg: Stage2Config) -> Stage2System:
        """The system a resolved stage-2 config describes, over ``graph`` (training and inference alike)."""
        return cls(
            graph,
            cfg.model,
            cfg.objective,
            cfg.optim,
            gate=cfg.gate,
            use_modalities=cfg.use_modalities,
            config=cfg.to_dict(),
        )

    @property
    def modalities(self) -> list[Tensor]:
        return [getattr(self, f"modality_{index}") for index in range(self.num_modalities)]

    @property
    def modality_masks(self) -> list[Tensor]:
        return [getattr(self, f"modality_mask_{index}") for index in range(self.num_modalities)]

    def forward(
        self, keep_edges: Tensor | None = None, node_mask: Tensor | None = None, return_gate: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Node embeddings ``[N, hidden_dim]`` over the graph minus held-out edges, X masked at ``node_mask``."""
        adj_t, _ = self.structure.adj_t(keep_edges)  # held-out edges removed
        return self.model(self.node_inputs(adj_t), node_mask=node_mask, return_gate=return_gate)

    def node_inputs(self, adj_t: SparseTensor) -> NodeInputs:
        """The whole graph's :class:`NodeInputs` over ``adj_t`` (X, stage 1's modalities and their masks)."""
        return NodeInputs(self.features, adj_t, self.modalities, self.modality_masks)

    def readout_inputs(self, adj_t: SparseTensor) -> NodeInputs:
        """What R^G's content readout smooths: :meth:`node_inputs`, with all of R^T (R^I) in place of the GNN's
        shorter one under ``model.readout_text: whole`` and a ``text_skip_last`` (``readout_image``,
        ``image_skip_last``)."""
        inputs = self.node_inputs(adj_t)
        if self.whole_text is None and self.whole_image is None:
            return inputs
        modalities = list(inputs.modalities)
        for name, embedding in (("image", self.whole_image), ("text", self.whole_text)):
            if embedding is not None:
                modalities[MODALITY_INPUTS.index(name)] = embedding
        return replace(inputs, modalities=modalities)

    def compute_losses(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Named losses of one step (and the weighted total under ``"loss"``): a full-batch step's masks, or
        a mini-batch of :class:`stage2_graph.minibatch.NeighborBatches` (it carries ``n_id``)."""
        if "n_id" in batch:
            return self.minibatch_losses(batch)
        node_emb = self(batch["keep_edges"], batch["node_mask"])
        return self.objective_losses(
            node_emb,
            self.features,
            self.modalities,
            self.modality_masks,
            batch["node_mask"],
            batch["node_mask"],
            batch["pos_pairs"],
            batch["neg_pairs"],
        )

    def minibatch_losses(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """The objectives on one sampled subgraph: the model runs on the batch's own ``adj_t`` and gate inputs
        (sliced by ``n_id``); the terms cover the batch's seed nodes and pairs (local ids)."""
        node_emb, features, modalities, masks = self.minibatch_forward(batch)
        return self.objective_losses(
            node_emb,
            features,
            modalities,
            masks,
            batch["node_mask"],
            batch["loss_mask"],
            batch["pos_pairs"],
            batch["neg_pairs"],
        )

    def minibatch_forward(
        self, batch: dict[str, Tensor]
    ) -> tuple[Tensor, Tensor, list[Tensor], list[Tensor]]:
        """Embeddings ``[n, hidden_dim]`` of a sampled subgraph's nodes (exact for its seeds when every
        neighbour was sampled), and the batch's gate inputs: X ``[n, F]``, modalities and their masks."""
        n_id = batch["n_id"]
        adj_t, _ = sampled_adj_t(batch["edge_index"], n_id.numel())
        features = self.features.index_select(0, n_id)
        modalities = [m.index_select(0, n_id) for m in self.modalities]
        masks = [m.index_select(0, n_id) for m in self.modality_masks]
        inputs = NodeInputs(features, adj_t, modalities, masks, batch["log_degree"])
        node_emb = self.model(inputs, node_mask=batch["node_mask"])
        return node_emb, features, modalities, masks

    def objective_losses(
        self,
        node_emb: Tensor,
        features: Tensor,
        modalities: list[Tensor],
        modality_masks: list[Tensor],
        node_mask: Tensor,
        loss_mask: Tensor,
        pos_pairs: Tensor,
        neg_pairs: Tensor,
    ) -> dict[str, Tensor]:
        """Feature loss on the rows of ``loss_mask``, structure and gate-link losses on the pairs."""
        if bool(loss_mask.any()):
            losses = self.feature_loss(node_emb, features, loss_mask)
        else:  # a mini-batch whose seed share has no masked node: the decoder still takes part, with zero
            # weight, so that every DDP rank reduces the same gradients (a rank without it hangs the others)
            every_row = torch.ones_like(loss_mask)
            losses = {k: v * 0.0 for k, v in self.feature_loss(node_emb, features, every_row).items()}
        if pos_pairs.shape[1]:
            losses.update(self.structure_loss(node_emb, pos_pairs, neg_pairs))
        else:
            losses["structure_loss"] = node_emb.new_zeros(())
        losses.update(
            self.gate_link_losses(
                {"pos_pairs": pos_pairs, "neg_pairs": neg_pairs, "node_mask": node_mask},
                node_emb,
                features,
                modalities,
                modality_masks,
            )
        )
        losses["loss"] = (
            self.objective.feature_weight * losses["feature_loss"]
            + self.objective.structure_weight * losses["structure_loss"]
            + self.objective.gate_link_weight * losses["gate_link_loss"]
        )
        return losses

    def gate_link_losses(
        self,
        batch: dict[str, Tensor],
        node_emb: Tensor,
        features: Tensor | None = None,
        modalities: list[Tensor] | None = None,
        modality_masks: list[Tensor] | None = None,
    ) -> dict[str, Tensor]:
        """The gate's link prediction on the step's held-out edges and negatives (both directions);
        zero for the uniform gate, without held-out edges, or with weight 0. The gate inputs default to the
        whole graph's."""
        pos, neg = batch["pos_pairs"], batch["neg_pairs"]
        if self.model.gate is None or not pos.shape[1] or self.objective.gate_link_weight == 0:
            zero = node_emb.new_zeros(())
            return {"gate_link_loss": zero, "gate_link_acc": zero}
        pairs = torch.cat([pos, pos.flip(0), neg, neg.flip(0)], dim=1)
        inputs = NodeInputs(
            self.features if features is None else features,
            None,  # pair scores read per-node terms only
            self.modalities if modalities is None else modalities,
            self.modality_masks if modality_masks is None else modality_masks,
        )
        logits = self.model.gate_pair_logits(inputs, pairs, node_mask=batch["node_mask"])
        num_pos = 2 * pos.shape[1]
        return self.gate_link_loss(logits[:num_pos], logits[num_pos:])

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        losses = self.compute_losses(batch)
        for name, value in losses.items():
            self.log(
                f"train/{name}", value, on_step=True, on_epoch=False, prog_bar=name == "loss", batch_size=1
            )
        return {name: (value if name == "loss" else value.detach()) for name, value in losses.items()}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.optim.lr, weight_decay=self.optim.weight_decay)


class LossHistory(L.Callback):
    """Keeps the first and last value of every named loss (no device sync until the end)."""

    def __init__(self):
        self.first: dict[str, Tensor] = {}
        self.last: dict[str, Tensor] = {}
        self.steps = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        for name, value in outputs.items():
            value = value.detach()
            self.first.setdefault(name, value)
            self.last[name] = value
        self.steps += 1

    def summary(self) -> dict[str, float]:
        metrics: dict[str, float] = {"steps_run": float(self.steps)}
        for name in self.first:
            metrics[f"{name}_first"] = float(self.first[name])
            metrics[f"{name}_last"] = float(self.last[name])
        return metrics
