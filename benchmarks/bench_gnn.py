"""Benchmark of the M-Gate layer against a plain torch-sparse SpMM layer (the floor) and PyG's GATConv and
GATv2Conv (the peers; GATv2Conv is the pair-aware one).

One synthetic graph (default: 60,000 nodes, 600,000 undirected edges, width 64); one forward+backward of each
layer (the M-Gate in its pair-aware default form "cosine", and in the "additive" and "gatv2" forms, its gate
computed by an MGate within the step, as the model does once per pass), median of a few repeats taken in
turns, on a fixed number of threads; prints times and ratios. Then the epoch time (one full-batch training
step of the default stage-2 model: masks, adjacency, forward, both losses, backward, optimizer) from 1e4 to
1e6 edges, each size in its own subprocess so that its peak memory (VmHWM, peak resident set) is its own.
The layers and the full-batch steps run with freed memory kept in glibc's heap, as stage 2's full batch does
(``mmga_common.allocator.retained_heap``); ``--system-malloc`` times them with glibc's default instead, where
every large temporary is mapped and faulted in again at each step.

    python benchmarks/bench_gnn.py                       # everything, 2 threads
    python benchmarks/bench_gnn.py --skip-scaling --repeats 7
    python benchmarks/bench_gnn.py --skip-layers --scaling-edges 1000000 --batching all --repeats 1
                                                         # full batch against both mini-batch paths
    python benchmarks/bench_gnn.py --skip-scaling --system-malloc   # the layers with glibc's default malloc
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmga_common import quiet_third_party  # noqa: E402

quiet_third_party()  # before torch-sparse's import prints its torch.jit warnings

import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402
from torch_geometric.nn import GATConv, GATv2Conv  # noqa: E402
from torch_sparse import SparseTensor  # noqa: E402

from mmga_common.allocator import retained_heap  # noqa: E402
from stage2_graph import GraphInputs, GraphStructure, MaskingDataset, MGateConv  # noqa: E402
from stage2_graph.config import ModelConfig, ObjectiveConfig, OptimConfig, TrainerConfig  # noqa: E402
from stage2_graph.export import compute_graph_outputs  # noqa: E402
from stage2_graph.gate import MGate, uniform_gate  # noqa: E402
from stage2_graph.minibatch import NeighborBatches, SubgraphBatches  # noqa: E402
from stage2_graph.system import Stage2System  # noqa: E402

GATE_DIMS = (16, 64, 64)  # X statistics, image and text embedding widths fed to the gate


def random_edges(num_nodes: int, num_edges: int, seed: int) -> Tensor:
    """``[E, 2]`` unique undirected pairs ``u < v`` drawn uniformly."""
    generator = torch.Generator().manual_seed(seed)
    keys = torch.empty(0, dtype=torch.long)
    while keys.numel() < num_edges:
        draw = int((num_edges - keys.numel()) * 1.1) + 16
        a = torch.randint(0, num_nodes, (draw,), generator=generator)
        b = torch.randint(0, num_nodes, (draw,), generator=generator)
        low, high = torch.minimum(a, b), torch.maximum(a, b)
        keys = torch.unique(torch.cat([keys, (low * num_nodes + high)[low != high]]))
    keys = keys[torch.randperm(keys.numel(), generator=generator)[:num_edges]].sort().values
    return torch.stack([keys // num_nodes, keys % num_nodes], dim=1)


class SpmmLayer(nn.Module):
    """The floor: ``h + A_mean (W h) + b`` with fixed edge values, one torch-sparse SpMM."""

    def __init__(self, channels: int):
        super().__init__()
        self.lin = nn.Linear(channels, channels, bias=False)
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor, adj_t: SparseTensor) -> Tensor:
        return x + adj_t.matmul(self.lin(x)) + self.bias


def median_time(step, repeats: int) -> float:
    step()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved_medians(steps: dict[str, Callable[[], None]], repeats: int) -> dict[str, float]:
    """Median time of each step, run in turns (one of each per round) so that a shared machine's load
    falls on all of them alike."""
    for step in steps.values():
        step()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def bench_layers(args) -> dict[str, float]:
    num_nodes, num_edges, width = args.nodes, args.edges, args.width
    edges = random_edges(num_nodes, num_edges, seed=0)
    structure = GraphStructure(edges, num_nodes)
    adj_t, _ = structure.adj_t()
    edge_index = torch.stack([structure.col, structure.row])  # PyG: row 0 source, row 1 target
    torch.manual_seed(0)
    x = torch.randn(num_nodes, width, requires_grad=True)
    gate_features = torch.randn(num_nodes, GATE_DIMS[0])
    modality_masks = [torch.rand(num_nodes) > 0.1, torch.rand(num_nodes) > 0.1]
    modalities = [torch.randn(num_nodes, d) * m[:, None] for d, m in zip(GATE_DIMS[1:], modality_masks)]
    gate_args = (gate_features, adj_t, modalities, modality_masks)

    def mgate(heads: int, normalization: str = "sigmoid", form: str = "cosine") -> Callable[[], Tensor]:
        """One M-Gate layer step: the gate from an :class:`MGate`, then the layer with it (both timed)."""
        gate = MGate(GATE_DIMS[0], GATE_DIMS[1:], heads, normalization, form=form)
        conv = MGateConv(width, width, heads=heads)
        return lambda: conv(x, adj_t, gate(*gate_args))

    floor = SpmmLayer(width)
    floor_adj = adj_t.set_value(uniform_gate(adj_t).view(-1), layout="csr")
    gat = GATConv(width, width // args.heads, heads=args.heads)
    gatv2 = GATv2Conv(width, width // args.heads, heads=args.heads)
    pair_layer, additive_layer = mgate(args.heads), mgate(args.heads, form="additive")
    gatv2_form_layer, softmax_layer = mgate(args.heads, form="gatv2"), mgate(args.heads, "softmax")
    forwards = {
        "floor_spmm": lambda: floor(x, floor_adj),
        "mgate": pair_layer,
        "gatv2conv": lambda: gatv2(x, edge_index),
        "mgate_additive": additive_layer,
        "mgate_gatv2": gatv2_form_layer,
        "gatconv": lambda: gat(x, edge_index),
        "mgate_softmax": softmax_layer,
    }
    if args.heads == 1:
        forwards["mgate_4_heads"] = mgate(4)

    def step(forward):
        def run():
            x.grad = None
            forward().sum().backward()

        return run

    return interleaved_medians({name: step(forward) for name, forward in forwards.items()}, args.repeats)


def _status_kib(field: str) -> int:
    """A memory figure of this process from /proc/self/status (``VmHWM``: peak resident set; unlike
    ``ru_maxrss`` it starts afresh at exec, so the parent's peak does not leak into a subprocess's)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _scaling_inputs(num_edges: int) -> GraphInputs:
    """The scaling study's graph: nodes = edges / 10, random X, image and text (10% of users lack each)."""
    num_nodes = max(num_edges // 10, 100)
    generator = torch.Generator().manual_seed(0)
    masks = [torch.rand(num_nodes, generator=generator) > 0.1 for _ in range(2)]
    return GraphInputs(
        features=torch.randn(num_nodes, GATE_DIMS[0], generator=generator),
        edges=random_edges(num_nodes, num_edges, seed=1),
        fingerprint="bench",
        modalities=tuple(
            torch.randn(num_nodes, d, generator=generator) * m[:, None] for d, m in zip(GATE_DIMS[1:], masks)
        ),
        modality_masks=tuple(masks),
    )


def epoch_worker(num_edges: int, repeats: int, threads: int) -> dict[str, float]:
    """One size of the scaling study (run in a subprocess): default model, full training steps."""
    torch.set_num_threads(threads)
    baseline_kib = _status_kib("VmRSS")
    inputs = _scaling_inputs(num_edges)
    num_nodes = inputs.num_nodes
    system = Stage2System(inputs, ModelConfig(), ObjectiveConfig(), OptimConfig())
    dataset = MaskingDataset(num_nodes, system.structure.edge_pairs, seed=0)
    optimizer = system.configure_optimizers()
    step_index = [0]

    def step():
        batch = dataset[(step_index[0], 0)]
        step_index[0] += 1
        optimizer.zero_grad()
        system.compute_losses(batch)["loss"].backward()
        optimizer.step()

    seconds = median_time(step, repeats)
    peak_kib = _status_kib("VmHWM")
    # The floor at this size, for reference: one plain SpMM layer's forward+backward at width 64.
    adj_t, _ = system.structure.adj_t()
    floor_adj = adj_t.set_value(uniform_gate(adj_t).view(-1), layout="csr")
    floor, x = SpmmLayer(64), torch.randn(num_nodes, 64, requires_grad=True)
    floor_seconds = median_time(lambda: floor(x, floor_adj).sum().backward(), repeats)
    start = time.perf_counter()
    compute_graph_outputs(system)  # the export's full-graph forward (no gradients), for the neighbor table
    export_seconds = time.perf_counter() - start
    return {
        "export_s": export_seconds,
        "edges": num_edges,
        "nodes": num_nodes,
        "epoch_s": seconds,
        "floor_s": floor_seconds,
        "peak_rss_mib": peak_kib / 1024,
        "peak_above_imports_mib": (peak_kib - baseline_kib) / 1024,
    }


def minibatch_epoch_worker(
    num_edges: int,
    repeats: int,
    threads: int,
    path: str,
    fanouts: list[int],
    walk_length: int,
    batch_size: int,
    export: str,
) -> dict[str, float]:
    """The same model and objectives trained by ``trainer.batching=neighbor`` or ``subgraph`` (``path``; run in
    a subprocess): an epoch is every mini-batch of ``NeighborBatches`` or ``SubgraphBatches`` (masks, sampling,
    forward, losses, backward, optimizer step); then the export's forward, full or layer-wise. Peak memory is
    this process's own."""
    torch.set_num_threads(threads)
    baseline_kib = _status_kib("VmRSS")
    inputs = _scaling_inputs(num_edges)
    system = Stage2System(inputs, ModelConfig(), ObjectiveConfig(), OptimConfig())
    dataset = MaskingDataset(inputs.num_nodes, system.structure.edge_pairs, seed=0)
    optimizer = system.configure_optimizers()
    epoch_times, batches_per_epoch, batch_nodes, batch_edges = [], 0, [], []
    for epoch in range(repeats):
        start = time.perf_counter()
        if path == "neighbor":
            batches = NeighborBatches(system.structure, dataset, fanouts, batch_size, epoch=epoch)
        else:
            batches = SubgraphBatches(system.structure, dataset, walk_length, batch_size, epoch=epoch)
        for batch in batches:
            optimizer.zero_grad()
            system.compute_losses(batch)["loss"].backward()
            optimizer.step()
            batch_nodes.append(batch["n_id"].numel())
            batch_edges.append(batch["edge_index"].shape[1])
        epoch_times.append(time.perf_counter() - start)
        batches_per_epoch = len(batches)
    train_peak_kib = _status_kib("VmHWM")
    start = time.perf_counter()
    compute_graph_outputs(system, batch_size if export == "layerwise" else None)
    export_seconds = time.perf_counter() - start
    peak_kib = _status_kib("VmHWM")
    return {
        "edges": num_edges,
        "nodes": inputs.num_nodes,
        "epoch_s": statistics.median(epoch_times),
        "batches": batches_per_epoch,
        "mean_batch_nodes": statistics.mean(batch_nodes),
        "mean_batch_edges": statistics.mean(batch_edges),
        "export_s": export_seconds,
        "train_peak_rss_mib": train_peak_kib / 1024,
        "peak_rss_mib": peak_kib / 1024,
        "peak_above_imports_mib": (peak_kib - baseline_kib) / 1024,
        "train_peak_above_imports_mib": (train_peak_kib - baseline_kib) / 1024,
    }


def _run_worker(args, *extra: str) -> dict[str, float]:
    command = [
        sys.executable,
        __file__,
        "--repeats",
        str(args.repeats),
        "--threads",
        str(args.threads),
        *(["--system-malloc"] if args.system_malloc else []),
        *extra,
    ]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def bench_scaling(args) -> list[dict[str, float]]:
    return [_run_worker(args, "--worker", str(num_edges)) for num_edges in args.scaling_edges]


def _batch_size(args, path: str) -> int:
    """``--batch-size``, or the config's default for ``path`` (``trainer.batch_size`` left unset)."""
    return TrainerConfig(batching=path, batch_size=args.batch_size).resolved_batch_size


def bench_minibatch(args, path: str) -> list[dict[str, float]]:
    fanouts = [str(f) for f in args.fanouts]
    return [
        _run_worker(
            args,
            "--minibatch-worker",
            str(num_edges),
            "--path",
            path,
            "--fanouts",
            *fanouts,
            "--walk-length",
            str(args.walk_length),
            "--batch-size",
            str(_batch_size(args, path)),
            "--export",
            args.export,
        )
        for num_edges in args.scaling_edges
    ]


def print_minibatch(args, path: str, rows: list[dict[str, float]], full_rows: list[dict[str, float]]) -> None:
    if path == "neighbor":
        print(
            f"\nbatching=neighbor: fanouts {args.fanouts}, batch_size {_batch_size(args, path)} seed nodes (+ up to "
            f"batch_size/4 held-out edges and negatives each), {args.export} export; one process per size"
        )
    else:
        print(
            f"\nbatching=subgraph: walks of {args.walk_length} steps from batch_size {_batch_size(args, path)} roots (+ the"
            f" endpoints of up to batch_size/4 held-out edges and negatives each), {args.export} export; one "
            "process per size"
        )
    full_by_edges = {row["edges"]: row for row in full_rows}
    header = (
        "edges",
        "batches",
        "nodes/batch",
        "edges/batch",
        "epoch ms",
        "x full epoch",
        "export ms",
        "full export ms",
        "train peak MiB",
        "above imports",
        "full peak MiB",
        "above imports",
    )
    print("  " + " ".join(f"{name:>14}" for name in header))
    for row in rows:
        full = full_by_edges.get(row["edges"])
        values = (
            f"{row['edges']:,}",
            f"{row['batches']}",
            f"{row['mean_batch_nodes']:,.0f}",
            f"{row['mean_batch_edges']:,.0f}",
            f"{row['epoch_s'] * 1e3:.1f}",
            f"{row['epoch_s'] / full['epoch_s']:.1f}" if full else "-",
            f"{row['export_s'] * 1e3:.1f}",
            f"{full['export_s'] * 1e3:.1f}" if full else "-",
            f"{row['train_peak_rss_mib']:.0f}",
            f"{row['train_peak_above_imports_mib']:.0f}",
            f"{full['peak_rss_mib']:.0f}" if full else "-",
            f"{full['peak_above_imports_mib']:.0f}" if full else "-",
        )
        print("  " + " ".join(f"{value:>14}" for value in values))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--nodes", type=int, default=60_000, help="nodes of the layer benchmark's graph (default 60,000)"
    )
    parser.add_argument("--edges", type=int, default=600_000, help="its undirected edges (default 600,000)")
    parser.add_argument("--width", type=int, default=64, help="input and output channels (default 64)")
    parser.add_argument(
        "--heads",
        type=int,
        default=1,
        help="gate heads of M-Gate, GATConv and GATv2Conv (default 1; 4 heads are timed too)",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument(
        "--repeats", type=int, default=5, help="timed repeats per measurement; the median is printed"
    )
    parser.add_argument("--skip-layers", action="store_true", help="skip the layer comparison")
    parser.add_argument("--skip-scaling", action="store_true", help="skip the epoch-time scaling study")
    parser.add_argument(
        "--scaling-edges",
        type=int,
        nargs="+",
        default=[10_000, 30_000, 100_000, 300_000, 1_000_000],
        help="edge counts of the scaling study (nodes = edges / 10)",
    )
    parser.add_argument(
        "--batching",
        choices=["full", "neighbor", "subgraph", "both", "all"],
        default="full",
        help="scaling study of full-batch epochs, and of neighbor-sampled or random-walk subgraph mini-batch "
        "epochs against them: neighbor (or both) = full and neighbor, subgraph = full and subgraph, all = the "
        "three (default full)",
    )
    parser.add_argument(
        "--fanouts",
        type=int,
        nargs="+",
        default=[10, 5],
        help="neighbor fan-outs (default 10 5, the config's)",
    )
    parser.add_argument(
        "--walk-length",
        type=int,
        default=2,
        help="subgraph: random-walk steps from each root (default 2, the config's)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="neighbor seed nodes / subgraph roots per batch (default the config's: 256 / 1,024)",
    )
    parser.add_argument(
        "--export",
        choices=["layerwise", "full"],
        default="layerwise",
        help="mini-batch paths: export forward (default layerwise, to set it beside the full forward of the full-batch "
        "rows; the pipeline's trainer.inference auto is full)",
    )
    parser.add_argument(
        "--system-malloc",
        action="store_true",
        help="layers and full batch with glibc's default malloc behaviour, as trainer.retain_freed_memory=false "
        "(default: freed memory kept in the heap, as stage 2's full batch does; mmga_common.allocator)",
    )
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--minibatch-worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--path", choices=["neighbor", "subgraph"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    retain = not args.system_malloc  # as stage 2's full batch (trainer.retain_freed_memory)
    if args.worker is not None:
        with retained_heap(retain):
            print(json.dumps(epoch_worker(args.worker, args.repeats, args.threads)))
        return
    if args.minibatch_worker is not None:
        row = minibatch_epoch_worker(
            args.minibatch_worker,
            args.repeats,
            args.threads,
            args.path,
            args.fanouts,
            args.walk_length,
            args.batch_size,
            args.export,
        )
        print(json.dumps(row))
        return

    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else ["?"]
    print(f"threads={args.threads} repeats={args.repeats} (median); load average before: {' '.join(load)}")
    print(f"malloc: {'freed memory kept in the heap (retained_heap)' if retain else 'glibc default'}")
    start = time.perf_counter()
    if not args.skip_layers:
        print(
            f"\nlayer forward+backward: {args.nodes:,} nodes, {args.edges:,} undirected edges, width {args.width}"
        )
        with retained_heap(retain):
            times = bench_layers(args)
        floor = times["floor_spmm"]
        labels = {
            "floor_spmm": "torch-sparse SpMM layer (floor)",
            "mgate": f"M-Gate, cosine (default) ({args.heads} head(s))",
            "mgate_additive": f"M-Gate, additive (eq. 5) ({args.heads} head(s))",
            "mgate_gatv2": f"M-Gate, gatv2 form ({args.heads} head(s))",
            "mgate_softmax": f"M-Gate, cosine, softmax ({args.heads} head(s))",
            "mgate_4_heads": "M-Gate, cosine (4 heads)",
            "gatconv": f"PyG GATConv ({args.heads} head(s))",
            "gatv2conv": f"PyG GATv2Conv ({args.heads} head(s))",
        }
        for name, seconds in times.items():
            print(
                f"  {labels[name]:<44} {seconds * 1e3:8.1f} ms   {seconds / floor:5.2f}x floor"
                f"   {seconds / times['gatv2conv']:5.2f}x GATv2Conv"
            )
        print(
            f"  M-Gate (cosine) / floor: {times['mgate'] / floor:.2f} (target <= 1.5); "
            f"/ GATv2Conv: {times['mgate'] / times['gatv2conv']:.2f} (target <= 0.5); "
            f"/ GATConv: {times['mgate'] / times['gatconv']:.2f}"
        )
    if not args.skip_scaling:
        print(
            "\nepoch = one full-batch training step of the default model (nodes = edges / 10), one process per"
            " size;\nfloor = one plain SpMM layer's forward+backward at the same size (width 64)"
        )
        rows = bench_scaling(args)  # full batch: the mini-batch paths' reference
        base = rows[0] if rows else None
        header = (
            "edges",
            "nodes",
            "epoch ms",
            "us/edge",
            "x time",
            "x edges",
            "floor ms",
            "epoch/floor",
            "peak RSS MiB",
            "above imports",
        )
        print("  " + " ".join(f"{name:>13}" for name in header))
        for row in rows:
            values = (
                f"{row['edges']:,}",
                f"{row['nodes']:,}",
                f"{row['epoch_s'] * 1e3:.1f}",
                f"{row['epoch_s'] / row['edges'] * 1e6:.2f}",
                f"{row['epoch_s'] / base['epoch_s']:.1f}",
                f"{row['edges'] / base['edges']:.0f}",
                f"{row['floor_s'] * 1e3:.1f}",
                f"{row['epoch_s'] / row['floor_s']:.1f}",
                f"{row['peak_rss_mib']:.0f}",
                f"{row['peak_above_imports_mib']:.0f}",
            )
            print("  " + " ".join(f"{value:>13}" for value in values))
        if args.batching in ("neighbor", "both", "all"):
            print_minibatch(args, "neighbor", bench_minibatch(args, "neighbor"), rows)
        if args.batching in ("subgraph", "all"):
            print_minibatch(args, "subgraph", bench_minibatch(args, "subgraph"), rows)
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else ["?"]
    print(f"\nload average after: {' '.join(load)} ({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
