"""Time and disk of the synthetic generator and load time of the reader, against peers measured in the same run.

    python benchmarks/bench_synthetic.py --users 2000                     # default knobs
    python benchmarks/bench_synthetic.py --paper                          # 60,000 users, ~2M posts, ~1M edges
    python benchmarks/bench_synthetic.py --users 6000 --posts-per-user 39 --avg-degree 33.3 --image-pool 0

Peers: the generator is compared with writing the same number of files of the same sizes with plain
``open().write()`` (the file-system floor); ``load_corpus`` is compared with a bare parse of the same files
(``json.loads`` per line, ``csv.reader``) that validates nothing.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from corpus import load_corpus  # noqa: E402
from corpus.synthetic import SyntheticConfig, generate  # noqa: E402

# 60,000 users; 0.85 * 39 + 0.10 * 1.5 ~ 33.3 posts per user -> ~2,000,000 posts; 60,000 * 33.34 / 2 = 1,000,200 edges.
PAPER = dict(num_users=60_000, posts_per_user=39.0, avg_degree=33.34, image_pool=100_000)


def disk(root: Path) -> tuple[int, int, int]:
    """(files, bytes of content, bytes allocated on disk)."""
    files = size = allocated = 0
    for folder, _, names in os.walk(root):
        for name in names:
            st = os.lstat(os.path.join(folder, name))
            files += 1
            size += st.st_size
            allocated += st.st_blocks * 512
    return files, size, allocated


def raw_write_floor(root: Path, scratch: Path) -> float:
    """Seconds to write files of the same sizes (random bytes, same folder layout) with plain open/write."""
    sizes = []
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            sizes.append((os.path.relpath(path, root), os.lstat(path).st_size))
    blob = os.urandom(max(s for _, s in sizes))
    start = time.perf_counter()
    for rel, size in sizes:
        target = scratch / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as fh:
            fh.write(blob[:size])
    return time.perf_counter() - start


def bare_parse(root: Path) -> float:
    """Seconds to parse users.csv, posts.jsonl and edges.csv without any validation."""
    start = time.perf_counter()
    for name in ("users.csv", "edges.csv"):
        rows = list(csv.reader(io.StringIO((root / name).read_text())))
        assert rows
    loads = json.loads
    posts = [loads(line) for line in (root / "posts.jsonl").read_text().splitlines() if line]
    assert posts is not None
    return time.perf_counter() - start


def run(cfg: SyntheticConfig, work: Path, keep: bool) -> dict:
    root = work / f"synthetic_{cfg.num_users}"
    if root.exists():
        shutil.rmtree(root)
    t0 = time.perf_counter()
    generate(root, cfg, progress=True)
    gen_s = time.perf_counter() - t0
    files, size, allocated = disk(root)

    t0 = time.perf_counter()
    corpus = load_corpus(root)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    load_corpus(root, image_check="exists")
    load_exists_s = time.perf_counter() - t0
    parse_s = bare_parse(root)

    scratch = work / f"floor_{cfg.num_users}"
    floor_s = raw_write_floor(root, scratch)
    shutil.rmtree(scratch)
    if not keep:
        shutil.rmtree(root)
    return {
        "users": corpus.num_users,
        "posts": corpus.num_posts,
        "edges": corpus.num_edges,
        "images": len({p for p in corpus.post_image if p is not None}),
        "files": files,
        "generate_s": gen_s,
        "write_floor_s": floor_s,
        "content_MB": size / 1e6,
        "on_disk_MB": allocated / 1e6,
        "load_s": load_s,
        "load_exists_s": load_exists_s,
        "bare_parse_s": parse_s,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, nargs="+", default=[2000], help="corpus sizes to run")
    parser.add_argument("--paper", action="store_true", help="the paper's size (overrides the knobs below)")
    parser.add_argument("--posts-per-user", type=float, default=None)
    parser.add_argument("--avg-degree", type=float, default=None)
    parser.add_argument("--image-pool", type=int, default=None)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir", type=Path, default=Path("runs/bench_synthetic"))
    parser.add_argument("--keep", action="store_true", help="keep the generated corpora")
    args = parser.parse_args(argv)

    base = SyntheticConfig(seed=args.seed, workers=args.workers)
    knobs = {
        "posts_per_user": args.posts_per_user,
        "avg_degree": args.avg_degree,
        "image_pool": args.image_pool,
    }
    base = replace(base, **{k: v for k, v in knobs.items() if v is not None})
    sizes = [PAPER["num_users"]] if args.paper else args.users
    args.work_dir.mkdir(parents=True, exist_ok=True)
    print(f"cpus={os.cpu_count()} load_avg={os.getloadavg()[0]:.1f}")
    for users in sizes:
        cfg = replace(base, **PAPER) if args.paper else replace(base, num_users=users)
        r = run(cfg, args.work_dir, args.keep)
        print(
            f"users={r['users']} posts={r['posts']} edges={r['edges']} images={r['images']} files={r['files']}\n"
            f"  generate {r['generate_s']:.1f} s  (plain-write floor for the same files {r['write_floor_s']:.1f} s, "
            f"ratio {r['generate_s'] / r['write_floor_s']:.1f}x)\n"
            f"  disk {r['content_MB']:.1f} MB content, {r['on_disk_MB']:.1f} MB allocated\n"
            f"  load_corpus {r['load_s']:.2f} s (image headers), {r['load_exists_s']:.2f} s (existence only); "
            f"bare parse {r['bare_parse_s']:.2f} s, ratio {r['load_s'] / r['bare_parse_s']:.1f}x",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
