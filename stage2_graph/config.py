"""The typed configuration of stage 2 (one dataclass tree) and its JSON/YAML/dict round trip.

Precedence when the CLI builds a config: dataclass defaults < config file < command-line flags.
Every field carries a ``help`` text in its metadata; the CLI builds its ``--help`` from it.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

GateKind = Literal["mgate", "uniform"]
GateNormalization = Literal["sigmoid", "softmax"]
GateForm = Literal["additive", "cosine", "gatv2"]
NodeInput = Literal["stats", "degree", "image", "text"]
MODALITY_INPUTS: tuple[str, ...] = ("image", "text")  # node-input blocks read from stage 1's cache
NormKind = Literal["none", "layer", "batch"]
ActivationKind = Literal["relu", "gelu", "elu"]
FeatureLossKind = Literal["mse", "smooth_l1"]
BatchingKind = Literal["full", "neighbor"]
InferenceKind = Literal["auto", "full", "layerwise"]
StrategyKind = Literal["auto", "ddp", "ddp_spawn", "ddp_find_unused_parameters_true"]


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names the source and the field."""


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class ModelConfig:
    """The graph encoder: input projection, M-Gate, and the stack of propagation layers."""

    hidden_dim: int = field(default=64, metadata=_help("width of node states and of R^G"))
    num_layers: int = field(default=2, metadata=_help("number of propagation layers (eq. 6)"))
    heads: int = field(default=1, metadata=_help("gate heads; each weighs its own slice of channels"))
    dropout: float = field(default=0.1, metadata=_help("dropout on node states before each layer"))
    norm: NormKind = field(default="layer", metadata=_help("normalisation after each hidden layer"))
    activation: ActivationKind = field(default="gelu", metadata=_help("nonlinearity after each hidden layer"))
    input_proj: bool = field(
        default=True,
        metadata=_help("project the concatenated node inputs to hidden_dim first (off: propagate them raw)"),
    )
    node_inputs: tuple[NodeInput, ...] = field(
        default=("stats", "degree", "image", "text"),
        metadata=_help(
            "blocks of each node's input, concatenated then projected (= a sum of per-block projections): "
            "stats = X, degree = log(1 + degree) in the propagated adjacency, image/text = stage 1's "
            "embeddings (a learned placeholder where the user has none); the paper's literal X-only "
            "setting is 'stats degree' (or 'stats'); use_modalities=false drops image/text"
        ),
    )
    gate_form: GateForm = field(
        default="cosine",
        metadata=_help(
            "additive: eq. 5 literally, W_t g_u + W_s g_v (static: every target ranks its neighbours "
            "alike); cosine: additive + sum_m beta_m cos(P_m R^m_u, P_m R^m_v) (pair-aware); gatv2: "
            "a^T LeakyReLU(W_t g_u + W_s g_v) (pair-aware)"
        ),
    )
    gate_rank: int = field(
        default=8,
        metadata=_help("cosine: rank r of the per-block projections P_m; gatv2: hidden width (per head)"),
    )
    content_hops: int = field(
        default=2,
        metadata=_help(
            "R^G also carries the node-input content (X, R^I, R^T) smoothed over 1..K hops with the learned "
            "gate as edge weights (parameter-free, after training); 0: R^G is the GNN's output only (the paper)"
        ),
    )
    gate_normalization: GateNormalization = field(
        default="sigmoid",
        metadata=_help(
            "sigmoid: a_uv = sigmoid(logit) / deg(u); softmax: a_uv = softmax over u's neighbours of "
            "leaky_relu(logit) (docs/stage2.md says why sigmoid is the default)"
        ),
    )
    gate_negative_slope: float = field(
        default=0.2, metadata=_help("LeakyReLU slope applied to gate logits (softmax normalisation only)")
    )


