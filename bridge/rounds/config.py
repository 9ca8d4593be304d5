"""The bridge's configuration: a config file (JSON or YAML) with sections, plus dotted command-line overrides.

File layout (every section optional)::

    rounds: 3
    seed: 0                                # first training seed
    seeds: 5                               # training seeds: every variant is trained with seed, seed+1, ...
    preset: default                        # the stage defaults: bridge/presets/<preset>.json (default, real)
    ablations: false                       # MMGA's ablations too: true (all), or names of bridge.variants.ABLATIONS
    finetune: true                         # the fine-tuned rows (MMGA's GNN + head, and the same from scratch)
    encoder_peers: false                   # peer_sgc's and peer_gcn's recipes over MMGA's encoders (mmga_sgc, mmga_gcn)
    skip_graph_head: true                  # stage 2's GNN reads R^T without the graph head's columns (docs/stage2.md)
    synthetic: {num_users: 800}            # SyntheticConfig fields, for the generated default corpus
    stage1: {trainer: {max_steps: 40}}     # Stage1Config fields (nested or dotted keys)
    stage2: {trainer.max_steps: 60}        # Stage2Config fields
    frozen: {model.text_model: pretrained, model.text_name_or_path: DIR}  # the frozen peers' encoders (stage 1)
    eval: {head_seeds: [0, 1, 2]}          # EvalConfig fields (the downstream heads' seeds, ...)
    baselines: true

Precedence: the bridge's defaults < the config file < command-line flags (``--stage1 key=value``, ...).
Reading, merging and the ``KEY=VALUE`` overrides are ``mmga_common.config``'s. Stage sections are kept as
nested dicts of overrides here; ``bridge.rounds.stages.stage_template`` turns them into each variant's typed stage config
(``bridge.rounds.stages.check_stage_configs`` builds them all, once, before any work starts), and each round's config is
``dataclasses.replace`` of that template with the fields only the bridge sets.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge.evaluation.config import EvalConfig
from bridge.variants import ablation_names
from mmga_common.config import (
    DEFAULT_SOURCE,
    ConfigError,
    check_bounds,
    config_field,
    from_dict,
    load_file,
    nest,
    parse_override,
    set_dotted,
)


@dataclass(frozen=True)
class BridgeConfig:
    """Everything one bridge run needs besides its run folder."""

    rounds: int = config_field(
        3, "rounds of stage 1 -> stage 2 (at most 100: each round trains every variant)", ge=1, le=100
    )
    seed: int = config_field(0, "first training seed", ge=0)
    seeds: int = config_field(
        5, "training seeds: every variant is trained with seed, seed+1, ... (at most 100)", ge=1, le=100
    )
    preset: str = "default"
    corpus: Path | None = None
    synthetic: dict[str, Any] = field(default_factory=dict)
    stage1: dict[str, Any] = field(default_factory=dict)
    stage2: dict[str, Any] = field(default_factory=dict)
    frozen: dict[str, Any] = field(default_factory=dict)  # stage-1 overrides of the frozen variant's encoders
    eval: EvalConfig = field(default_factory=EvalConfig)
    baselines: bool = True
    ablations: tuple[str, ...] = config_field(
        (),
        "MMGA's ablations to train next to it, names of bridge.variants.ABLATIONS (true in a file or "
        "BridgeConfig(ablations=True): every one)",
    )
    finetune: bool = config_field(
        True,
        "the fine-tuned rows: MMGA's last-round GNN + a task head trained end to end, and the same from scratch",
    )
    encoder_peers: bool = config_field(
        False,
        "the rows mmga_sgc and mmga_gcn (with the baselines): peer_sgc's and peer_gcn's own recipes over MMGA's "
        "last-round encoders, each compared with the same peer over the no-alignment and the frozen encoders; off "
        "by default: they add about 16% to the default run, which would then pass 10 minutes on a slow 2-core day",
    )
    skip_graph_head: bool = config_field(
        True,
        "stage 2's GNN and gate read R^T and R^I without stage 1's graph-head columns: each variant's stage-2 "
        "model.text_skip_last (image_skip_last) set to its stage-1 model.text_head_dim (image_head_dim); the "
        "default preset's readout_text=whole and readout_image=whole keep them in R^G's content readout; false: "
        "stage 2 reads all of R^T and R^I, the paper's input (docs/stage2.md, 'What stage 2 reads of R^T')",
    )

    def __post_init__(self) -> None:
        check_bounds(self)
        try:
            names = ablation_names(self.ablations)
        except ValueError as err:
            raise ConfigError(DEFAULT_SOURCE, None, "ablations", str(err)) from None
        object.__setattr__(self, "ablations", names)  # frozen: normalised once, here

    @property
    def training_seeds(self) -> tuple[int, ...]:
        """The training seeds every variant is trained with: ``seed, seed + 1, ..., seed + seeds - 1``."""
        return tuple(range(self.seed, self.seed + self.seeds))


SECTIONS = tuple(f.name for f in dataclasses.fields(BridgeConfig))
_OVERRIDE_SECTIONS = (
    "synthetic",
    "stage1",
    "stage2",
    "frozen",
    "eval",
)  # dicts that take --<section> KEY=VALUE


def _listify(cls: type, section: dict[str, Any]) -> dict[str, Any]:
    """One value where a list is expected is a list of one (``--eval seeds=0``)."""
    hints = typing.get_type_hints(cls)
    return {
        key: [value]
        if typing.get_origin(hints.get(key)) is tuple and not isinstance(value, (list, tuple))
        else value
        for key, value in section.items()
    }


def build_config(
    file: Path | None = None,
    *,
    rounds: int | None = None,
    seed: int | None = None,
    seeds: int | None = None,
    preset: str | None = None,
    corpus: Path | None = None,
    stage1: list[str] | None = None,
    stage2: list[str] | None = None,
    eval_overrides: list[str] | None = None,
    synthetic: list[str] | None = None,
    frozen: list[str] | None = None,
    baselines: bool | None = None,
    ablations: bool | list[str] | None = None,
    finetune: bool | None = None,
    skip_graph_head: bool | None = None,
    encoder_peers: bool | None = None,
) -> BridgeConfig:
    """Merge the config file and the command-line values (which win) into a :class:`BridgeConfig`."""
    data: dict[str, Any] = {}
    lines: dict[str, int] = {}
    source = "command line"
    if file is not None:
        data, lines = load_file(file)
        source = str(file)
        for key in data:
            if key not in SECTIONS:
                raise ConfigError(
                    source, lines.get(key), key, f"unknown section (known: {', '.join(SECTIONS)})"
                )
    for name, cli in (
        ("synthetic", synthetic),
        ("frozen", frozen),
        ("stage1", stage1),
        ("stage2", stage2),
        ("eval", eval_overrides),
    ):
        value = data.get(name) or {}
        if not isinstance(value, dict):
            raise ConfigError(source, lines.get(name), name, "must be a mapping of fields")
        tree = nest(value)
        for text in cli or []:
            key, val = parse_override(text, f"--{name}")
            tree = set_dotted(tree, key, val)
        data[name] = tree
    data["eval"] = _listify(EvalConfig, data["eval"])
    given = {
        "rounds": rounds,
        "seed": seed,
        "seeds": seeds,
        "preset": preset,
        "corpus": corpus,
        "baselines": baselines,
        "ablations": ablations,
        "finetune": finetune,
        "skip_graph_head": skip_graph_head,
        "encoder_peers": encoder_peers,
    }
    for name, value in given.items():
        if value is not None:
            data[name] = str(value) if isinstance(value, Path) else value
            lines.pop(name, None)
    if "ablations" in data:  # true / false / names, from the file or --ablations [NAME ...]
        try:
            data["ablations"] = list(ablation_names(data["ablations"]))
        except (TypeError, ValueError) as err:
            raise ConfigError(source, lines.get("ablations"), "ablations", str(err)) from None
    return from_dict(BridgeConfig, data, source, lines)
