"""Does training stage 2 on random-walk subgraphs (``trainer.batching=subgraph``) cost the embeddings anything
against full batch, on a corpus large enough that a batch is a small share of the graph? (issue 23)

The whole pipeline's comparison (docs/performance.md) ran at 1,000 users, where 64 roots already cover 28% of
the users. This one trains stage 2 alone, on X and the graph only (``use_modalities`` off: no stage 1 needed),
full batch and on subgraphs for the same number of epochs, for a few seeds, and scores R^G with the report's
own linear probe (topic macro-F1, fans MAE; the corpus's splits). It also prints each path's fit time and the
subgraphs' share of the users.

    python -m corpus.synthetic --out /tmp/corpus10k --users 10000 --posts-per-user 1 --image-size 8
    python benchmarks/subgraph_quality.py /tmp/corpus10k --batch-size 64 --epochs 200 --seeds 0 1 2

Several ``--batch-size`` values compare several subgraph sizes against the same full-batch runs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmga_common import quiet_third_party  # noqa: E402

quiet_third_party()

from run_probe import probe, summary_line  # noqa: E402

from cache import read_graph_outputs  # noqa: E402
from corpus import load_corpus  # noqa: E402
from stage2_graph import Stage2Config, run_stage2  # noqa: E402


def train_and_probe(
    corpus, corpus_dir: Path, work: Path, seed: int, trainer: dict
) -> tuple[float, float, float]:
    """Stage 2 on X and the graph with ``trainer``'s batching; ``(topic macro-F1, fans MAE, fit seconds)``."""
    cfg = Stage2Config.from_dict(
        {
            "corpus": str(corpus_dir),
            "cache_dir": str(work / "cache"),
            "out_dir": str(work / "out"),
            "seed": seed,
            "use_modalities": False,
            "trainer": {
                "loggers": [],
                "enable_progress_bar": False,
                "checkpoint_every_n_steps": None,
                **trainer,
            },
        }
    )
    result = run_stage2(cfg, corpus, force=True)
    outputs = read_graph_outputs(
        cfg.cache_dir,
        0,
        fingerprint=corpus.fingerprint,
        num_users=corpus.num_users,
        num_edges=corpus.num_edges,
    )
    topic, fans = probe(np.asarray(outputs.user_graph_emb), corpus)
    return topic, fans, result.metrics["fit_seconds"]


def _sd(values: np.ndarray) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("corpus", type=Path, help="a corpus folder")
    parser.add_argument(
        "--batch-size",
        type=int,
        nargs="+",
        default=[64],
        help="subgraph roots per batch; several values give one subgraph path each (default 64)",
    )
    parser.add_argument("--walk-length", type=int, default=2, help="random-walk steps (default 2)")
    parser.add_argument("--epochs", type=int, default=200, help="epochs of each path (default 200)")
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (default 0 1 2)"
    )
    args = parser.parse_args()
    corpus = load_corpus(args.corpus)
    print(
        f"{corpus.num_users:,} users, {corpus.num_edges:,} edges; walks of {args.walk_length}; "
        f"{args.epochs} epochs each path"
    )
    paths = {"full batch": {"batching": "full", "max_steps": args.epochs}}
    for size in args.batch_size:
        num_batches = -(-corpus.num_users // (size * (args.walk_length + 1)))
        name = f"subgraph {size}" if len(args.batch_size) > 1 else "subgraph"
        print(f"  {name}: {size} roots a batch, {num_batches} batches per epoch")
        paths[name] = {
            "batching": "subgraph",
            "batch_size": size,
            "walk_length": args.walk_length,
            "max_steps": -1,
            "max_epochs": args.epochs,
        }
    scores = {name: ([], [], []) for name in paths}
    for seed in args.seeds:
        for name, trainer in paths.items():
            with tempfile.TemporaryDirectory() as work:
                topic, fans, seconds = train_and_probe(corpus, args.corpus, Path(work), seed, trainer)
            for store, value in zip(scores[name], (topic, fans, seconds)):
                store.append(value)
            print(
                f"  seed {seed} {name:13s} topic {topic:.3f}  fans MAE {fans:.3f}  fit {seconds:.1f} s",
                flush=True,
            )
    print("\nR^G (stage 2 on X and the graph), the report's probe, mean ± sd over seeds:")
    for name, (topic, fans, seconds) in scores.items():
        print(summary_line(name, topic, fans, 13) + f"   fit {np.mean(seconds):.1f} s")
    full_topic, full_fans, _ = scores["full batch"]
    for name, (topic, fans, _) in scores.items():
        if name == "full batch":
            continue
        margin_topic = np.subtract(topic, full_topic)
        margin_fans = np.subtract(fans, full_fans)
        print(
            f"  {name} - full batch, paired by seed: topic {margin_topic.mean():+.3f} ± "
            f"{_sd(margin_topic):.3f}, fans MAE {margin_fans.mean():+.3f} ± {_sd(margin_fans):.3f} "
            "(higher is worse)"
        )


if __name__ == "__main__":
    main()
