"""Fine-tuning a pre-trained stage 2 on a downstream task (the paper's fine-tuning stage, §2.4): the GNN with its
pre-trained weights and gate, plus a linear task head, trained end to end over the cached R^I, R^T and X.

:func:`finetune_factory` reads a stage-2 checkpoint once and hands back a function that builds, per call, a fresh
:class:`FinetuneNetwork` from it: with the checkpoint's weights (``pretrained``) or with the same architecture
randomly initialised from the caller's torch seed (``scratch``). The two differ only by their initial weights, so
their difference is what pre-training buys. The training loop and the selection on val are the caller's (the
bridge's evaluation, ``bridge.evaluation.networks``); the encoders of stage 1 stay frozen (their embeddings come
from the cache).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from cache import EncoderEmbeddings
from stage2_graph.export import graph_representation, readout
from stage2_graph.infer import graph_inputs, read_checkpoint_config
from stage2_graph.system import Stage2System

Init = Literal["pretrained", "scratch"]


class FinetuneNetwork(nn.Module):
    """A stage-2 system's GNN over its whole graph, then a linear head: ``forward()`` -> ``[N, out_dim]``.

    The head reads R^G as stage 2 exports it (``graph_representation``): the GNN's output, trained through, and
    its content readout (the node-input content smoothed with the gate's edge relevance). The readout is computed
    once, from the network's **initial** gate, and held fixed: training through it cost about 6x per epoch
    (908-wide smoothing backward at the default widths, measured on the default corpus), and it has no parameters
    of its own. So the gate is fine-tuned only through the GNN's propagation.

    Args:
        system: the stage-2 system (its GNN is trained; the pre-training loss heads are not).
        out_dim: the task's output width.
        scratch: re-initialise the GNN (``reset_parameters``) after the head is drawn, from the current random
            stream, which is then restored: the training that follows sees the same random numbers either way.
    """

    def __init__(self, system: Stage2System, out_dim: int, scratch: bool = False):
        super().__init__()
        self.system = system
        self.adj_t, _ = system.structure.adj_t()
        system.eval()
        with torch.no_grad():
            width = graph_representation(system, self.adj_t).shape[1]
        self.head = nn.Linear(width, out_dim)  # drawn first: the same draw for a pretrained and a scratch GNN
        if scratch:
            with torch.random.fork_rng():
                system.model.reset_parameters()
        with torch.no_grad():
            node_emb, gate = system.model(system.node_inputs(self.adj_t), return_gate=True)
            full, _ = readout(system, self.adj_t, node_emb, gate)
        self.register_buffer("content", full[:, node_emb.shape[1] :].clone(), persistent=False)

    def features(self) -> Tensor:
        """``[N, D]`` what the head reads: the GNN's output over the whole graph and the fixed content readout."""
        node_emb = self.system.model(self.system.node_inputs(self.adj_t))
        return torch.cat([node_emb, self.content.to(node_emb.dtype)], dim=1)

    def forward(self) -> Tensor:
        return self.head(self.features())

    def _apply(self, fn, recurse=True):
        """``to(device)`` and the like: the system's buffers move, and the adjacency is built again from them."""
        super()._apply(fn, recurse)
        self.adj_t, _ = self.system.structure.adj_t()
        return self

    def parameter_groups(self) -> list[dict[str, Any]]:
        """The GNN's parameters and the head's (the system's pre-training loss heads are not trained here)."""
        return [{"params": list(self.system.model.parameters())}, {"params": list(self.head.parameters())}]


def finetune_factory(
    checkpoint: Path,
    features: np.ndarray,
    edges: np.ndarray,
    fingerprint: str,
    encoder_embeddings: EncoderEmbeddings | None,
    init: Init,
) -> Callable[[int], tuple[FinetuneNetwork, list[dict[str, Any]]]]:
    """``make(out_dim) -> (network, optimizer parameter groups)`` for the stage-2 model of ``checkpoint`` over
    the graph (X ``[N, F]``, edges ``[E, 2]``, stage 1's embeddings when the model reads them).

    ``init="pretrained"``: every call starts from the checkpoint's weights. ``init="scratch"``: from the same
    architecture's ``reset_parameters`` under the current torch seed. The head is drawn first and the scratch
    reset does not advance the random stream, so with the same seed only the GNN's initial weights differ.
    """
    if init not in ("pretrained", "scratch"):
        raise ValueError(f"init must be 'pretrained' or 'scratch', got {init!r}")
    cfg = read_checkpoint_config(checkpoint)
    graph = graph_inputs(features, edges, fingerprint, encoder_embeddings if cfg.needs_modalities else None)
    template = Stage2System.from_config(graph, cfg)
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    template.load_state_dict(state, strict=True)

    def make(out_dim: int) -> tuple[FinetuneNetwork, list[dict[str, Any]]]:
        network = FinetuneNetwork(copy.deepcopy(template), out_dim, scratch=init == "scratch")
        return network, network.parameter_groups()

    return make
