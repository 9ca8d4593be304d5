"""The bridge's configuration: a config file (JSON or YAML) with sections, plus dotted command-line overrides.

File layout (every section optional)::

    rounds: 3
    seed: 0                                # first training seed
    seeds: 3                               # training seeds: every variant is trained with seed, seed+1, ...
    preset: default                        # the stage defaults: bridge/presets/<preset>.json (default, real)
    ablations: false                       # also train MMGA's ablations (bridge.variants.ABLATIONS)
    synthetic: {num_users: 800}            # SyntheticConfig fields, for the generated default corpus
    stage1: {trainer: {max_steps: 40}}     # Stage1Config fields (nested or dotted keys)
    stage2: {trainer.max_steps: 60}        # Stage2Config fields
    eval: {seeds: [0, 1, 2]}               # EvalConfig fields
    baselines: true

Precedence: the bridge's defaults < the config file < command-line flags (``--stage1 key=value``, ...).
Stage sections are kept as nested dicts of overrides here; ``bridge.stages`` turns them into each stage's
typed config for every variant and round (the stage's own ``from_dict`` checks names and types).
"""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

HeadType = Literal["linear", "mlp"]

SECTIONS = (
    "rounds",
    "seed",
    "seeds",
    "corpus",
    "synthetic",
    "stage1",
    "stage2",
    "eval",
    "baselines",
    "ablations",
)


class BridgeConfigError(ValueError):
    """A bridge config value that cannot be used; the message names the source (file and line) and field."""


@dataclass(frozen=True)
class EvalConfig:
    """Downstream heads and their selection grid."""

    seeds: tuple[int, ...] = (0, 1, 2)
    heads: tuple[HeadType, ...] = ("linear",)
    weight_decays: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1)
    hidden: int = 64
    dropout: float = 0.2
    lr: float = 1e-2
    max_epochs: int = 300
    patience: int = 25
    fans_buckets: int = 5
    # the peer rows (bridge.peers)
    sgc_hops: int = 2
    gcn_hidden: int = 64
    gcn_dropout: float = 0.5
    gcn_lr: float = 1e-2
    gcn_weight_decays: tuple[float, ...] = (5e-4, 5e-3)
    gcn_max_epochs: int = 300
    gcn_patience: int = 30

    def __post_init__(self) -> None:
        if self.sgc_hops < 1:
            raise ValueError(f"eval.sgc_hops must be >= 1, got {self.sgc_hops}")
        if not self.gcn_weight_decays:
            raise ValueError("eval.gcn_weight_decays must list at least one value")
        if not self.seeds:
            raise ValueError("eval.seeds must list at least one seed")
        for h in self.heads:
            if h not in ("linear", "mlp"):
                raise ValueError(f"eval.heads: unknown head {h!r}; expected 'linear' or 'mlp'")
        if self.fans_buckets < 2:
            raise ValueError(f"eval.fans_buckets must be >= 2, got {self.fans_buckets}")


@dataclass(frozen=True)
class BridgeConfig:
    """Everything one bridge run needs besides its run folder."""

    rounds: int = 3
    seed: int = 0
    seeds: int = 3
    preset: str = "default"
    corpus: Path | None = None
    synthetic: dict[str, Any] = field(default_factory=dict)
    stage1: dict[str, Any] = field(default_factory=dict)
    stage2: dict[str, Any] = field(default_factory=dict)
    eval: EvalConfig = field(default_factory=EvalConfig)
    baselines: bool = True
    ablations: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.rounds, int) or self.rounds < 1:
            raise BridgeConfigError(f"field 'rounds' must be an int >= 1, got {self.rounds!r}")
        if not isinstance(self.seeds, int) or self.seeds < 1:
            raise BridgeConfigError(f"field 'seeds' must be an int >= 1, got {self.seeds!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise BridgeConfigError(f"field 'seed' must be an int >= 0, got {self.seed!r}")

    @property
    def training_seeds(self) -> tuple[int, ...]:
        """The training seeds every variant is trained with: ``seed, seed + 1, ..., seed + seeds - 1``."""
        return tuple(range(self.seed, self.seed + self.seeds))


def parse_value(text: str) -> Any:
    """A command-line value as YAML (``10``, ``true``, ``null``, ``[0, 1]``), with numbers such as ``1e-3``
    (a string in YAML 1.1) read as floats."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str) and re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", value.strip()):
        return float(value)
    return value


def parse_override(text: str, option: str) -> tuple[str, Any]:
    """``"trainer.max_steps=10"`` -> ``("trainer.max_steps", 10)``."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key or not re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*", key):
        raise BridgeConfigError(
            f"{option} {text!r}: expected KEY=VALUE with a dotted KEY, e.g. trainer.max_steps=10"
        )
    return key, parse_value(value)


