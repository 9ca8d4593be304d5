"""Where a cold-start row's score goes: the heads trained on linked users, or on users embedded like the test ones?

Reads a finished bridge run folder (its corpus, training seeds and rounds from ``report/metrics.json``) and, for
each variant named (default ``mmga`` and ``no_align``, last round), recomputes R^G with the trained stage 2 on three
graphs through the inductive path (``bridge.rounds.evaluate.cold_graph_embedding``, as the report does): the whole
graph, the graph without the test users' edges (the report's "Cold start" section), and no edges at all (its "Cold
start, heads trained without edges"). Each representation is scored with the report's own linear probe
(``bridge.evaluation.heads.evaluate_representation``: the same heads, splits and choice on val), per training seed.
The test users have no edge in the last two graphs; what differs is what the heads were trained on.

    python benchmarks/cold_start_heads.py runs/default
    python benchmarks/cold_start_heads.py runs/default --variants mmga --seeds 0 1

Prints topic macro-F1 and fans MAE, mean ± sd over the run's training seeds, per variant and representation.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmga_common import quiet_third_party  # noqa: E402

quiet_third_party()

from run_probe import add_run_arguments, probe, read_run, summary_line  # noqa: E402

from bridge.evaluation.rows import Row, representation_blocks  # noqa: E402
from bridge.rounds.evaluate import cold_graph_embedding, stage2_checkpoint  # noqa: E402
from bridge.runfolder import Manifest, RunPaths  # noqa: E402
from corpus import Corpus  # noqa: E402

REPRESENTATIONS = (
    "[R^G || R^T || R^I], R^G on the whole graph (the probe)",
    "[R^G || R^T || R^I], R^G without the test users' edges (Cold start)",
    "[R^G || R^T || R^I || X], the same with X",
    "[R^T || R^I || X], no R^G",
    "[R^G || R^T || R^I], R^G on no edges for every user (heads trained without edges)",
)


def representations(
    variant: str, rnd: int, corpus: Corpus, paths: RunPaths, manifest: Manifest
) -> list[np.ndarray]:
    """The :data:`REPRESENTATIONS` of one variant and training seed, in order."""
    whole = Row(variant, variant, "mmga", variant, rnd, ("graph", "text", "image"))
    cold = dataclasses.replace(whole, cold=True)
    isolated = dataclasses.replace(cold, isolated=True)
    checkpoint = stage2_checkpoint(cold, paths, manifest)
    graph, text, image = representation_blocks(whole, corpus, paths)
    graph_cold = cold_graph_embedding(cold, corpus, paths, checkpoint)
    graph_none = cold_graph_embedding(isolated, corpus, paths, checkpoint)
    x = corpus.features
    return [
        np.concatenate([graph, text, image], 1),
        np.concatenate([graph_cold, text, image], 1),
        np.concatenate([graph_cold, text, image, x], 1),
        np.concatenate([text, image, x], 1),
        np.concatenate([graph_none, text, image], 1),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_arguments(parser)
    parser.add_argument(
        "--variants",
        nargs="+",
        default=["mmga", "no_align"],
        help="trained variants (default: mmga no_align)",
    )
    args = parser.parse_args(argv)
    run = read_run(parser, args)
    manifest = Manifest.load(run.run_dir / "manifest.json", log=None)
    print(f"{run.run_dir}: round {run.round}, training seeds {run.seeds}; mean ± sd over the seeds")
    for variant in args.variants:
        scores: list[tuple[list[float], list[float]]] = [([], []) for _ in REPRESENTATIONS]
        for seed in run.seeds:
            paths = RunPaths(run.run_dir).for_seed(seed)
            for k, x in enumerate(representations(variant, run.round, run.corpus, paths, manifest)):
                topic, fans = probe(x, run.corpus, run.eval_config)
                scores[k][0].append(topic)
                scores[k][1].append(fans)
        print(f"{variant}:")
        for name, (topic, fans) in zip(REPRESENTATIONS, scores):
            print(summary_line(name, topic, fans, 82))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
