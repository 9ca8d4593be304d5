"""Decide before any training what the run can finish: the corpus's graph, and which downstream tasks
can be evaluated.

A task needs at least one user with a known target in each of the train, val and test splits (topic:
a label; fans: a known count). The docs call corpora without labels, or without fans, legal: such a task is
skipped, said in the run's header and in the report, and its metrics are ``n/a``. A run where no task can
be evaluated, or whose graph has no edges, is refused before anything is trained or recorded.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from bridge.evaluation.results import SPLITS, TASKS
from corpus import Corpus, CorpusError


def known_targets(labels: np.ndarray, fans: np.ndarray) -> dict[str, np.ndarray]:
    """bool ``[N]`` per task: the users whose target is known (the users the task uses)."""
    fans = np.asarray(fans, dtype=np.float64)
    return {"topic": np.asarray(labels) >= 0, "fans": np.isfinite(fans) & (fans >= 0)}


def unavailable_tasks(labels: np.ndarray, fans: np.ndarray, splits: np.ndarray) -> dict[str, str]:
    """``{task: reason}`` for each task that cannot be evaluated on these targets and splits."""
    reasons = {}
    splits = np.asarray(splits)
    for task, known in known_targets(labels, fans).items():
        target = "label" if task == "topic" else "fans count"
        if not known.any():
            reasons[task] = f"no user has a known {target}"
            continue
        missing = [name for code, name in enumerate(SPLITS) if not (known & (splits == code)).any()]
        if missing:
            reasons[task] = f"no user with a known {target} in the {' and '.join(missing)} split"
    return reasons


class NothingToEvaluate(CorpusError):
    """No downstream task can be evaluated on the corpus, so a run could not finish."""


def check_corpus_can_finish(corpus: Corpus, log: Callable[[str], None] = print) -> dict[str, str]:
    """Refuse (``CorpusError``) a corpus the run cannot finish on; return and announce the skipped tasks.

    Called after the corpus is loaded and before it is recorded in the manifest or anything trains.
    """
    if corpus.num_edges == 0:
        raise CorpusError(
            "edges.csv",
            None,
            None,
            "the corpus has no edges (self-loops are dropped): both stages learn from the graph, so nothing "
            "could be trained; add edges between different users",
        )
    skipped = unavailable_tasks(corpus.labels, corpus.fans, corpus.splits)
    if len(skipped) == len(TASKS):
        raise NothingToEvaluate(
            "users.csv",
            None,
            None,
            "no downstream task can be evaluated ("
            + "; ".join(f"{t}: {why}" for t, why in skipped.items())
            + "): give labels or fans counts, and a split column with train, val and test users (or none)",
        )
    for task, why in skipped.items():
        log(f"[tasks] {task}: skipped ({why}); its metrics will read n/a")
    return skipped
