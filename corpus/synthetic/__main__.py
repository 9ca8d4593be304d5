"""CLI: ``python -m corpus.synthetic --out DIR --users N --seed S [knobs]``."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from corpus.synthetic.config import SyntheticConfig
from corpus.synthetic.generator import generate
from mmga_common.cli import prog_name
from mmga_common.config import ConfigError, add_arguments, from_dict, overrides_from_args
from mmga_common.writable import explain_os_error, first_unwritable


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog_name("python -m corpus.synthetic"),
        description="Write a synthetic social-media corpus (users.csv, posts.jsonl, edges.csv, images/) with "
        "planted topic, graph and fans structure; ground truth goes to _truth.npz. See docs/corpus.md.",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an earlier generator output in --out"
    )
    add_arguments(parser, SyntheticConfig, top="generator knobs (docs/corpus.md)")
    return parser


def disk_usage(root: Path) -> int:
    total = 0
    for folder, _, files in os.walk(root):
        total += sum(os.lstat(os.path.join(folder, name)).st_size for name in files)
    return total


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = from_dict(SyntheticConfig, overrides_from_args(args, skip=("out", "overwrite")), "command line")
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    unwritable = first_unwritable({args.out: "--out"})
    if unwritable is not None:
        print(f"error: {unwritable}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    try:
        out = generate(args.out, cfg, overwrite=args.overwrite)
    except (ValueError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # e.g. the disk filled up half-way
        message = explain_os_error(err, "--out")
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - start
    posts = sum(1 for _ in open(out / "posts.jsonl", "rb"))
    edges = sum(1 for _ in open(out / "edges.csv", "rb")) - 1
    print(
        f"wrote {out}: {cfg.num_users} users, {posts} posts, {edges} edges in {seconds:.1f} s, "
        f"{disk_usage(out) / 1e6:.1f} MB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