@dataclass
class ObjectiveConfig:
    """The two self-supervised objectives and their weights."""

    feature_weight: float = field(default=1.0, metadata=_help("weight of the node-feature modelling loss"))
    structure_weight: float = field(default=1.0, metadata=_help("weight of the graph-structure loss"))
    feature_mask_ratio: float = field(
        default=0.3, metadata=_help("share of nodes whose statistics X are masked in each step")
    )
    edge_mask_ratio: float = field(
        default=0.2, metadata=_help("share of undirected edges held out of message passing in each step")
    )
    negative_ratio: float = field(default=1.0, metadata=_help("negative pairs per held-out edge"))
    feature_loss: FeatureLossKind = field(default="mse", metadata=_help("regression loss on masked features"))
    gate_link_weight: float = field(
        default=1.0,
        metadata=_help(
            "weight of the gate's own link prediction: the gate's pair score e_uv must tell the step's "
            "held-out edges from the negative pairs (what makes the gate discriminative; 0 = off)"
        ),
    )


@dataclass
class OptimConfig:
    """AdamW settings."""

    lr: float = field(default=5e-3, metadata=_help("learning rate"))
    weight_decay: float = field(default=1e-4, metadata=_help("AdamW weight decay"))


@dataclass
class TrainerConfig:
    """Lightning Trainer settings (full-batch: one step per epoch; neighbor: one step per mini-batch)."""

    max_steps: int = field(
        default=200,
        metadata=_help("optimisation steps (= epochs with batching=full, one per mini-batch otherwise)"),
    )
    max_epochs: int = field(default=-1, metadata=_help("epoch limit; -1 = limited by max_steps only"))
    accelerator: str = field(default="auto", metadata=_help("Lightning accelerator: auto, cpu, gpu, ..."))
    devices: str = field(
        default="1",
        metadata=_help("Lightning devices (processes per node; more than one needs batching=neighbor)"),
    )
    num_nodes: int = field(default=1, metadata=_help("Lightning nodes (each runs `devices` processes)"))
    strategy: StrategyKind = field(
        default="auto",
        metadata=_help(
            "Lightning strategy; ddp re-launches the calling script per rank, ddp_spawn forks workers"
        ),
    )
    batching: BatchingKind = field(
        default="full",
        metadata=_help(
            "full: one step per epoch over the whole graph; neighbor: mini-batches of seed nodes with "
            "PyG's NeighborLoader (fanouts per layer), for graphs that do not fit one process"
        ),
    )
    fanouts: tuple[int, ...] = field(
        default=(10, 10),
        metadata=_help(
            "neighbours sampled per node and layer (batching=neighbor; -1 = all); one per model layer"
        ),
    )
    batch_size: int = field(
        default=1024,
        metadata=_help(
            "seed nodes per mini-batch (batching=neighbor; each batch also seeds its share of pairs)"
        ),
    )
    inference: InferenceKind = field(
        default="auto",
        metadata=_help(
            "export: full = one forward over the whole graph; layerwise = one layer at a time over all nodes "
            "in chunks of batch_size (PyG's layer-wise inference); auto = layerwise when batching=neighbor"
        ),
    )
    precision: str = field(default="32-true", metadata=_help("Lightning precision, e.g. 32-true, bf16-mixed"))
    checkpoint_every_n_steps: int = field(default=100, metadata=_help("save last.ckpt every N steps"))
    resume: str | None = field(
        default=None,
        metadata=_help("resume training from this checkpoint, or 'last': out_dir's last.ckpt if any"),
    )
    enable_progress_bar: bool = field(default=True, metadata=_help("show a progress bar"))
    csv_logger: bool = field(default=True, metadata=_help("write Lightning CSV logs (each loss term)"))
    tensorboard_logger: bool = field(default=False, metadata=_help("also write TensorBoard logs"))
    log_every_n_steps: int = field(default=10, metadata=_help("logging interval in steps"))
    gradient_clip_val: float | None = field(
        default=1.0, metadata=_help("gradient norm clipping; 'none' = off")
    )
    deterministic: bool = field(default=False, metadata=_help("ask torch for deterministic kernels"))
    num_threads: int | None = field(
        default=None,
        metadata=_help("torch CPU threads during the run, restored afterwards (default: torch's own choice)"),
    )


