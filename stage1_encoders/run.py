"""Command line of stage 1: ``python -m stage1_encoders.run --corpus DIR --cache DIR --round R [--config FILE]``.

Every field of ``Stage1Config`` has a flag (built from the field's metadata); flags override the values of
``--config`` (JSON or YAML with the same sections), which override the defaults.
"""

from __future__ import annotations

import argparse
import sys
import typing
from pathlib import Path
from typing import Any, Literal

from cache import CacheError
from cache.atomic import DiskFullError
from corpus import CorpusError
from mmga_common import quiet_third_party
from stage1_encoders.config import ConfigError, Stage1Config, leaf_fields

_NONE_WORDS = ("none", "null")


def _flag(dotted: str, metadata: dict) -> str:
    return metadata.get("flag") or "--" + dotted.rsplit(".", 1)[-1].replace("_", "-")


def _scalar_parser(tp: Any):
    """argparse ``type=`` for a leaf type (``none``/``null`` give None for optional fields)."""
    args = typing.get_args(tp)
    optional = type(None) in args
    inner = [a for a in args if a is not type(None)]
    base = inner[0] if optional and len(inner) == 1 else tp

    def parse(text: str):
        if optional and text.lower() in _NONE_WORDS:
            return None
        if base is int:
            return int(text)
        if base is float:
            return float(text)
        if base is Path:
            return Path(text)
        return text

    parse.__name__ = getattr(base, "__name__", "value")
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m stage1_encoders.run",
        description=(
            "Stage 1 of MMGA: train the image (open_clip ViT) and text (BERT) encoders with the LM, ITA and "
            "graph-contrastive losses on a corpus, then write every user's pooled image and text embeddings "
            "to <cache>/round_<R>/encoders.h5. Flags override --config, which overrides the defaults."
        ),
        argument_default=argparse.SUPPRESS,
        allow_abbrev=False,
    )
    parser.add_argument(
        "--config",
        type=Path,
        help="JSON or YAML file with the config sections (model, losses, data, optim, trainer)",
    )
    groups: dict[str, argparse._ArgumentGroup] = {}
    for dotted, field, tp in leaf_fields():
        section = dotted.split(".")[0] if "." in dotted else "run"
        if section not in groups:
            groups[section] = parser.add_argument_group(section)
        group = groups[section]
        help_text = field.metadata.get("help", "")
        if field.metadata.get("required"):
            help_text += " (required)"
        else:
            help_text += f" [default: {_default_of(dotted)}]"
        kwargs: dict[str, Any] = {"dest": dotted, "help": help_text}
        origin = typing.get_origin(tp)
        if tp is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif origin is Literal:
            kwargs["choices"] = list(typing.get_args(tp))
        elif origin is list:
            (item,) = typing.get_args(tp)
            kwargs["nargs"] = "*"
            kwargs["choices"] = list(typing.get_args(item))
        else:
            kwargs["type"] = _scalar_parser(tp)
            kwargs["metavar"] = dotted.rsplit(".", 1)[-1].upper()
        group.add_argument(_flag(dotted, field.metadata), **kwargs)
    return parser


def _default_of(dotted: str) -> Any:
    value: Any = Stage1Config(corpus=Path("."), cache_dir=Path(".")).to_dict()
    for part in dotted.split("."):
        value = value[part]
    return "none" if value is None else value


def _nested(flat: dict[str, Any]) -> dict:
    out: dict = {}
    for dotted, value in flat.items():
        node = out
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = str(value) if isinstance(value, Path) else value
    return out


def config_from_args(argv: list[str] | None = None) -> Stage1Config:
    args = vars(build_parser().parse_args(argv))
    config_file = args.pop("config", None)
    overrides = _nested(args)
    if config_file is not None:
        return Stage1Config.from_file(config_file, overrides)
    return Stage1Config.from_dict(overrides, source="command line")


def main(argv: list[str] | None = None) -> int:
    quiet_third_party()
    try:
        cfg = config_from_args(argv)
    except ConfigError as err:
        flags = {dotted: _flag(dotted, f.metadata) for dotted, f, _ in leaf_fields()}
        hint = f" (flag {flags[err.field]})" if err.field in flags else ""
        print(f"error: {err}{hint}", file=sys.stderr)
        return 2
    from stage1_encoders.stage import run_stage1  # heavy imports only once the flags are fine

    try:
        result = run_stage1(cfg)
    except (ConfigError, CorpusError, CacheError, DiskFullError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if result.global_rank != 0:
        return 0
    print(f"stage 1 round {cfg.round}: checkpoint {result.checkpoint}")
    print(f"stage 1 round {cfg.round}: resolved config {result.config_file}")
    print(f"stage 1 round {cfg.round}: logs {result.log_dir}")
    print(f"stage 1 round {cfg.round}: cache file {result.cache_file}")
    for name in result.metrics.get("loss_terms", []):
        term = result.metrics.get(name)
        if term:
            print(f"  {name}: {term['first_mean']:.4f} -> {term['last_mean']:.4f} over {term['steps']} steps")
    return 0


if __name__ == "__main__":
    sys.exit(main())
