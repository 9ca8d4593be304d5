"""Stage 1's checkpoints: reading one (weights only), checking it fits the configured architecture, and loading
its weights into a system strictly (heads taken whole or not at all)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from stage1_encoders.config import ConfigError, Stage1Config
from stage1_encoders.encoders import restore_frozen_image, restore_frozen_text
from stage1_encoders.system import HEAD_NAMES, Stage1System, upgrade_legacy_state_dict

log = logging.getLogger(__name__)

# Architecture fields that must match between a checkpoint and the config continuing from it.
_ARCH_FIELDS = (
    "image_model",
    "text_model",
    "text_name_or_path",
    "text_hidden_size",
    "text_layers",
    "text_heads",
    "text_intermediate_size",
    "text_vocab_size",
)


def load_stage1_checkpoint(path: Path) -> dict:
    if not Path(path).is_file():
        raise ConfigError(str(path), None, None, "checkpoint file not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means "not our checkpoint"
        raise ConfigError(str(path), None, None, f"cannot read the checkpoint: {err}") from None
    if "state_dict" not in payload or "stage1_config" not in payload:
        raise ConfigError(
            str(path), None, None, "is not a stage-1 checkpoint (no state_dict / stage1_config)"
        )
    return payload


def check_architecture(cfg: Stage1Config, payload: dict, path: Path) -> None:
    stored = payload["stage1_config"].get("model", {})
    for name in _ARCH_FIELDS:
        if name in stored and stored[name] != getattr(cfg.model, name):
            raise ConfigError(
                "config",
                None,
                f"model.{name}",
                f"is {getattr(cfg.model, name)!r} but checkpoint {path} was trained with {stored[name]!r}; "
                "a round continues with the same architecture",
            )


def load_weights(system: Stage1System, payload: dict, path: Path) -> None:
    """Load the checkpoint's weights strictly. A head is taken whole or not at all: one for a loss switched off
    now is dropped, and one for a loss that was off in the previous round starts fresh. Checkpoints from before
    the heads moved out of the losses are renamed on the way in."""
    state = restore_frozen_text(
        system.text_encoder, upgrade_legacy_state_dict(payload["state_dict"]), payload, path
    )
    state = restore_frozen_image(system.image_encoder, state, payload, path)
    encoder_missing = [
        k for k in system.state_dict() if k.startswith(("image_encoder.", "text_encoder.")) and k not in state
    ]
    if encoder_missing:
        raise ConfigError(
            str(path), None, None, f"checkpoint lacks encoder weights, e.g. {encoder_missing[:3]}"
        )
    built = {name for name in HEAD_NAMES if getattr(system, name) is not None}
    stored = {k.split(".")[0] for k in state if k.split(".")[0] in HEAD_NAMES}
    if stored - built:
        log.info("stage 1: checkpoint heads not used now: %s", sorted(stored - built))
        state = {k: v for k, v in state.items() if k.split(".")[0] not in stored - built}
    if built - stored:
        log.info("stage 1: heads not in %s start fresh: %s", path, sorted(built - stored))
        state.update({k: v for k, v in system.state_dict().items() if k.split(".")[0] in built - stored})
    try:
        system.load_state_dict(state)
    except RuntimeError as err:
        raise ConfigError(str(path), None, None, f"weights do not fit the configured model: {err}") from None
