"""Benchmark of the supervised GNN peers' epoch with ``F.dropout`` (the peer) against the ``feature_dropout`` they
use (``bridge/evaluation/peers.py``: the same distribution, its mask drawn by ``rand_like`` instead of
``bernoulli_``).

One epoch as ``bridge.evaluation.networks.train_network`` runs it: a training forward + backward + Adam step,
then an eval forward. On the default corpus's graph (the embedded synthetic generator, 1,000 users, 5,000 edges)
with random inputs as wide as the default run's no-align features (422), one thread, median of repeats taken in
turns; prints ms per epoch and the ratio.

    python benchmarks/bench_peer_dropout.py
    python benchmarks/bench_peer_dropout.py --repeats 9 --epochs 40
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmga_common import quiet_third_party  # noqa: E402

quiet_third_party()  # before torch-sparse's import warns about torch.jit.script

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch_sparse import SparseTensor  # noqa: E402

from bridge.evaluation import peers  # noqa: E402
from corpus import load_corpus  # noqa: E402
from corpus.synthetic import SyntheticConfig, generate  # noqa: E402


def epoch_ms(model: torch.nn.Module, x: torch.Tensor, graph, y: torch.Tensor, epochs: int) -> float:
    bound = peers.Bound(model, x, graph)
    opt = torch.optim.Adam(bound.parameters(), lr=1e-2)
    started = time.perf_counter()
    for _ in range(epochs):
        bound.train()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(bound(), y).backward()
        opt.step()
        bound.eval()
        with torch.no_grad():
            bound()
    return (time.perf_counter() - started) / epochs * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timings per variant, taken in turns (median)")
    parser.add_argument("--epochs", type=int, default=30, help="epochs per timing")
    parser.add_argument(
        "--width", type=int, default=422, help="input width (the default run's no-align features)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp) / "corpus", SyntheticConfig(num_users=1000))
        corpus = load_corpus(Path(tmp) / "corpus")
    n = corpus.num_users
    torch.manual_seed(0)
    x = torch.randn(n, args.width)
    y = torch.randint(0, 6, (n,))
    edge_index = peers.edge_index_of(corpus.edges)
    adj = SparseTensor(row=edge_index[1], col=edge_index[0], sparse_sizes=(n, n))
    ours = peers.feature_dropout
    with_f = lambda t, p, training: F.dropout(t, p, training)  # noqa: E731
    print(
        f"{n} users, {corpus.num_edges} edges, width {args.width}, 1 thread, {args.epochs} epochs x {args.repeats}"
    )
    for kind, graph in (("gcn", adj), ("gatv2", edge_index)):
        times: dict[str, list[float]] = {"F.dropout": [], "feature_dropout": []}
        for _ in range(args.repeats):
            for name, fn in (("F.dropout", with_f), ("feature_dropout", ours)):
                peers.feature_dropout = fn  # TwoLayerGNN.forward reads the module's name at call time
                try:
                    torch.manual_seed(0)
                    net = peers.GCN(args.width, 64, 6) if kind == "gcn" else peers.GATv2(args.width, 64, 6)
                    times[name].append(epoch_ms(net, x, graph, y, args.epochs))
                finally:
                    peers.feature_dropout = ours
        base, new = (statistics.median(times[k]) for k in ("F.dropout", "feature_dropout"))
        print(
            f"{kind:6s} F.dropout {base:6.1f} ms/epoch   feature_dropout {new:6.1f} ms/epoch   ratio {new / base:.2f}x"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
