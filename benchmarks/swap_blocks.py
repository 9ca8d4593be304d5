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

from run_probe import add_run_arguments, probe, read_run, summary_line  # noqa: E402

from bridge.evaluation.rows import Row, representation_blocks  # noqa: E402
from bridge.runfolder import RunPaths  # noqa: E402

# mix name -> (variant of R^G, variant of R^T, variant of R^I); None leaves the block out
MIXES = {
    "MMGA (all its own blocks)": ("mmga", "mmga", "mmga"),
    "no_align (all its own blocks)": ("no_align", "no_align", "no_align"),
    "MMGA's R^G, no_align's R^T and R^I": ("mmga", "no_align", "no_align"),
    "no_align's R^G, MMGA's R^T and R^I": ("no_align", "mmga", "mmga"),
    "MMGA's R^G alone": ("mmga", None, None),
    "no_align's R^G alone": ("no_align", None, None),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_arguments(parser, "a finished bridge run folder that trained mmga and no_align")
    run = read_run(parser, parser.parse_args(argv))
    scores: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in MIXES}
    for seed in run.seeds:
        paths = RunPaths(run.run_dir).for_seed(seed)
        blocks = {  # [R^G, R^T, R^I] of each variant, read as the report reads them
            variant: representation_blocks(
                Row(variant, variant, "mmga", variant, run.round, ("graph", "text", "image")),
                run.corpus,
                paths,
            )
            for variant in ("mmga", "no_align")
        }
        for name, sources in MIXES.items():
            x = np.concatenate([blocks[v][k] for k, v in enumerate(sources) if v is not None], axis=1)
            topic, fans = probe(x, run.corpus, run.eval_config)
            scores[name][0].append(topic)
            scores[name][1].append(fans)
    print(f"{run.run_dir}: round {run.round}, training seeds {run.seeds}; mean ± sd over the seeds")
    for name, (topic, fans) in scores.items():
        print(summary_line(name, topic, fans, 38))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
