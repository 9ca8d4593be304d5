"""Which block of MMGA's fused representation makes a row differ from ``no_align``'s? Swap the blocks.

Reads a finished bridge run folder (both ``mmga`` and ``no_align`` trained; its corpus, training seeds and rounds
from ``report/metrics.json``), builds [R^G || R^T || R^I] from every mix of the two variants' blocks of the last
round (read by ``bridge.evaluation.rows.representation_blocks``, as the report reads them), and scores each with the
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
from bridge.evaluation.rows import Row, representation_blocks  # noqa: E402
from bridge.report.compare import CompareError, load_metrics  # noqa: E402
from bridge.runfolder import RunPaths  # noqa: E402
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

    try:  # the run's own record: its corpus (wherever --corpus put it), training seeds and rounds
        metrics = load_metrics(args.run_dir)
    except CompareError as err:
        parser.error(str(err))
    corpus = load_corpus(metrics["corpus"]["path"])
    seeds = metrics["training_seeds"] if args.seeds is None else args.seeds
    rnd = metrics["config"]["bridge"]["rounds"] - 1 if args.round is None else args.round
    scores: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in MIXES}
    for seed in seeds:
        paths = RunPaths(args.run_dir).for_seed(seed)
        blocks = {  # [R^G, R^T, R^I] of each variant, read as the report reads them
            variant: representation_blocks(
                Row(variant, variant, "mmga", variant, rnd, ("graph", "text", "image")), corpus, paths
            )
            for variant in ("mmga", "no_align")
        }
        for name, sources in MIXES.items():
            x = np.concatenate([blocks[v][k] for k, v in enumerate(sources) if v is not None], axis=1)
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
