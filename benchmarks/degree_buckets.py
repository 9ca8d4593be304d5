"""Where does the alignment pay on the whole graph? The report's probe rows scored per degree bucket of the test users.

MMGA's claim is that aligning the encoders with the graph helps most the users the graph says little about. The
report's linear-probe section scores every test user together, and the cold-start sections score users without
any edge; this script scores the test users of the probe section by how many links they have. For each row named
(default: MMGA's last round and the probe section's rows it is compared with), the report's own heads are trained
once per head seed on the run's train split and chosen on val exactly as the report chooses them
(``bridge.evaluation.heads.head_candidates`` and ``loop.select_and_score``; SGC rows choose K with the head, as
``evaluate_sgc`` does); only the scoring of the chosen head's test predictions is split by degree. The degree is
the number of distinct neighbours in the corpus's graph. The buckets' upper bounds are fixed before looking at any
score (``--bounds``, default 2 5 10: degrees 0-2, 3-5, 6-10, 11 and more); the row "all" is the report's own figure
(a check that the script scores what the report scores).

    python benchmarks/degree_buckets.py runs/default
    python benchmarks/degree_buckets.py runs/default --rows mmga_round_2 no_align --bounds 3 8

Prints, per bucket: its number of test users, each row's topic macro-F1 and fans MAE (mean ± sd over training seeds
of the mean over head seeds) and MMGA's paired margin over each other row with the report's seed-aware verdict.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmga_common import quiet_third_party  # noqa: E402

quiet_third_party()

from run_probe import add_run_arguments, read_run  # noqa: E402

from bridge.evaluation import metrics  # noqa: E402
from bridge.evaluation.config import EvalConfig  # noqa: E402
from bridge.evaluation.heads import head_candidates  # noqa: E402
from bridge.evaluation.loop import TaskTargets, evaluate_tasks, select_and_score  # noqa: E402
from bridge.evaluation.peers import sgc_features  # noqa: E402
from bridge.evaluation.results import TaskScores  # noqa: E402
from bridge.evaluation.rows import Row, report_rows, representation  # noqa: E402
from bridge.evaluation.verdict import paired_margins, verdict  # noqa: E402
from bridge.runfolder import RunPaths  # noqa: E402
from corpus import Corpus  # noqa: E402
from mmga_common.threads import torch_threads  # noqa: E402

# the metrics scored per bucket, and whether higher is better
METRICS = {"topic": ("macro_f1", "accuracy"), "fans": ("mae",)}
HIGHER_IS_BETTER = {"macro_f1": True, "accuracy": True, "mae": False}


def degrees(corpus: Corpus) -> np.ndarray:
    """``[N]`` each user's number of distinct neighbours (self-loops are not in a corpus)."""
    edges = np.unique(np.sort(np.asarray(corpus.edges, dtype=np.int64).reshape(-1, 2), axis=1), axis=0)
    return np.bincount(edges.ravel(), minlength=corpus.num_users)


def bucket_names(bounds: Sequence[int]) -> list[str]:
    """Names of the buckets cut at the upper bounds ``bounds`` (increasing), then ``"all"``."""
    names, low = [], 0
    for b in bounds:
        names.append(f"{low}-{b}" if b > low else f"{b}")
        low = b + 1
    return [*names, f"{low}+", "all"]


def bucket_of(degree: np.ndarray, bounds: Sequence[int]) -> np.ndarray:
    """``[N]`` the bucket index of each degree (``len(bounds)`` for the last, open bucket)."""
    return np.searchsorted(np.asarray(bounds), degree, side="left")


def scores_by_bucket(
    targets: TaskTargets, candidates: list, seeds: Sequence[int], bucket: np.ndarray, num_buckets: int
) -> tuple[dict[str, list[float]], TaskScores]:
    """Each of the task's :data:`METRICS` per bucket of the test users (then over all of them), the mean over the
    head seeds of the head the report's own rule chooses on val; with the report's :class:`TaskScores` of the
    same choice. A bucket without test users reads nan."""
    chosen = select_and_score(targets, candidates, seeds)
    by_key = {(c.seed, c.head, c.weight_decay): c for c in candidates}
    test = targets.masks["test"]
    y_test, b_test = targets.y[test], bucket[test]
    names = METRICS[targets.task]
    table = np.full((len(names), len(chosen.chosen), num_buckets + 1), np.nan)
    for i, choice in enumerate(chosen.chosen):
        pred = by_key[(choice.seed, choice.head, choice.weight_decay)].test_pred
        for k in range(num_buckets + 1):
            inside = b_test == k if k < num_buckets else np.ones(len(y_test), dtype=bool)
            if inside.any():
                values = metrics.task_scores(targets.task, y_test[inside], pred[inside], targets.edges)
                table[:, i, k] = [values[name] for name in names]
    return {name: [float(v) for v in table[j].mean(0)] for j, name in enumerate(names)}, chosen


