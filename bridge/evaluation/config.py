"""The evaluation's configuration: the downstream heads, their selection grid, and the peers' settings.

``seeds`` here are the downstream heads' seeds (each head is initialised and trained once per seed); the
training seeds of the stages are the bridge's (``BridgeConfig.training_seeds``).
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Literal

from mmga_common.config import ConfigError, check_bounds, config_field

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
    gcn_hidden: int = 64
    gcn_dropout: float = 0.5
    gcn_lr: float = 1e-2
    gcn_weight_decays: tuple[float, ...] = (5e-4, 5e-3)
    gcn_max_epochs: int = 300
    gcn_patience: int = 30

    def __post_init__(self) -> None:
        check_bounds(self)
        if any(k < 1 or k > 10 for k in self.sgc_hops):
            raise ConfigError(
                "config", None, "sgc_hops", f"each hop count must be in 1..10, got {list(self.sgc_hops)}"
            )
        for name in ("head_seeds", "gcn_weight_decays", "sgc_hops"):
            if not getattr(self, name):
                raise ConfigError("config", None, name, "must list at least one value")
        for h in self.heads:
            if h not in typing.get_args(HeadType):
                raise ConfigError("config", None, "heads", f"unknown head {h!r}; expected 'linear' or 'mlp'")