def set_dotted(tree: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """Return a copy of ``tree`` with ``value`` at the dotted ``key`` (intermediate dicts created)."""
    head, _, rest = key.partition(".")
    out = dict(tree)
    if rest:
        child = out.get(head)
        out[head] = set_dotted(child if isinstance(child, dict) else {}, rest, value)
    else:
        out[head] = value
    return out


def nest(tree: dict[str, Any]) -> dict[str, Any]:
    """Expand dotted keys at any level: ``{"a.b": 1, "a": {"c": 2}}`` -> ``{"a": {"b": 1, "c": 2}}``."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        value = nest(value) if isinstance(value, dict) else value
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            value = deep_merge(out[key], value)
        out = set_dotted(out, str(key), value) if "." in str(key) else {**out, key: value}
    return out


def deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` applied recursively (override wins)."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _key_lines(node: yaml.Node, prefix: str = "") -> dict[str, int]:
    """Line (1-based) of every dotted key in a composed YAML mapping."""
    lines: dict[str, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = f"{prefix}{key_node.value}"
            lines[key] = key_node.start_mark.line + 1
            lines.update(_key_lines(value_node, key + "."))
    return lines


def read_config_file(path: Path) -> tuple[dict[str, Any], dict[str, int]]:
    """Parse a JSON or YAML config file; returns the data and the line of every (dotted) key."""
    path = Path(path)
    if not path.is_file():
        raise BridgeConfigError(f"{path}: config file not found")
    if path.suffix.lower() not in (".json", ".yaml", ".yml"):
        raise BridgeConfigError(f"{path}: a config file must end in .json, .yaml or .yml")
    text = path.read_text()
    try:  # JSON is (for config files) a subset of YAML, so one parser gives line numbers for both
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f", line {mark.line + 1}" if mark is not None else ""
        raise BridgeConfigError(f"{path}{line}: cannot parse: {getattr(err, 'problem', err)}") from err
    if data is None:
        return {}, {}
    if not isinstance(data, dict):
        raise BridgeConfigError(f"{path}, line 1: the top level must be a mapping with sections {SECTIONS}")
    return data, _key_lines(node)


def _coerce_dataclass(cls: type, data: dict[str, Any], where: str, prefix: str) -> Any:
    """Build a flat dataclass such as ``EvalConfig`` from a dict, checking names and simple types."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for name, value in data.items():
        if name not in known:
            raise BridgeConfigError(
                f"{where}: unknown field '{prefix}{name}' (known: {', '.join(sorted(known))})"
            )
        hint = hints[name]
        origin = typing.get_origin(hint)
        if origin is tuple:
            value = tuple(value) if isinstance(value, list | tuple) else (value,)
            (elem,) = {a for a in typing.get_args(hint) if a is not Ellipsis}
            if elem is float:
                value = tuple(float(v) for v in value)
        elif hint is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise BridgeConfigError(f"{where}: {prefix.rstrip('.')}: {err}") from err


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
    baselines: bool | None = None,
    ablations: bool | None = None,
) -> BridgeConfig:
    """Merge the config file and the command-line values (which win) into a :class:`BridgeConfig`."""
    data: dict[str, Any] = {}
    lines: dict[str, int] = {}
    if file is not None:
        data, lines = read_config_file(Path(file))
        for key in data:
            if key not in SECTIONS:
                raise BridgeConfigError(
                    f"{file}, line {lines.get(key, '?')}: unknown section '{key}' (known: {', '.join(SECTIONS)})"
                )

    def where(section: str) -> str:
        return f"{file}, line {lines[section]}" if section in lines else "command line"

    sections: dict[str, dict[str, Any]] = {}
    for name, cli in (
        ("synthetic", synthetic),
        ("stage1", stage1),
        ("stage2", stage2),
        ("eval", eval_overrides),
    ):
        value = data.get(name) or {}
        if not isinstance(value, dict):
            raise BridgeConfigError(f"{where(name)}: section '{name}' must be a mapping of fields")
        tree = nest(value)
        for text in cli or []:
            key, val = parse_override(text, f"--{name.replace('_overrides', '')}")
            tree = set_dotted(tree, key, val)
        sections[name] = tree

    def pick(name: str, cli_value: Any, default: Any) -> Any:
        return cli_value if cli_value is not None else data.get(name, default)

    corpus_value = pick("corpus", corpus, None)
    eval_cfg = _coerce_dataclass(EvalConfig, sections["eval"], where("eval"), "eval.")
    try:
        return BridgeConfig(
            rounds=int(pick("rounds", rounds, 3)),
            seed=int(pick("seed", seed, 0)),
            seeds=int(pick("seeds", seeds, 3)),
            preset=str(pick("preset", preset, "default")),
            corpus=Path(corpus_value) if corpus_value is not None else None,
            synthetic=sections["synthetic"],
            stage1=sections["stage1"],
            stage2=sections["stage2"],
            eval=eval_cfg,
            baselines=bool(pick("baselines", baselines, True)),
            ablations=bool(pick("ablations", ablations, False)),
        )
    except BridgeConfigError as err:
        raise BridgeConfigError(f"{where('rounds')}: {err}") from err
