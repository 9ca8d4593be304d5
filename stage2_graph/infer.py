"""Inference with a trained stage 2: rebuild the system from a checkpoint's saved config, load its weights
strictly and compute R^G and the gates (``compute_graph_outputs``) on any corpus's graph. No training.

The model is built by ``Stage2System`` from the resolved ``Stage2Config`` stored in the checkpoint, so every
model field the config has (now or later) reaches the model exactly as in training.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cache import EncoderEmbeddings, GraphOutputs
from mmga_common.trainer import upgrade_stored_config
from stage2_graph.config import ConfigError, Stage2Config
from stage2_graph.data import GraphInputs, Stage2InputError
from stage2_graph.export import compute_graph_outputs
from stage2_graph.system import Stage2System


def read_checkpoint_config(checkpoint: Path) -> Stage2Config:
    """The resolved config stored in a stage-2 checkpoint's hyper-parameters.

    Raises:
        Stage2InputError: the file is missing, unreadable or not a stage-2 checkpoint.
        ConfigError: the stored config does not fit this code (a checkpoint from another version).
    """
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise Stage2InputError(f"{checkpoint}: stage-2 checkpoint not found")
    try:
        payload = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means "not our checkpoint"
        raise Stage2InputError(f"{checkpoint}: cannot read the checkpoint: {err}") from None
    stored = (
        (payload.get("hyper_parameters") or {}).get("stage2_config") if isinstance(payload, dict) else None
    )
    if not stored or "state_dict" not in payload:
        raise Stage2InputError(f"{checkpoint}: not a stage-2 checkpoint (no state_dict / stage2_config)")
    try:
        cfg = Stage2Config.from_dict(
            upgrade_stored_config(stored), source=f"{checkpoint} (stored stage2_config)"
        )
    except ConfigError as err:
        raise ConfigError(
            err.source, err.line, err.field, f"{err.msg} (a checkpoint from another version of stage 2?)"
        ) from None
    return cfg


def graph_inputs(
    features: np.ndarray,
    edges: np.ndarray,
    fingerprint: str,
    encoder_embeddings: EncoderEmbeddings | None = None,
) -> GraphInputs:
    """``GraphInputs`` from in-memory arrays: X ``[N, F]``, edges ``[E, 2]`` and optionally stage 1's output."""
    inputs = GraphInputs(
        torch.from_numpy(np.asarray(features, dtype=np.float32)),
        torch.from_numpy(np.asarray(edges, dtype=np.int64).reshape(-1, 2)),
        fingerprint,
    )
    if encoder_embeddings is not None:
        emb = encoder_embeddings
        inputs.modalities = (torch.from_numpy(emb.user_image_emb), torch.from_numpy(emb.user_text_emb))
        inputs.modality_masks = (torch.from_numpy(emb.image_mask), torch.from_numpy(emb.text_mask))
    return inputs


def load_trained_system(
    checkpoint: Path, graph: GraphInputs, cfg: Stage2Config | None = None
) -> Stage2System:
    """The stage-2 system of ``checkpoint`` over ``graph``, its weights loaded strictly, in eval mode."""
    cfg = cfg or read_checkpoint_config(checkpoint)
    if cfg.needs_modalities and not graph.modalities:
        raise Stage2InputError(
            f"{checkpoint}: this model reads stage 1's embeddings; pass them in the graph inputs"
        )
    system = Stage2System.from_config(graph, cfg)
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    try:
        system.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise Stage2InputError(
            f"{checkpoint}: the weights do not fit the model its config describes (written by another version, "
            f"or stage 1's embeddings have other widths?): {first}"
        ) from None
    return system.eval()


def infer_graph_outputs(
    checkpoint: Path,
    features: np.ndarray,
    edges: np.ndarray,
    fingerprint: str,
    encoder_embeddings: EncoderEmbeddings | None = None,
) -> tuple[Stage2Config, GraphOutputs]:
    """R^G ``[N, hidden_dim]`` and the gates of a trained stage 2 on the graph (X, edges), no gradients."""
    cfg = read_checkpoint_config(checkpoint)
    graph = graph_inputs(features, edges, fingerprint, encoder_embeddings if cfg.needs_modalities else None)
    system = load_trained_system(checkpoint, graph, cfg)
    return cfg, compute_graph_outputs(system)
