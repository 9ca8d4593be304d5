"""The evaluation's configuration: the downstream heads, their selection grid, and the peers' settings.

``seeds`` here are the downstream heads' seeds (each head is initialised and trained once per seed); the
training seeds of the stages are the bridge's (``BridgeConfig.training_seeds``).
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Literal

from mmga_common.config import ConfigError, check_bounds, config_field
from mmga_common.runtime import TorchDevice as Device

HeadType = Literal["linear", "mlp"]


@dataclass(frozen=True)
class EvalConfig:
    """Downstream heads and their selection grid."""

    head_seeds: tuple[int, ...] = config_field(
        (0, 1, 2), "the downstream heads' seeds: every head is trained once per seed"
    )
    heads: tuple[HeadType, ...] = ("linear",)
    weight_decays: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1)
    hidden: int = 64
    dropout: float = 0.2
    lr: float = 1e-2
    max_epochs: int = 300
    patience: int = 25
    fans_buckets: int = config_field(5, "quantile buckets of the fans task", ge=2)
    # the peer rows (bridge.evaluation.peers)
    sgc_hops: tuple[int, ...] = config_field(
        (1, 2, 3), "propagation hops K of the SGC peer to choose from on val (with the head and weight decay)"
    )
    network_seeds: tuple[int, ...] = config_field(
        (0,),
        "the seeds of every network trained end to end (GCN, GATv2, the fine-tuned rows): one network per seed, "
        "learning rate and weight decay; the spread that counts is over training seeds",
    )
    gcn_hidden: int = 64
    gcn_dropout: float = 0.5
    gcn_lrs: tuple[float, ...] = config_field(
        (3e-3, 1e-2),
        "learning rates to choose from on val, for every network trained end to end (the GCN and GATv2 peers "
        "and the fine-tuned rows alike)",
    )
    gcn_weight_decays: tuple[float, ...] = config_field(
        (5e-4, 5e-3), "weight decays to choose from on val, for every network trained end to end"
    )
    gcn_max_epochs: int = config_field(
        300, "full-batch epochs at most, every network trained end to end", ge=1
    )
    gcn_patience: int = config_field(30, "epochs without a better val loss before stopping", ge=1)
    gat_heads: int = config_field(8, "attention heads of the GATv2 peer's hidden layer", ge=1)
    cs_alphas: tuple[tuple[float, float], ...] = config_field(
        ((0.5, 0.5), (0.5, 0.8), (1.0, 0.5), (1.0, 0.8)),
        "(correction, smoothing) strengths of Correct & Smooth to choose from on val",
    )
    cs_layers: int = config_field(50, "propagation steps of Correct & Smooth's correct and smooth", ge=1)
    device: Device = config_field(
        "auto",
        "where the downstream heads and the networks trained end to end (the GCN and GATv2 peers, the fine-tuned "
        "rows) train: auto (a CUDA device when torch sees one, else the CPU), cpu or cuda; the propagations of SGC "
        "and Correct & Smooth stay on the CPU",
    )

    def __post_init__(self) -> None:
        check_bounds(self)
        if any(k < 1 or k > 10 for k in self.sgc_hops):
            raise ConfigError(
                "config", None, "sgc_hops", f"each hop count must be in 1..10, got {list(self.sgc_hops)}"
            )
        for name in ("head_seeds", "network_seeds", "gcn_lrs", "gcn_weight_decays", "sgc_hops", "cs_alphas"):
            if not getattr(self, name):
                raise ConfigError("config", None, name, "must list at least one value")
        if any(len(pair) != 2 or not all(0.0 <= a <= 1.0 for a in pair) for pair in self.cs_alphas):
            raise ConfigError(
                "config",
                None,
                "cs_alphas",
                f"each entry must be two strengths in [0, 1], got {self.cs_alphas}",
            )
        if self.device not in typing.get_args(Device):
            raise ConfigError(
                "config", None, "device", f"unknown device {self.device!r}; expected 'auto', 'cpu' or 'cuda'"
            )
        for h in self.heads:
            if h not in typing.get_args(HeadType):
                raise ConfigError("config", None, "heads", f"unknown head {h!r}; expected 'linear' or 'mlp'")
