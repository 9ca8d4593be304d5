"""Command line of stage 1: ``python -m stage1_encoders.run --corpus DIR --cache DIR --round R [--config FILE]``.

Every field of ``Stage1Config`` has a flag (built from the field's metadata); flags override the values of
``--config`` (JSON or YAML with the same sections), which override the defaults.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cache import CacheError
from cache.atomic import DiskFullError
from corpus import CorpusError
from mmga_common import quiet_third_party
from mmga_common.cli import prog_name
from mmga_common.config import add_arguments, flags, overrides_from_args
from mmga_common.runtime import stage_preflight
from mmga_common.writable import explain_os_error
from stage1_encoders.config import ConfigError, Stage1Config


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog_name("python -m stage1_encoders.run"),
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
    parser.add_argument(
        "--force",
        action="store_true",
        help="overwrite the round's encoders.h5 even when another run (another --out folder) wrote it",
    )
    add_arguments(parser, Stage1Config)
    return parser


def config_from_args(argv: list[str] | None = None) -> Stage1Config:
    return _parse(argv)[0]


def _parse(argv: list[str] | None) -> tuple[Stage1Config, bool]:
    """The validated config and ``--force``."""
    args = vars(build_parser().parse_args(argv))
    config_file = args.pop("config", None)
    force = bool(args.pop("force", False))
    overrides = overrides_from_args(args)
    if config_file is not None:
        return Stage1Config.from_file(config_file, overrides), force
    return Stage1Config.from_dict(overrides, source="command line"), force


def main(argv: list[str] | None = None) -> int:
    quiet_third_party()
    try:
        cfg, force = _parse(argv)
    except ConfigError as err:
        flag = flags(Stage1Config).get(err.field or "")
        hint = f" (flag {flag})" if flag else ""
        print(f"error: {err}{hint}", file=sys.stderr)
        return 2
    problem = stage_preflight(cfg.trainer, {cfg.resolved_out_dir: "--out", cfg.cache_dir: "--cache"})
    if problem is not None:  # before any folder is made or any work: a device, a tracker, an unwritable place
        print(f"error: {problem}", file=sys.stderr)
        return 2
    from stage1_encoders.stage import run_stage1  # heavy imports only once the flags are fine

    try:
        result = run_stage1(cfg, force=force)
    except (ConfigError, CorpusError, CacheError, DiskFullError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # the environment, later in the run (e.g. a log write on a disk that filled up)
        message = explain_os_error(err)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
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
