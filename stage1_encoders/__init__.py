"""Stage 1: fine-tune an open_clip ViT and a BERT with LM, ITA and graph-contrastive losses, and export
per-user image and text embeddings to the cache (docs/stage1.md). Public entry: ``run_stage1(cfg, corpus=None)``
(also ``python -m stage1_encoders.run``).

May import ``corpus``, ``cache`` and ``mmga_common``; never ``stage2_graph`` (the stages meet through ``cache``) or
``bridge``.
"""

from stage1_encoders.config import ConfigError, Stage1Config
from stage1_encoders.stage import Stage1Result, run_stage1

__all__ = ["ConfigError", "Stage1Config", "Stage1Result", "run_stage1"]
