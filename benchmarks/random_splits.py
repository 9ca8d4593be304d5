"""Is a "level" the one test split's noise? The report's rows re-scored over other random splits of the users.

The report scores every row on one train/val/test split of the labelled users (the corpus's own, or the reader's
seeded 60/20/20 split). Its ± is over training seeds, each scored on that same split, so the noise of which users
happen to be in the test split (about 200 on the default corpus) is shared by every row and every seed and is
not in the ±. Shchur et al. ("Pitfalls of Graph Neural Network Evaluation", 2018) found that a single fixed split
can rank GNNs differently from many random ones. Stages 1 and 2 never read a label, so the trained models do not
depend on the split, and the rows can be re-scored on other splits without training a stage again.

For split 0 (the run's own split, which reproduces the report's figures: a check that this script scores what the
report scores) and ``--splits`` seeded stratified 60/20/20 splits of the same users
(``corpus.splits.stratified_split``, seeds 1001, 1002, ...), MMGA's row (``--mmga``, default its last round's
probe row) and every row of ``--rows`` are evaluated for every training seed exactly as the report evaluates them
(``bridge.rounds.evaluate.evaluate_one``: the same heads or networks, everything chosen on the split's val, test
scored once; a cold-start row removes the new test users' edges; a fine-tuned row starts from the same stage-2
checkpoint). Printed:

- each row's topic macro-F1 and fans MAE on the run's own split and averaged over the new splits (mean ± sd over
  training seeds);
- MMGA's margin over each other row, paired by training seed, each seed's margin averaged over the new splits,
  with the report's seed-aware verdict on those averages;
- the same margin per new split (averaged over training seeds): in how many splits MMGA is better.

    python benchmarks/random_splits.py runs/default --splits 10
    python benchmarks/random_splits.py runs/default --mmga mmga_finetuned --rows scratch_finetuned peer_cs --splits 10

Time: one evaluation per (row, training seed, split), as in the report; the networks trained end to end cost the
most (a GATv2 peer about 40 s an evaluation on the default corpus).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmga_common import quiet_third_party  # noqa: E402

quiet_third_party()

from run_probe import RunRecord, add_run_arguments, read_run  # noqa: E402

from bridge.evaluation.results import Stat  # noqa: E402
from bridge.evaluation.rows import Row, report_rows  # noqa: E402
from bridge.evaluation.verdict import paired_margins, verdict  # noqa: E402
from bridge.report.compare import load_metrics  # noqa: E402
from bridge.rounds.evaluate import evaluate_one, stage2_checkpoint  # noqa: E402
from bridge.runfolder import Manifest, RunPaths  # noqa: E402
from corpus.splits import stratified_split  # noqa: E402

DEFAULT_ROWS = ("no_align", "peer_sgc", "peer_frozen_sgc", "frozen")
SPLIT_SEED_BASE = 1000
TASKS = (("topic", "macro_f1", True), ("fans MAE", "mae", False))  # (name, metric, higher is better)


def new_splits(labels: np.ndarray, count: int) -> list[np.ndarray]:
    """``count`` seeded stratified 60/20/20 splits of the users (seeds ``SPLIT_SEED_BASE + 1``, ``+ 2``, ...)."""
    return [stratified_split(labels, seed=SPLIT_SEED_BASE + j) for j in range(1, count + 1)]


def score_rows(
    run: RunRecord,
    rows: list[Row],
    split_list: list[np.ndarray],
    manifest: Manifest | None = None,
    progress=None,
) -> dict[str, np.ndarray]:
    """``{row: [splits, training seeds, 2]}`` of (topic macro-F1, fans MAE), each the mean over the head (or
    network) seeds, as the report evaluates the row (``evaluate_one``) with the corpus's split replaced; a row that
    reads a stage-2 checkpoint (fine-tuned, cold start) reads the one ``manifest`` records for its training seed;
    a row without a training seed (the frozen encoders') is evaluated once per split and repeated across the
    seeds."""
    first = RunPaths(run.run_dir).for_seed(run.training_seeds[0])
    out: dict[str, list] = {row.name: [] for row in rows}
    for j, splits in enumerate(split_list):
        split_corpus = dataclasses.replace(run.corpus, splits=splits)
        for row in rows:
            seeds = run.seeds if row.seeded else [None]
            values = []
            for seed in seeds:
                paths = RunPaths(run.run_dir).for_seed(seed) if seed is not None else first
                checkpoint = None if manifest is None else stage2_checkpoint(row, paths, manifest)
                ev = evaluate_one(row, split_corpus, paths, run.eval_config, checkpoint)
                values.append((ev.topic[TASKS[0][1]].mean, ev.fans[TASKS[1][1]].mean))
            out[row.name].append(values if row.seeded else values * len(run.seeds))
        if progress is not None:
            progress(j)
    return {name: np.asarray(v, dtype=np.float64) for name, v in out.items()}


def margins_over_splits(
    mmga: np.ndarray, other: np.ndarray, higher_is_better: bool
) -> tuple[list[float], np.ndarray]:
    """MMGA's margins over another row from ``[splits, training seeds]`` scores (positive = MMGA better): per
    training seed, the mean over the splits (what the seed-aware verdict reads), and per split, the mean over the
    training seeds."""
    per_seed = paired_margins(mmga.mean(axis=0), other.mean(axis=0), higher_is_better)
    sign = 1.0 if higher_is_better else -1.0
    per_split = sign * (mmga - other).mean(axis=1)
    return per_seed, per_split


def report_values(run_dir: Path, names: list[str]) -> dict[str, np.ndarray]:
    """The report's own per-training-seed (topic macro-F1, fans MAE) of each row, ``[seeds, 2]``, from
    ``report/metrics.json`` (for the check that split 0 reproduces them)."""
    rows = load_metrics(run_dir)["rows"]
    return {
        n: np.stack(
            [
                np.asarray(rows[n]["topic"]["macro_f1"]["values"]),
                np.asarray(rows[n]["fans"]["mae"]["values"]),
            ],
            1,
        )
        for n in names
        if n in rows
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_arguments(parser, "a finished bridge run folder", rounds=False)
    parser.add_argument(
        "--splits", type=int, default=10, help="new random splits besides the run's own (default 10)"
    )
    parser.add_argument(
        "--mmga",
        default=None,
        help="MMGA's row, compared with every row of --rows (default: its last round's probe row, mmga_round_<last>)",
    )
    parser.add_argument(
        "--rows",
        nargs="+",
        default=None,
        help=f"the rows to compare with MMGA's (default: {' '.join(DEFAULT_ROWS)}); any row of the report",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write every score to this JSON file")
    args = parser.parse_args(argv)
    if args.splits < 1:
        parser.error(f"--splits must be at least 1, got {args.splits}")
    run = read_run(parser, args)
    mmga_name = args.mmga or f"mmga_round_{run.rounds - 1}"
    names = [mmga_name, *(args.rows or DEFAULT_ROWS)]
    known = {r.name: r for r in report_rows(run.rounds, baselines=True, finetune=True, encoder_peers=True)}
    unknown = [n for n in names if n not in known]
    if unknown:
        parser.error(f"not a row of the report: {', '.join(unknown)}; the rows: {', '.join(known)}")
    rows = [known[n] for n in names]
    manifest = Manifest.load(run.run_dir / "manifest.json", log=None)
    split_list = [run.corpus.splits, *new_splits(run.corpus.labels, args.splits)]
    start = time.perf_counter()

    def progress(j: int) -> None:
        label = "the run's own split" if j == 0 else f"split {j} (seed {SPLIT_SEED_BASE + j})"
        print(f"  {label} done ({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)

    arr = score_rows(run, rows, split_list, manifest, progress)  # [splits + 1, seeds, 2]
    print(
        f"{run.run_dir}: round {run.rounds - 1}, training seeds {run.seeds}; the run's own split and "
        f"{args.splits} new random splits; mean ± sd over training seeds"
    )
    reported = report_values(run.run_dir, names)
    seed_index = [run.training_seeds.index(s) for s in run.seeds]
    gaps = [float(np.abs(arr[n][0] - reported[n][seed_index]).max()) for n in names if n in reported]
    print(f"  split 0 against the report's figures: largest difference {max(gaps, default=float('nan')):.1e}")
    print(f"\n  {'row':18s} {'own split: topic / fans':>28s}   {'new splits: topic / fans':>28s}")
    for name in names:
        own, new = arr[name][0], arr[name][1:].mean(axis=0)
        print(f"  {name:18s} {_ms(own[:, 0])} / {_ms(own[:, 1])}   {_ms(new[:, 0])} / {_ms(new[:, 1])}")
    print(
        f"\n  {mmga_name} minus the row (fans: the row minus MMGA), per training seed averaged over the new splits:"
    )
    for name in names[1:]:
        for k, (task, _, higher) in enumerate(TASKS):
            per_seed, per_split = margins_over_splits(arr[mmga_name][1:, :, k], arr[name][1:, :, k], higher)
            own = paired_margins(arr[mmga_name][0, :, k], arr[name][0, :, k], higher)
            print(
                f"  vs {name:16s} {task:8s} {np.mean(per_seed):+.4f} ± {Stat.of(per_seed).std:.4f} -> {verdict(per_seed):15s} "
                f"better in {int((per_split > 0).sum())} of {len(per_split)} splits ({per_split.min():+.3f} .. "
                f"{per_split.max():+.3f}); own split {np.mean(own):+.4f} -> {verdict(own)}"
            )
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "run_dir": str(run.run_dir),
                    "training_seeds": run.seeds,
                    "split_seeds": [None] + [SPLIT_SEED_BASE + j for j in range(1, args.splits + 1)],
                    "scores": {name: arr[name].tolist() for name in names},
                    "layout": "[split][training seed][topic macro-F1, fans MAE]; split 0 is the run's own",
                },
                indent=1,
            )
        )
    return 0


def _ms(values) -> str:
    stat = Stat.of(values)
    return f"{stat.mean:.3f} ± {stat.std:.3f}"


if __name__ == "__main__":
    raise SystemExit(main())
