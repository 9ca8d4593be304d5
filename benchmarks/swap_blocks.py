"""Which block of MMGA's fused representation makes a row differ from ``no_align``'s? Swap the blocks.

Reads the caches of a finished bridge run folder (both ``mmga`` and ``no_align`` trained), builds
[R^G || R^T || R^I] from every mix of the two variants' blocks of the last round, and scores each with the
report's own linear probe (``bridge.evaluation.heads.evaluate_representation``: the same heads, splits and
choice on val), per training seed. A row that moves with one block and not with the others locates the gap.

    python benchmarks/swap_blocks.py runs/default
    python benchmarks/swap_blocks.py runs/default --round 0

Prints topic macro-F1 and fans MAE, mean ± sd over the run's training seeds, for each mix.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmga_common import quiet_third_party  # noqa: E402

quiet_third_party()

from bridge.evaluation.heads import evaluate_representation  # noqa: E402
from bridge.runfolder import RunPaths  # noqa: E402
from bridge.runfolder.caches import read_encoders, read_graph  # noqa: E402
from corpus import load_corpus  # noqa: E402

# mix name -> (variant of R^G, variant of R^T, variant of R^I); None leaves the block out
MIXES = {
    "MMGA (all its own blocks)": ("mmga", "mmga", "mmga"),
    "no_align (all its own blocks)": ("no_align", "no_align", "no_align"),
    "MMGA's R^G, no_align's R^T and R^I": ("mmga", "no_align", "no_align"),
    "no_align's R^G, MMGA's R^T and R^I": ("no_align", "mmga", "mmga"),
    "MMGA's R^G alone": ("mmga", None, None),
    "no_align's R^G alone": ("no_align", None, None),
}


def _sd(values: list[float]) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "run_dir", type=Path, help="a finished bridge run folder that trained mmga and no_align"
    )
    parser.add_argument("--round", type=int, default=None, help="the round to read (default: the last one)")
    parser.add_argument(
        "--seeds", type=int, nargs="*", default=None, help="training seeds (default: every one)"
    )
    args = parser.parse_args(argv)

    if not (args.run_dir / "corpus").is_dir():
        parser.error(f"{args.run_dir}: no corpus/ folder; is it a bridge run folder?")
    corpus = load_corpus(args.run_dir / "corpus")
    seeds = args.seeds
    if seeds is None:
        seeds = sorted(int(p.name.split("_")[1]) for p in args.run_dir.glob("seed_*") if p.is_dir())
    if not seeds:
        parser.error(f"{args.run_dir}: no seed_* folders; is it a bridge run folder?")
    rnd = args.round
    if rnd is None:
        rnd = max(
            int(p.name.split("_")[1]) for p in (args.run_dir / f"seed_{seeds[0]}" / "mmga").glob("round_*")
        )
    scores: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in MIXES}
    for seed in seeds:
        paths = RunPaths(args.run_dir).for_seed(seed)
        blocks = {}
        for variant in ("mmga", "no_align"):
            enc = read_encoders(paths.cache_dir(variant), rnd, corpus)
            graph = read_graph(paths.cache_dir(variant), rnd, corpus)
            blocks[variant] = (graph.user_graph_emb, enc.user_text_emb, enc.user_image_emb)
        for name, sources in MIXES.items():
            parts = [blocks[v][k] for k, v in enumerate(sources) if v is not None]
            x = np.concatenate([np.asarray(p, dtype=np.float32) for p in parts], axis=1)
            ev = evaluate_representation(x, corpus.labels, corpus.fans, corpus.splits)
            scores[name][0].append(ev.topic.scores["macro_f1"].mean)
            scores[name][1].append(ev.fans.scores["mae"].mean)
    print(f"{args.run_dir}: round {rnd}, training seeds {seeds}; mean ± sd over the seeds")
    for name, (topic, fans) in scores.items():
        print(
            f"  {name:38s} topic macro-F1 {np.mean(topic):.3f} ± {_sd(topic):.3f}   "
            f"fans MAE {np.mean(fans):.3f} ± {_sd(fans):.3f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
