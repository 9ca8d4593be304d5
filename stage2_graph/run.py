"""Command line of stage 2: ``python -m stage2_graph.run --corpus DIR --cache DIR --round R [...]``.

Flags map onto :class:`stage2_graph.config.Stage2Config`; precedence: defaults < ``--config`` file < flags.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cache import CacheError
from cache.atomic import DiskFullError
from corpus import CorpusError
from mmga_common import quiet_third_party
from mmga_common.cli import prog_name
from mmga_common.config import add_arguments, overrides_from_args
from mmga_common.runtime import stage_preflight
from mmga_common.writable import explain_os_error
from stage2_graph.config import ConfigError, Stage2Config

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


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser; every flag is generated from a config field and its help text."""
    parser = argparse.ArgumentParser(
        prog=prog_name("python -m stage2_graph.run"),
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", type=Path, help="JSON or YAML file with (some of) the config fields")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument(
        "--force",
        action="store_true",
        help="overwrite the round's graph.h5 even when another run (another --out folder) wrote it",
    )
    add_arguments(parser, Stage2Config, _SECTION_TITLES)
    return parser


def config_from_argv(argv: list[str] | None = None) -> tuple[Stage2Config, argparse.Namespace]:
    """Parse the command line into a validated config (errors exit with the parser's usage message)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    overrides = overrides_from_args(args, skip=("config", "print_config", "force"))
    try:
        if args.config is not None:
            cfg = Stage2Config.from_file(args.config, overrides)
        else:
            cfg = Stage2Config.from_dict(overrides, source="command line")
    except ConfigError as err:
        parser.error(str(err))
    return cfg, args


def main(argv: list[str] | None = None) -> int:
    quiet_third_party()
    cfg, args = config_from_argv(argv)
    if args.print_config:
        print(json.dumps(cfg.to_dict(), indent=2))
        return 0
    problem = stage_preflight(cfg.trainer, {cfg.resolved_out_dir: "--out", cfg.cache_dir: "--cache"})
    if problem is not None:  # before any folder is made or any work: a device, a tracker, an unwritable place
        print(f"stage2_graph.run: error: {problem}", file=sys.stderr)
        return 2
    from stage2_graph.data import Stage2InputError  # heavy imports only once the flags are fine
    from stage2_graph.pipeline import run_stage2

    try:
        result = run_stage2(cfg, force=args.force)
    except (ConfigError, Stage2InputError, CacheError, CorpusError, DiskFullError) as err:
        print(f"stage2_graph.run: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # the environment, later in the run (e.g. a log write on a disk that filled up)
        message = explain_os_error(err)
        if message is None:
            raise
        print(f"stage2_graph.run: error: {message}", file=sys.stderr)
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