def row_scores(
    row: Row, corpus: Corpus, paths: RunPaths, cfg: EvalConfig, bucket: np.ndarray, num_buckets: int
) -> dict[str, list[float]]:
    """``{metric: [value per bucket, then over all test users]}`` of one row for one training seed."""
    x = representation(row, corpus, paths)
    if row.method == "sgc":
        feats = {f"(K={k})": sgc_features(x, corpus.edges, hops=k) for k in cfg.sgc_hops}
    else:  # a probe row (scorable_rows)
        feats = {"": x}
    out: dict[str, list[float]] = {}

    def per_task(targets: TaskTargets) -> TaskScores:
        candidates = [c for tag, f in feats.items() for c in head_candidates(f, targets, cfg, tag=tag)]
        values, chosen = scores_by_bucket(targets, candidates, cfg.head_seeds, bucket, num_buckets)
        out.update(values)
        return chosen

    with torch_threads(1):
        evaluate_tasks(corpus.labels, corpus.fans, corpus.splits, cfg.fans_buckets, per_task)
    return out


def scorable_rows(names: Sequence[str], rounds: int) -> list[Row]:
    """The report's rows named ``names`` (of a run with ``rounds`` rounds); ``ValueError`` naming each row that is
    not a probe or SGC row on the whole graph (the cold-start rows recompute R^G without the test users' edges, and
    the networks trained end to end are not scored here)."""
    known = {r.name: r for r in report_rows(rounds, baselines=True, encoder_peers=True)}
    problems = []
    for name in names:
        row = known.get(name)
        if row is None:
            problems.append(f"{name!r} is not a row of the report")
        elif row.cold:
            problems.append(f"{name!r} is a cold-start row (R^G without the test users' edges)")
        elif row.method not in ("probe", "sgc"):
            problems.append(f"{name!r} is a network trained end to end ({row.method})")
    if problems:
        scored = sorted(n for n, r in known.items() if r.method in ("probe", "sgc") and not r.cold)
        raise ValueError(
            "; ".join(problems) + f"; the rows scored here are the probe and SGC rows: {', '.join(scored)}"
        )
    return [known[n] for n in names]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_arguments(parser)
    parser.add_argument(
        "--rows",
        nargs="+",
        default=None,
        help="report rows to score, MMGA's first (probe and SGC rows; default: MMGA's last round, no_align, "
        "peer_sgc, peer_frozen_sgc)",
    )
    parser.add_argument(
        "--bounds",
        type=int,
        nargs="+",
        default=[2, 5, 10],
        help="upper bounds of the degree buckets, increasing (default: 2 5 10)",
    )
    args = parser.parse_args(argv)
    if list(args.bounds) != sorted(set(args.bounds)) or args.bounds[0] < 0:
        parser.error(f"--bounds must be increasing non-negative degrees, got {args.bounds}")
    run = read_run(parser, args)
    names = args.rows or [f"mmga_round_{run.round}", "no_align", "peer_sgc", "peer_frozen_sgc"]
    try:
        rows = scorable_rows(names, run.rounds)
    except ValueError as err:
        parser.error(str(err))
    degree = degrees(run.corpus)
    bucket = bucket_of(degree, args.bounds)
    labels = bucket_names(args.bounds)
    test = np.asarray(run.corpus.splits) == 2
    num_buckets = len(args.bounds) + 1
    counts = [int((test & (bucket == k)).sum()) for k in range(num_buckets)] + [int(test.sum())]

    # scores[row][metric] -> [seeds][buckets]
    scores: dict[str, dict[str, list[list[float]]]] = {r.name: {} for r in rows}
    once: dict[str, dict[str, list[float]]] = {}
    for seed in run.seeds:
        for row in rows:
            if row.once:  # evaluated once, from the first training seed's folder (as the report does)
                if row.name not in once:
                    paths = RunPaths(run.run_dir).for_seed(run.training_seeds[0])
                    once[row.name] = row_scores(row, run.corpus, paths, run.eval_config, bucket, num_buckets)
                result = once[row.name]
            else:
                paths = RunPaths(run.run_dir).for_seed(seed)
                result = row_scores(row, run.corpus, paths, run.eval_config, bucket, num_buckets)
            for metric, values in result.items():
                scores[row.name].setdefault(metric, []).append(values)
        print(f"  training seed {seed} done", flush=True)

    print(f"{run.run_dir}: round {run.round}, training seeds {run.seeds}; mean ± sd over the seeds")
    mmga = rows[0].name
    for task, metric in ((t, m) for t, names in METRICS.items() for m in names):
        if metric not in scores[mmga]:
            continue  # the task was skipped (the corpus has no such targets)
        print(f"\n{task} {metric} by test users' degree (margins: {mmga} over the row; + = {mmga} better)")
        width = max(len(n) for n in names)
        for k, label in enumerate(labels):
            print(f"  degree {label} ({counts[k]} test users)")
            base = np.asarray(scores[mmga][metric])[:, k]
            for name in names:
                v = np.asarray(scores[name][metric])[:, k]
                line = (
                    f"    {name:{width}s} {np.mean(v):.3f} ± {np.std(v, ddof=1) if len(v) > 1 else 0.0:.3f}"
                )
                if name != mmga:
                    m = paired_margins(base, v, HIGHER_IS_BETTER[metric])
                    sd = np.std(m, ddof=1) if len(m) > 1 else 0.0
                    ahead = sum(x > 0 for x in m)
                    line += f"   margin {np.mean(m):+.3f} ± {sd:.3f} ({verdict(m)}, better in {ahead} of {len(m)})"
                print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
