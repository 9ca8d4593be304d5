"""Stage 2 of MMGA: the multimodal-mixture GNN with M-Gate, pre-trained by feature and structure masking.

Public entry: ``run_stage2(cfg, corpus=None) -> StageResult`` (also ``python -m stage2_graph.run``).
See docs/stage2.md.

May import ``corpus``, ``cache`` and ``mmga_common``; never ``stage1_encoders`` (the stages meet through ``cache``) or
``bridge``.
"""

from stage2_graph.adjacency import GraphStructure
from stage2_graph.config import (
    ConfigError,
    ModelConfig,
    ObjectiveConfig,
    OptimConfig,
    Stage2Config,
    TrainerConfig,
)
from stage2_graph.data import GraphInputs, MaskingDataset, Stage2InputError, load_graph_inputs
from stage2_graph.gate import GateTerms, MGate, uniform_gate
from stage2_graph.layers import MGateConv
from stage2_graph.losses import FeatureReconstructionLoss, GateLinkLoss, StructureReconstructionLoss
from stage2_graph.model import GraphEncoder
from stage2_graph.pipeline import Stage2Result, run_stage2

__all__ = [
    "ConfigError",
    "FeatureReconstructionLoss",
    "GateLinkLoss",
    "GateTerms",
    "GraphEncoder",
    "GraphInputs",
    "GraphStructure",
    "MGate",
    "MGateConv",
    "MaskingDataset",
    "ModelConfig",
    "ObjectiveConfig",
    "OptimConfig",
    "Stage2Config",
    "Stage2InputError",
    "Stage2Result",
    "StructureReconstructionLoss",
    "TrainerConfig",
    "load_graph_inputs",
    "run_stage2",
    "uniform_gate",
]
