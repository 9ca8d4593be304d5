"""Stage 1: fine-tune an open_clip ViT and a BERT with LM, ITA and graph-contrastive losses, and export
per-user image and text embeddings to the cache (docs/stage1.md). Public entry: ``run_stage1(cfg, corpus=None)``
(also ``python -m stage1_encoders.run``).

May import ``corpus``, ``cache`` and ``mmga_common``; never ``stage2_graph`` (the stages meet through ``cache``) or
``bridge``. ``run_stage1`` is imported on first use, so that reading a config (``stage1_encoders.config``) does not
import torch, Lightning and the encoders.
"""

from stage1_encoders.config import ConfigError, Stage1Config

__all__ = [
    "ConfigError",
    "Stage1Config",
    "Stage1Result",
    "clear_lower_states_memo",
    "prepare_text_states",
    "run_stage1",
]


def __getattr__(name: str):
    if name in ("Stage1Result", "prepare_text_states", "run_stage1"):
        from stage1_encoders import stage

        return getattr(stage, name)
    if name == "clear_lower_states_memo":
        from stage1_encoders import encoders

        return encoders.clear_lower_states_memo
    raise AttributeError(f"module 'stage1_encoders' has no attribute {name!r}")
