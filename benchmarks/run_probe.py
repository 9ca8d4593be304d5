"""What the run-folder analyses of ``benchmarks/`` share (``swap_blocks.py``, ``cold_start_heads.py``,
``degree_buckets.py``, ``random_splits.py``, ...): the arguments that name a finished bridge run, the run's own
record of its corpus, training seeds and last round (``report/metrics.json``), and one representation scored with
the report's own linear probe (``bridge.evaluation.heads.evaluate_representation``: the same heads, splits and choice
on val)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bridge.evaluation.config import EvalConfig
from bridge.evaluation.heads import evaluate_representation
from bridge.report.compare import CompareError, load_metrics
from corpus import Corpus, load_corpus
from mmga_common.config import from_dict


@dataclass(frozen=True)
class RunRecord:
    """A finished run as an analysis reads it: its corpus, the training seeds to read, the round and the
    evaluation's settings; with every training seed of the run (the first one's folder holds the rows evaluated
    once) and its number of rounds."""

    run_dir: Path
    corpus: Corpus
    seeds: list[int]
    round: int
    eval_config: EvalConfig
    training_seeds: list[int]
    rounds: int


def add_run_arguments(
    parser: argparse.ArgumentParser, run_help: str = "a finished bridge run folder", rounds: bool = True
) -> None:
    """The run folder, ``--seeds`` and, with ``rounds``, ``--round`` (without it the last round is read)."""
    parser.add_argument("run_dir", type=Path, help=run_help)
    if rounds:
        parser.add_argument(
            "--round", type=int, default=None, help="the round to read (default: the last one)"
        )
    parser.add_argument(
        "--seeds", type=int, nargs="*", default=None, help="training seeds (default: every one)"
    )


def read_run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> RunRecord:
    """The run named by :func:`add_run_arguments`'s arguments; a folder without a report is a usage error."""
    try:  # the run's own record: its corpus (wherever --corpus put it), training seeds and rounds
        metrics = load_metrics(args.run_dir)
    except CompareError as err:
        parser.error(str(err))
    seeds = metrics["training_seeds"] if args.seeds is None else args.seeds
    rounds = metrics["config"]["bridge"]["rounds"]
    chosen = getattr(args, "round", None)
    rnd = rounds - 1 if chosen is None else chosen
    eval_config = from_dict(EvalConfig, metrics["config"]["bridge"]["eval"], str(args.run_dir / "report"))
    corpus = load_corpus(metrics["corpus"]["path"])
    return RunRecord(args.run_dir, corpus, seeds, rnd, eval_config, list(metrics["training_seeds"]), rounds)


def probe(x: np.ndarray, corpus: Corpus, cfg: EvalConfig | None = None) -> tuple[float, float]:
    """``(topic macro-F1, fans MAE)`` of ``x`` with the report's probe, each the mean over the head seeds; ``cfg``:
    the run's evaluation settings (``RunRecord.eval_config``; the defaults when None)."""
    ev = evaluate_representation(x, corpus.labels, corpus.fans, corpus.splits, cfg)
    return ev.topic.scores["macro_f1"].mean, ev.fans.scores["mae"].mean


def summary_line(name: str, topic: list[float], fans: list[float], width: int) -> str:
    """One printed row: ``name``, then topic macro-F1 and fans MAE as mean ± sd over the training seeds."""

    def sd(values: list[float]) -> float:
        return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0

    return (
        f"  {name:{width}s} topic macro-F1 {np.mean(topic):.3f} ± {sd(topic):.3f}   "
        f"fans MAE {np.mean(fans):.3f} ± {sd(fans):.3f}"
    )
