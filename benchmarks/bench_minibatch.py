"""Stage 2's mini-batch paths (``trainer.batching=neighbor`` and ``subgraph``): how much of the graph a batch
touches, and whether the resident memory levels off (issue 23). A setting is ``batch_size:fanouts`` for
neighbour sampling (``256:10,5``) or ``batch_size:walkL`` for random-walk subgraphs (``256:walk2``: 256 roots,
walks of 2 steps).

``share``: for each setting, samples batches of one epoch (no training) on the
random graph of ``bench_gnn.py`` (nodes = edges / 10) and prints nodes and sampled edges per batch, as a share
of the graph, and batches per epoch.

``cap``: the case the mini-batch paths are for. Each path (one full-batch training step; ``--steps``
mini-batch steps at the first of ``--settings``) runs in its own process under an address-space cap
(``RLIMIT_AS``, ``--cap-mib``), and the table says whether it finished, its time per step, and its peak resident
set and peak address space (VmHWM, VmPeak); ``--cap-mib 0`` runs both uncapped, to size the cap.

``memory``: trains ``--steps`` mini-batch steps of the default model (masks, sampling, forward, losses,
backward, optimizer step; epochs repeat as needed), each arm in its own process, with
:func:`mmga_common.allocator.limit_allocator_caching` (the default) and without it, and prints the resident
set (VmRSS) along the way and its growth over the second half of the steps. With the setting ``full``, full-batch
steps instead, with :func:`mmga_common.allocator.retained_heap` (the default for full batch) and without it.

    nice -n 10 python benchmarks/bench_minibatch.py share --edges 1000000
    nice -n 10 python benchmarks/bench_minibatch.py share --edges 1000000 --settings 256:10,5 256:walk2
    nice -n 10 python benchmarks/bench_minibatch.py memory --edges 200000 --steps 200
    nice -n 10 python benchmarks/bench_minibatch.py memory --edges 1000000 --steps 100 --settings full
    nice -n 10 python benchmarks/bench_minibatch.py cap --edges 2000000 --cap-mib 0 --steps 20   # size the cap
    nice -n 10 python benchmarks/bench_minibatch.py cap --edges 2000000 --cap-mib 6000 --steps 20
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_gnn import _scaling_inputs, _status_kib  # noqa: E402

from mmga_common.allocator import retained_heap  # noqa: E402
from stage2_graph import MaskingDataset  # noqa: E402
from stage2_graph import minibatch as minibatch_module  # noqa: E402
from stage2_graph.config import ModelConfig, ObjectiveConfig, OptimConfig  # noqa: E402
from stage2_graph.minibatch import NeighborBatches, SubgraphBatches  # noqa: E402
from stage2_graph.system import Stage2System  # noqa: E402


def parse_setting(text: str) -> tuple[int, list[int] | int]:
    """``"256:10,5"`` -> (256, [10, 5]) (neighbour fan-outs); ``"256:walk2"`` -> (256, 2) (a walk length)."""
    size, rest = text.split(":")
    if rest.startswith("walk"):
        return int(size), int(rest[len("walk") :])
    return int(size), [int(f) for f in rest.split(",")]


def epoch_batches(text: str, structure, dataset, epoch: int = 0) -> NeighborBatches | SubgraphBatches:
    """One epoch's batches of a setting (see :func:`parse_setting`)."""
    batch_size, shape = parse_setting(text)
    if isinstance(shape, int):
        return SubgraphBatches(structure, dataset, shape, batch_size, epoch=epoch)
    return NeighborBatches(structure, dataset, shape, batch_size, epoch=epoch)


