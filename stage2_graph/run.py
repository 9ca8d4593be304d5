"""Command line of stage 2: ``python -m stage2_graph.run --corpus DIR --cache DIR --round R [...]``.

Flags map onto :class:`stage2_graph.config.Stage2Config`; precedence: defaults < ``--config`` file < flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from pathlib import Path
from typing import Any, Literal

from cache import CacheError
from cache.atomic import DiskFullError
from corpus import CorpusError
from mmga_common import quiet_third_party
from stage2_graph.config import ConfigError, Stage2Config
from stage2_graph.data import Stage2InputError
from stage2_graph.pipeline import run_stage2

# Flags whose name is not the field name with dashes.
_FLAG_NAMES = {"cache_dir": "--cache", "out_dir": "--out"}
_SECTION_TITLES = {
    "model": "model (the graph encoder)",
    "objective": "objectives (self-supervised)",
    "optim": "optimiser",
    "trainer": "trainer (Lightning)",
}

DESCRIPTION = """\
Stage 2 of MMGA: train the multimodal-mixture GNN (M-Gate) on the corpus's social graph and user
statistics X, gated by stage 1's image and text embeddings of the round, with feature masking and
edge hold-out as self-supervised objectives. Writes R^G (one embedding per user) and the gate of
every edge to <cache>/round_<R>/graph.h5, checkpoints and logs to --out.
"""

EPILOG = """\
examples:
  python -m stage2_graph.run --corpus data/corpus --cache runs/cache --round 0
  python -m stage2_graph.run --corpus data/corpus --cache runs/cache --round 1 \\
      --init-checkpoint runs/stage2/round_0/checkpoints/last.ckpt
  python -m stage2_graph.run --corpus data/corpus --cache runs/cache --round 0 --gate uniform
  python -m stage2_graph.run --corpus data/corpus --cache runs/cache --round 0 --no-use-modalities
  python -m stage2_graph.run --corpus data/corpus --cache runs/cache --round 0 --node-inputs stats degree
  python -m stage2_graph.run --corpus data/corpus --cache runs/cache --round 0 --gate-form additive
  python -m stage2_graph.run --config stage2.yaml --corpus data/corpus --cache runs/cache --round 0

Stage 1's embeddings of the round must exist (`python -m stage1_encoders.run --corpus ... --cache ...
--round R`) unless --no-use-modalities or --gate uniform is given.
"""


def _parse_optional(kind: type) -> typing.Callable[[str], Any]:
    def parse(text: str) -> Any:
        return None if text.lower() in ("none", "null") else kind(text)

    parse.__name__ = getattr(kind, "__name__", "value")
    return parse


def _add_field(group: argparse._ArgumentGroup, flag: str, dest: str, hint: Any, help_text: str, default: Any):
    if default is dataclasses.MISSING:
        shown = " (required: here or in --config)"
    elif default is None:
        shown = ""
    else:
        shown = f" (default: {default})"
    kwargs: dict[str, Any] = {"dest": dest, "default": argparse.SUPPRESS, "help": help_text + shown}
    origin = typing.get_origin(hint)
    if hint is bool:
        group.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
        return
    if origin is Literal:
        group.add_argument(flag, choices=list(typing.get_args(hint)), **kwargs)
        return
    if origin is tuple:  # tuple[Literal[...], ...] (one or more of the choices) or tuple[int, ...]
        item = typing.get_args(hint)[0]
        shown = f" (default: {' '.join(map(str, default))})" if isinstance(default, tuple) else ""
        kwargs["help"] = help_text + shown
        if item is int:
            group.add_argument(flag, nargs="+", type=int, metavar="INT", **kwargs)
        else:
            group.add_argument(flag, nargs="+", choices=list(typing.get_args(item)), **kwargs)
        return
    if origin is not None:  # X | None
        inner = next(arg for arg in typing.get_args(hint) if arg is not type(None))
        group.add_argument(flag, type=_parse_optional(inner), metavar=inner.__name__.upper(), **kwargs)
        return
    group.add_argument(flag, type=hint, metavar=hint.__name__.upper(), **kwargs)


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser; every flag is generated from a config field and its help text."""
    parser = argparse.ArgumentParser(
        prog="python -m stage2_graph.run",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", type=Path, help="JSON or YAML file with (some of) the config fields")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    top = parser.add_argument_group("run")
    hints = typing.get_type_hints(Stage2Config)
    for f in dataclasses.fields(Stage2Config):
        if dataclasses.is_dataclass(hints[f.name]):
            section = hints[f.name]
            group = parser.add_argument_group(_SECTION_TITLES.get(f.name, f.name))
            section_hints = typing.get_type_hints(section)
            for sub in dataclasses.fields(section):
                flag = "--" + sub.name.replace("_", "-")
                _add_field(
                    group,
                    flag,
                    f"{f.name}.{sub.name}",
                    section_hints[sub.name],
                    sub.metadata["help"],
                    sub.default
                    if sub.default is not dataclasses.MISSING or sub.default_factory is dataclasses.MISSING
                    else sub.default_factory(),
                )
        else:
            flag = _FLAG_NAMES.get(f.name, "--" + f.name.replace("_", "-"))
            _add_field(top, flag, f.name, hints[f.name], f.metadata["help"], f.default)
    return parser


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The flags that were given, as a nested dict of config fields."""
    nested: dict[str, Any] = {}
    for dest, value in vars(args).items():
        if dest in ("config", "print_config"):
            continue
        *sections, name = dest.split(".")
        target = nested
        for section in sections:
            target = target.setdefault(section, {})
        target[name] = str(value) if isinstance(value, Path) else value
    return nested


def config_from_argv(argv: list[str] | None = None) -> tuple[Stage2Config, argparse.Namespace]:
    """Parse the command line into a validated config (errors exit with the parser's usage message)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    overrides = overrides_from_args(args)
    try:
        if args.config is not None:
            cfg = Stage2Config.from_file(args.config, overrides)
        else:
            cfg = Stage2Config.from_dict(overrides, where="command line")
    except ConfigError as err:
        parser.error(str(err))
    return cfg, args


def main(argv: list[str] | None = None) -> int:
    quiet_third_party()
    cfg, args = config_from_argv(argv)
    if args.print_config:
        print(json.dumps(cfg.to_dict(), indent=2))
        return 0
    try:
        result = run_stage2(cfg)
    except (ConfigError, Stage2InputError, CacheError, CorpusError, DiskFullError) as err:
        print(f"stage2_graph.run: error: {err}", file=sys.stderr)
        return 2
    if result.global_rank != 0:  # under ddp every rank returns here; rank 0 reports
        return 0
    print(f"checkpoint: {result.checkpoint}")
    print(f"cache file: {result.cache_file}")
    print(f"logs:       {result.log_dir}")
    for name, value in result.metrics.items():
        print(f"{name}: {value:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