@dataclass
class Stage2Config:
    """Everything stage 2 needs; ``to_dict`` of it is saved beside checkpoints and in the cache."""

    corpus: Path = field(metadata=_help("corpus folder"))
    cache_dir: Path = field(metadata=_help("cache folder shared by the stages"))
    round: int = field(default=0, metadata=_help("round index: reads stage 1's embeddings of this round"))
    out_dir: Path | None = field(
        default=None, metadata=_help("checkpoints and logs (default: runs/stage2/round_<round>)")
    )
    init_checkpoint: Path | None = field(
        default=None, metadata=_help("start from this stage-2 checkpoint (the previous round's GNN)")
    )
    seed: int = field(default=0, metadata=_help("seed for weights, masks and negative samples"))
    gate: GateKind = field(default="mgate", metadata=_help("mgate, or uniform mean aggregation (baseline)"))
    use_modalities: bool = field(
        default=True,
        metadata=_help(
            "feed stage 1's image/text embeddings to the gate and (per model.node_inputs) to the node "
            "inputs; off = the GNN sees X (and degree) only, whatever model.node_inputs says"
        ),
    )
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)

    def __post_init__(self) -> None:
        self.validate()

    @property
    def resolved_node_inputs(self) -> tuple[str, ...]:
        """The node-input blocks this run uses: ``model.node_inputs`` minus image/text when
        ``use_modalities`` is off."""
        if self.use_modalities:
            return tuple(self.model.node_inputs)
        return tuple(name for name in self.model.node_inputs if name not in MODALITY_INPUTS)

    @property
    def needs_modalities(self) -> bool:
        """Whether the run reads stage 1's embeddings: for the M-Gate, or for image/text node inputs."""
        if not self.use_modalities:
            return False
        return self.gate == "mgate" or any(name in MODALITY_INPUTS for name in self.model.node_inputs)

    @property
    def resolved_out_dir(self) -> Path:
        """The folder for checkpoints and logs."""
        if self.out_dir is not None:
            return Path(self.out_dir)
        return Path("runs") / "stage2" / f"round_{self.round}"

    def validate(self, where: str = "config") -> None:
        """Raise ``ConfigError`` naming the field for values outside their range."""
        checks = [
            (self.round >= 0, "round", "must be >= 0"),
            (self.model.hidden_dim > 0, "model.hidden_dim", "must be > 0"),
            (self.model.num_layers >= 1, "model.num_layers", "must be >= 1"),
            (self.model.heads >= 1, "model.heads", "must be >= 1"),
            (
                self.model.hidden_dim % self.model.heads == 0,
                "model.heads",
                f"must divide model.hidden_dim={self.model.hidden_dim}",
            ),
            (0.0 <= self.model.dropout < 1.0, "model.dropout", "must be in [0, 1)"),
            (len(self.model.node_inputs) > 0, "model.node_inputs", "must name at least one block"),
            (self.model.content_hops >= 0, "model.content_hops", "must be >= 0"),
            (
                len(set(self.model.node_inputs)) == len(self.model.node_inputs),
                "model.node_inputs",
                "must not repeat a block",
            ),
            (
                len(self.resolved_node_inputs) > 0,
                "model.node_inputs",
                "has no block left with use_modalities=false",
            ),
            (1 <= self.model.gate_rank <= 64, "model.gate_rank", "must be in [1, 64]"),
            (self.objective.gate_link_weight >= 0, "objective.gate_link_weight", "must be >= 0"),
            (
                0.0 < self.objective.feature_mask_ratio < 1.0,
                "objective.feature_mask_ratio",
                "must be in (0, 1)",
            ),
            (0.0 < self.objective.edge_mask_ratio < 1.0, "objective.edge_mask_ratio", "must be in (0, 1)"),
            (self.objective.negative_ratio > 0, "objective.negative_ratio", "must be > 0"),
            (self.objective.feature_weight >= 0, "objective.feature_weight", "must be >= 0"),
            (self.objective.structure_weight >= 0, "objective.structure_weight", "must be >= 0"),
            (self.trainer.max_steps >= 1, "trainer.max_steps", "must be >= 1"),
            (self.trainer.batch_size >= 1, "trainer.batch_size", "must be >= 1"),
            (self.trainer.num_nodes >= 1, "trainer.num_nodes", "must be >= 1"),
            (
                self.trainer.batching == "full" or len(self.trainer.fanouts) == self.model.num_layers,
                "trainer.fanouts",
                f"must give one fan-out per layer with batching=neighbor "
                f"(model.num_layers={self.model.num_layers})",
            ),
            (
                all(f == -1 or f >= 1 for f in self.trainer.fanouts),
                "trainer.fanouts",
                "must hold positive counts or -1 (all neighbours)",
            ),
            (
                self.trainer.batching == "neighbor" or processes(self.trainer) == 1,
                "trainer.devices",
                "more than one process needs trainer.batching=neighbor (full-batch training is one process)",
            ),
            (self.trainer.checkpoint_every_n_steps >= 1, "trainer.checkpoint_every_n_steps", "must be >= 1"),
            (
                self.trainer.num_threads is None or self.trainer.num_threads >= 1,
                "trainer.num_threads",
                "must be >= 1",
            ),
        ]
        for ok, name, message in checks:
            if not ok:
                raise ConfigError(f"{where}: field '{name}' {message}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe nested dict (paths as strings)."""
        return _to_plain(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "config") -> Stage2Config:
        """Build from a nested dict; unknown keys and wrong types raise ``ConfigError`` naming them."""
        return _from_plain(cls, data, where)

    @classmethod
    def from_file(cls, path: Path | str, overrides: dict[str, Any] | None = None) -> Stage2Config:
        """Read a JSON or YAML file, apply nested ``overrides`` on top, and build the config."""
        data = read_config_file(path)
        merged = deep_merge(data, overrides or {})
        return cls.from_dict(merged, where=str(path))

    def save(self, path: Path) -> None:
        """Write the resolved config as JSON."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")


def read_config_file(path: Path | str) -> dict[str, Any]:
    """Parse a ``.json``, ``.yaml`` or ``.yml`` file into a dict; errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    text = path.read_text()
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        elif path.suffix.lower() in (".yaml", ".yml"):
            data = yaml.safe_load(text)
        else:
            raise ConfigError(f"{path}: config file must end in .json, .yaml or .yml")
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}, line {err.lineno}: invalid JSON: {err.msg}") from err
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f", line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{line}: invalid YAML: {err}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of config fields")
    return data


def deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Return ``base`` with ``overrides`` applied recursively (override wins)."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, tuple):
        return [_to_plain(item) for item in obj]
    return obj


def _from_plain(cls: type, data: Any, where: str, prefix: str = "") -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: field '{prefix.rstrip('.') or '<root>'}' must be a mapping")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(
            f"{where}: unknown field '{prefix}{unknown[0]}' (known: {', '.join(sorted(known))})"
        )
    missing = [
        name
        for name, f in known.items()
        if name not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{where}: required field '{prefix}{missing[0]}' is missing")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, where, prefix + name)
    try:
        return cls(**kwargs)
    except ConfigError as err:
        raise ConfigError(str(err).replace("config:", f"{where}:", 1)) from err


def processes(trainer: TrainerConfig) -> int:
    """Training processes the trainer section asks for (``devices`` x ``num_nodes``; 'auto' counts as one)."""
    devices = str(trainer.devices)
    if devices.isdigit():
        count = int(devices)
    elif "," in devices:
        count = len([part for part in devices.split(",") if part.strip()])
    else:
        count = 1
    return count * trainer.num_nodes


def _coerce(hint: Any, value: Any, where: str, name: str) -> Any:
    """Check ``value`` against a type hint, converting strings to paths and ints to floats."""
    if dataclasses.is_dataclass(hint):
        return _from_plain(hint, value, where, name + ".")
    origin = typing.get_origin(hint)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: field '{name}' must be a list, got {value!r}")
        item = typing.get_args(hint)[0]
        return tuple(_coerce(item, element, where, name) for element in value)
    if origin is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise ConfigError(f"{where}: field '{name}' must be one of {list(choices)}, got {value!r}")
        return value
    if origin in (Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None:
            if type(None) in options:
                return None
            raise ConfigError(f"{where}: field '{name}' may not be null")
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(option, value, where, name)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0])
    if hint is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
    elif hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            return str(value)
    else:
        raise ConfigError(f"{where}: field '{name}' has an unsupported type {hint}")
    raise ConfigError(f"{where}: field '{name}' must be {getattr(hint, '__name__', hint)}, got {value!r}")