def share(args) -> None:
    inputs = _scaling_inputs(args.edges)
    system = Stage2System(inputs, ModelConfig(), ObjectiveConfig(), OptimConfig())
    structure = system.structure
    dataset = MaskingDataset(inputs.num_nodes, structure.edge_pairs, seed=0)
    directed = 2 * structure.num_edges
    print(f"{inputs.num_nodes:,} nodes, {structure.num_edges:,} undirected edges ({directed:,} directed)")
    header = (
        "batch_size",
        "sampling",
        "batches",
        "seeds",
        "nodes/batch",
        "node share",
        "edges/batch",
        "edge share",
        "sample ms",
    )
    print(" ".join(f"{h:>12}" for h in header))
    for setting in args.settings:
        batch_size, shape = parse_setting(setting)
        batches = epoch_batches(setting, structure, dataset)
        seeds, nodes, edges = [], [], []
        start = time.perf_counter()
        count = min(args.batches, len(batches))
        for index in range(count):
            batch = batches[index]
            seeds.append(batch["num_seeds"])
            nodes.append(batch["n_id"].numel())
            edges.append(batch["edge_index"].shape[1])
        ms = (time.perf_counter() - start) / count * 1e3
        mean = {name: sum(v) / len(v) for name, v in (("seeds", seeds), ("nodes", nodes), ("edges", edges))}
        values = (
            batch_size,
            f"walk {shape}" if isinstance(shape, int) else " ".join(map(str, shape)),
            len(batches),
            f"{mean['seeds']:,.0f}",
            f"{mean['nodes']:,.0f}",
            f"{mean['nodes'] / inputs.num_nodes:.1%}",
            f"{mean['edges']:,.0f}",
            f"{mean['edges'] / directed:.1%}",
            f"{ms:.1f}",
        )
        print(" ".join(f"{v:>12}" for v in values))


def memory_worker(args) -> dict:
    torch.set_num_threads(args.threads)
    full = args.settings[0] == "full"
    if args.no_fix and not full:
        minibatch_module.limit_allocator_caching = lambda *a, **k: False
    inputs = _scaling_inputs(args.edges)
    system = Stage2System(inputs, ModelConfig(), ObjectiveConfig(), OptimConfig())
    dataset = MaskingDataset(inputs.num_nodes, system.structure.edge_pairs, seed=0)
    optimizer = system.configure_optimizers()
    rss, step, epoch, start = [], 0, 0, time.perf_counter()
    with retained_heap(full and not args.no_fix):
        while step < args.steps:
            batches = (
                [dataset[(epoch, 0)]]
                if full
                else epoch_batches(args.settings[0], system.structure, dataset, epoch)
            )
            for batch in batches:
                optimizer.zero_grad()
                system.compute_losses(batch)["loss"].backward()
                optimizer.step()
                rss.append(_status_kib("VmRSS") / 1024)
                step += 1
                if step == args.steps:
                    break
            epoch += 1
        seconds = time.perf_counter() - start
    return {"rss_mib": rss, "seconds": seconds, "peak_mib": _status_kib("VmHWM") / 1024}


def cap_worker(args) -> dict:
    """One path under the address-space cap (run in a subprocess): finished or the error that stopped it."""
    if args.cap_mib > 0:
        limit = args.cap_mib * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    torch.set_num_threads(args.threads)
    start, steps = time.perf_counter(), 0
    try:
        inputs = _scaling_inputs(args.edges)
        system = Stage2System(inputs, ModelConfig(), ObjectiveConfig(), OptimConfig())
        dataset = MaskingDataset(inputs.num_nodes, system.structure.edge_pairs, seed=0)
        optimizer = system.configure_optimizers()
        start = time.perf_counter()
        if args.path == "full":
            batches = [dataset[(0, 0)]]
        else:
            loader = epoch_batches(args.settings[0], system.structure, dataset)
            batches = (loader[i] for i in range(min(args.steps, len(loader))))
        for batch in batches:
            optimizer.zero_grad()
            system.compute_losses(batch)["loss"].backward()
            optimizer.step()
            steps += 1
        error = None
    except (MemoryError, RuntimeError) as err:  # torch reports a failed allocation as RuntimeError
        error = f"{type(err).__name__}: {str(err).splitlines()[0][:90]}"
    return {
        "path": args.path,
        "finished": error is None,
        "error": error,
        "steps": steps,
        "s_per_step": (time.perf_counter() - start) / max(steps, 1),
        "peak_rss_mib": _status_kib("VmHWM") / 1024,
        "peak_vm_mib": _status_kib("VmPeak") / 1024,
    }


