"""Stage 1 of the default preset on a GPU against the CPU, on the same machine and corpora (issue 23).

For each corpus size (the synthetic generator, seed 0) and each device, runs ``run_stage1`` with the default
preset's stage-1 section (``bridge/presets/default.json``: the frozen pretrained MiniLM-L6 mean-pooled, its
caption states computed once, the graph head and the tiny ViT trained 150 steps, then the export of every user)
and prints the wall time of the whole stage, the time of the caption states (the frozen MiniLM over every
caption, the part that grows with the posts), and posts per second for both. Each row runs in a fresh process
with its own cache folder, so none reuses another's caption states. ``precision auto`` means
bf16-mixed on a CUDA device that has it (``mmga_common.runtime``), 32-bit on the CPU.

    python benchmarks/bench_gpu_stage1.py --users 2000 --devices cpu                # anywhere
    python benchmarks/bench_gpu_stage1.py --users 10000 30000 --devices cuda cpu --json out.json

The CPU rows use every core torch sees (``--cpu-threads`` to change); run the CPU peer on the same machine as the
GPU rows so the ratio compares devices, not machines.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import platform
import re
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmga_common import quiet_third_party  # noqa: E402

quiet_third_party()

import torch  # noqa: E402

from corpus import load_corpus  # noqa: E402
from corpus.synthetic import SyntheticConfig, generate  # noqa: E402
from mmga_common.config import deep_merge  # noqa: E402
from stage1_encoders import Stage1Config, run_stage1  # noqa: E402

PRESET = Path(__file__).resolve().parents[1] / "bridge" / "presets" / "default.json"
STATES_LINE = re.compile(r"computed for every caption in ([0-9.]+) s")


class _StatesTime(logging.Handler):
    """Catches stage 1's log line that times the caption states."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.seconds: float | None = None

    def emit(self, record: logging.LogRecord) -> None:
        found = STATES_LINE.search(record.getMessage())
        if found:
            self.seconds = float(found.group(1))


def run_one(corpus_path: Path, work: Path, device: str, cpu_threads: int | None) -> dict:
    stage1 = json.loads(PRESET.read_text())["stage1"]
    trainer = {"accelerator": device, "enable_progress_bar": False, "loggers": []}
    if device == "cpu" and cpu_threads:
        trainer["num_threads"] = cpu_threads
    data = {
        "corpus": str(corpus_path),
        "cache_dir": str(work / f"cache_{device}"),
        "out_dir": str(work / f"out_{device}"),
        "trainer": trainer,
    }
    cfg = Stage1Config.from_dict(deep_merge(stage1, data))
    catcher = _StatesTime()
    logger = logging.getLogger("stage1_encoders")
    logger.addHandler(catcher)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        if device == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        run_stage1(cfg)
        if device == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
    finally:
        logger.removeHandler(catcher)
        logger.setLevel(level)
    corpus = load_corpus(corpus_path)
    row = {
        "device": device,
        "users": corpus.num_users,
        "posts": corpus.num_posts,
        "stage1_seconds": seconds,
        "stage1_posts_per_s": corpus.num_posts / seconds,
        "states_seconds": catcher.seconds,
        "states_posts_per_s": corpus.num_posts / catcher.seconds if catcher.seconds else None,
        "threads": torch.get_num_threads(),
    }
    if device == "cuda":
        row["gpu"] = torch.cuda.get_device_name()
        row["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, nargs="+", default=[2000], help="corpus sizes (users)")
    parser.add_argument("--devices", nargs="+", default=["cuda", "cpu"], choices=["cuda", "cpu"])
    parser.add_argument(
        "--cpu-threads", type=int, default=None, help="torch threads of the CPU rows (default: all)"
    )
    parser.add_argument(
        "--work", type=Path, default=None, help="folder for corpora and caches (default: temporary)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the rows to this file")
    args = parser.parse_args(argv)
    if "cuda" in args.devices and not torch.cuda.is_available():
        parser.error("--devices cuda: torch sees no CUDA device here")

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        for users in args.users:
            started = time.perf_counter()
            corpus_path = generate(work / f"corpus_{users}", SyntheticConfig(num_users=users, seed=0))
            print(f"[corpus] {users} users generated in {time.perf_counter() - started:.1f} s", flush=True)
            for device in args.devices:
                # each row in a fresh process: no row reuses another's caption states (stage 1 memoizes them
                # per process) or its warmed-up device
                with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
                    row = pool.submit(
                        run_one, corpus_path, work / f"run_{users}_{device}", device, args.cpu_threads
                    )
                    row = row.result()
                rows.append(row)
                states = row["states_posts_per_s"]
                print(
                    f"{device:5s} {row['users']:>7,} users {row['posts']:>9,} posts: stage 1 "
                    f"{row['stage1_seconds']:7.1f} s ({row['stage1_posts_per_s']:8,.0f} posts/s), caption states "
                    f"{row['states_seconds'] or float('nan'):6.1f} s ({states or float('nan'):8,.0f} posts/s), "
                    f"{row['threads']} threads",
                    flush=True,
                )
            by_device = {r["device"]: r for r in rows if r["users"] == users}
            if {"cuda", "cpu"} <= set(by_device):
                ratio = by_device["cpu"]["stage1_seconds"] / by_device["cuda"]["stage1_seconds"]
                print(
                    f"      {users:>7,} users: the GPU's stage 1 is {ratio:.1f}x as fast as the CPU's",
                    flush=True,
                )
    meta = {"python": platform.python_version(), "torch": torch.__version__, "rows": rows}
    if args.json is not None:
        args.json.write_text(json.dumps(meta, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
