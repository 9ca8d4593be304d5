"""What one epoch of the report's fine-tuned rows costs, and where it goes, on a run folder whose stage 2 has run.

The report's ``mmga_finetuned`` and ``scratch_finetuned`` rows train one network per task, head seed, learning
rate and weight decay (8 per row by default), each up to ``gcn_max_epochs`` full-batch epochs with early stopping
(``bridge.evaluation.networks.train_network``); an epoch is a training step (forward, loss on the train users,
backward, Adam) and a forward in eval mode for the val loss. This script builds the row's network exactly as the
evaluation does (``bridge.rounds.evaluate.finetune_network``, the last round's stage-2 checkpoint from the
manifest), on one thread as the evaluation runs it, times ``--epochs`` epochs of the topic task after two warm-up
epochs, and prints the median epoch, its two halves (training step, val forward), the time per directed edge and
per user, and the epochs the report's networks ran (``report/metrics.json``, when the run finished); with
``--profile`` the operators that take most of the time (``torch.profiler``, self CPU time).

    python benchmarks/finetune_epochs.py RUN_DIR
    python benchmarks/finetune_epochs.py RUN_DIR --corpus DIR --epochs 10 --profile
    python benchmarks/finetune_epochs.py RUN_DIR --device cuda     # the same epoch on a GPU (eval.device=cuda)

Run it on an idle machine: it compares sizes, not runs; the load average is printed with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmga_common import quiet_third_party  # noqa: E402

quiet_third_party()

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bridge.evaluation import tasks  # noqa: E402
from bridge.evaluation.config import EvalConfig  # noqa: E402
from bridge.evaluation.loop import prepare_targets  # noqa: E402
from bridge.evaluation.networks import train_step, val_outputs  # noqa: E402
from bridge.evaluation.rows import report_rows  # noqa: E402
from bridge.rounds.evaluate import finetune_network, stage2_checkpoint  # noqa: E402
from bridge.rounds.stages import process_corpus  # noqa: E402
from bridge.runfolder import Manifest, RunPaths  # noqa: E402
from mmga_common.allocator import retained_heap  # noqa: E402
from mmga_common.runtime import TORCH_DEVICES, resolve_torch_device  # noqa: E402
from mmga_common.threads import torch_threads  # noqa: E402


def report_epochs(run_dir: Path, row: str) -> list[int]:
    """The epochs each chosen network of ``row`` ran (every training seed and task), from the finished run's
    metrics.json ([] without it)."""
    path = run_dir / "report" / "metrics.json"
    if not path.exists():
        return []
    per_seed = json.loads(path.read_text(encoding="utf-8")).get("rows", {}).get(row, {}).get("per_seed", {})
    return [
        int(choice["epochs"])
        for seed in per_seed.values()
        for task in ("topic", "fans")
        for choice in seed.get(task, {}).get("chosen", [])
        if choice.get("epochs")
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run_dir", type=Path, help="a bridge run folder whose last round's stage 2 has run")
    parser.add_argument(
        "--corpus", type=Path, help="the corpus (default: the one the run folder is bound to)"
    )
    parser.add_argument("--row", default="mmga_finetuned", choices=("mmga_finetuned", "scratch_finetuned"))
    parser.add_argument("--seed", type=int, default=0, help="training seed of the run (default 0)")
    parser.add_argument("--epochs", type=int, default=10, help="epochs timed after two warm-up epochs")
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--profile", action="store_true", help="print the costliest operators of 3 epochs")
    parser.add_argument(
        "--device",
        default="cpu",
        choices=TORCH_DEVICES,
        help="where the network trains, as the report's eval.device (default cpu; the CPU runs one thread)",
    )
    args = parser.parse_args(argv)

    manifest = Manifest.load(args.run_dir / "manifest.json", log=None)
    corpus_dir = args.corpus or manifest.corpus_path
    if corpus_dir is None:
        raise SystemExit(f"{args.run_dir}: the run folder names no corpus; pass --corpus")
    load = os.getloadavg()
    corpus = process_corpus(str(corpus_dir))
    paths = RunPaths(args.run_dir).for_seed(args.seed)
    rounds = 1 + max(key.round for key in manifest.stage_keys())
    row = next(r for r in report_rows(rounds, False, False, True) if r.name == args.row)
    make, _ = finetune_network(row, corpus, paths, stage2_checkpoint(row, paths, manifest))
    known = tasks.known_targets(corpus.labels, corpus.fans)
    targets = prepare_targets(
        "topic", corpus.labels, known["topic"], corpus.splits, EvalConfig().fans_buckets
    )
    device = torch.device(resolve_torch_device(args.device))
    idx = {name: torch.from_numpy(np.flatnonzero(mask)).to(device) for name, mask in targets.masks.items()}
    target = torch.from_numpy(targets.standardized()).to(device)
    edges = 2 * len(corpus.edges)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    with torch_threads(1), retained_heap():
        torch.manual_seed(0)
        started = time.perf_counter()
        model, groups = make(targets, 0, args.lr)
        model.to(device)
        sync()
        build = time.perf_counter() - started
        opt = torch.optim.Adam(groups, lr=args.lr)

        def epoch() -> tuple[float, float]:
            """One epoch as ``train_network`` runs it; (training step, val forward) seconds."""
            started = time.perf_counter()
            train_step(model, opt, target, idx["train"], "topic")
            sync()
            trained = time.perf_counter()
            val_outputs(model, target, idx["val"], "topic")  # its loss is read on the host: synchronised
            return trained - started, time.perf_counter() - trained

        for _ in range(2):
            epoch()
        times = [epoch() for _ in range(args.epochs)]
        if args.profile:
            from torch.profiler import ProfilerActivity, profile

            activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
            with profile(activities=activities) as prof:
                for _ in range(3):
                    epoch()
    step = statistics.median(t for t, _ in times)
    val = statistics.median(v for _, v in times)
    total = statistics.median(t + v for t, v in times)
    print(
        f"{args.row} on {corpus_dir}: {corpus.num_users:,} users, {edges:,} directed edges, "
        f"{'1 thread' if device.type == 'cpu' else torch.cuda.get_device_name(device)}, "
        f"load {load[0]:.2f} before, {os.getloadavg()[0]:.2f} after"
    )
    print(f"  network built in {build:.1f} s")
    print(
        f"  epoch {total * 1e3:.1f} ms (median of {args.epochs}): training step {step * 1e3:.1f} ms, "
        f"val forward {val * 1e3:.1f} ms; {total / edges * 1e6:.3f} us per directed edge, "
        f"{total / corpus.num_users * 1e6:.1f} us per user"
    )
    epochs = report_epochs(args.run_dir, args.row)
    if epochs:
        print(
            f"  the report's chosen networks ran {min(epochs)}-{max(epochs)} epochs (median "
            f"{statistics.median(epochs):g}): about {statistics.median(epochs) * total:.0f} s per network"
        )
    if args.profile:
        key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        print(prof.key_averages().table(sort_by=key, row_limit=15))


if __name__ == "__main__":
    main()