def cap(args) -> None:
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    limit = f"RLIMIT_AS {args.cap_mib} MiB" if args.cap_mib > 0 else "no cap"
    print(f"load average before: {load}; {args.edges:,} undirected edges; {limit}")
    print(f"{'path':>22} {'finished':>9} {'steps':>6} {'s/step':>7} {'peak RSS':>9} {'peak VM':>8}  error")
    for path in ("full", "minibatch"):
        command = [sys.executable, __file__, "cap", "--worker", "--path", path, "--edges", str(args.edges)]
        command += [
            "--steps",
            str(args.steps),
            "--threads",
            str(args.threads),
            "--cap-mib",
            str(args.cap_mib),
        ]
        command += ["--settings", args.settings[0]]
        done = subprocess.run(command, capture_output=True, text=True)
        lines = done.stdout.strip().splitlines()
        row = (
            json.loads(lines[-1])
            if done.returncode == 0 and lines
            else {
                "path": path,
                "finished": False,
                "steps": 0,
                "s_per_step": float("nan"),
                "peak_rss_mib": float("nan"),
                "peak_vm_mib": float("nan"),
                "error": f"exit code {done.returncode}: {done.stderr.strip()[-90:]}",
            }
        )
        name = "full batch" if path == "full" else f"mini-batch {args.settings[0]}"
        print(
            f"{name:>22} {str(row['finished']):>9} {row['steps']:>6} {row['s_per_step']:>7.2f} "
            f"{row['peak_rss_mib']:>9.0f} {row['peak_vm_mib']:>8.0f}  {row['error'] or ''}"
        )
    print(f"(MiB; load average after: {' '.join(Path('/proc/loadavg').read_text().split()[:3])})")


def memory(args) -> None:
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    print(f"load average before: {load}; {args.steps} steps, setting {args.settings[0]}")
    rows = {}
    policy = "retained_heap" if args.settings[0] == "full" else "limit_allocator_caching"
    for arm in (policy, "glibc default"):
        command = [
            sys.executable,
            __file__,
            "memory",
            "--worker",
            "--edges",
            str(args.edges),
            "--steps",
            str(args.steps),
            "--threads",
            str(args.threads),
            "--settings",
            args.settings[0],
        ]
        if arm == "glibc default":
            command.append("--no-fix")
        out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        rows[arm] = json.loads(out.strip().splitlines()[-1])
    marks = sorted({0, args.steps // 4, args.steps // 2, 3 * args.steps // 4, args.steps - 1})
    print(
        f"{'arm':>24} "
        + " ".join(f"{'step ' + str(m + 1):>10}" for m in marks)
        + f" {'growth 2nd half':>16} {'per step':>9} {'peak':>7} {'s/step':>7}"
    )
    for arm, row in rows.items():
        rss = row["rss_mib"]
        half = len(rss) // 2
        growth = rss[-1] - rss[half]
        print(
            f"{arm:>24} "
            + " ".join(f"{rss[m]:>10.0f}" for m in marks)
            + f" {growth:>16.0f} {growth / max(1, len(rss) - 1 - half):>9.2f} {row['peak_mib']:>7.0f}"
            f" {row['seconds'] / len(rss):>7.2f}"
        )
    print(f"(MiB; load average after: {' '.join(Path('/proc/loadavg').read_text().split()[:3])})")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mode", choices=["share", "memory", "cap"])
    parser.add_argument("--edges", type=int, default=1_000_000, help="undirected edges (nodes = edges / 10)")
    parser.add_argument(
        "--settings",
        nargs="+",
        default=[
            "1024:10,10",
            "512:10,5",
            "256:10,10",
            "256:10,5",
            "256:5,5",
            "128:10,5",
            "256:walk2",
            "1024:walk2",
        ],
        help="batch_size:fanouts (neighbour) or batch_size:walkL (subgraph) settings (memory and cap: the first; "
        "memory also takes full, for full-batch steps)",
    )
    parser.add_argument("--batches", type=int, default=20, help="share: batches sampled per setting")
    parser.add_argument("--steps", type=int, default=200, help="memory: training steps per arm")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (memory)")
    parser.add_argument("--cap-mib", type=int, default=0, help="cap: address-space limit per path (0 = none)")
    parser.add_argument("--path", choices=["full", "minibatch"], help=argparse.SUPPRESS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-fix", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode == "share":
        share(args)
    elif args.mode == "cap" and args.worker:
        print(json.dumps(cap_worker(args)))
    elif args.mode == "cap":
        cap(args)
    elif args.worker:
        print(json.dumps(memory_worker(args)))
    else:
        memory(args)


if __name__ == "__main__":
    main()
