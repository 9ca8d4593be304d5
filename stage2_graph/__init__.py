"""Stage 2 of MMGA: the multimodal-mixture GNN with M-Gate, pre-trained by feature and structure masking.

Public entry: ``run_stage2(cfg, corpus=None) -> StageResult`` (also ``python -m stage2_graph.run``).
See docs/stage2.md.

May import ``corpus``, ``cache`` and ``mmga_common``; never ``stage1_encoders`` (the stages meet through ``cache``) or
``bridge``.
"""

from stage2_graph.config import (
    ConfigError,
    ModelConfig,
    ObjectiveConfig,
    OptimConfig,
    Stage2Config,
    TrainerConfig,
)

# The rest imports torch, torch-sparse and Lightning: imported on first use, so that reading a config
# (``stage2_graph.config``) and the CLI's --help stay light.
_LAZY = {
    "GraphStructure": "stage2_graph.adjacency",
    "GraphInputs": "stage2_graph.data",
    "MaskingDataset": "stage2_graph.data",
    "Stage2InputError": "stage2_graph.data",
    "load_graph_inputs": "stage2_graph.data",
    "GateTerms": "stage2_graph.gate",
    "MGate": "stage2_graph.gate",
    "uniform_gate": "stage2_graph.gate",
    "MGateConv": "stage2_graph.layers",
    "FeatureReconstructionLoss": "stage2_graph.losses",
    "GateLinkLoss": "stage2_graph.losses",
    "StructureReconstructionLoss": "stage2_graph.losses",
    "GraphEncoder": "stage2_graph.model",
    "NodeInputs": "stage2_graph.model",
    "Stage2Result": "stage2_graph.pipeline",
    "run_stage2": "stage2_graph.pipeline",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'stage2_graph' has no attribute {name!r}")


__all__ = [
    "ConfigError",
    "FeatureReconstructionLoss",
    "GateLinkLoss",
    "GateTerms",
    "GraphEncoder",
    "NodeInputs",
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
