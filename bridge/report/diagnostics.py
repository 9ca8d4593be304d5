"""Do stage 2's edge weights see topics? ROC AUC of the edge weight for telling same-topic from cross-topic edges.

Topics come from the generator's ``_truth.npz`` when the corpus has one that names its users (matched by user
id, so a ``users.csv`` whose rows were reordered is still judged right), else from the labels of labelled users.
A truth file that cannot be read, or that does not name every user, falls back to the labels, with a note: the
report never dies over a diagnostic.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from bridge.evaluation.results import Stat
from bridge.runfolder import RunPaths
from bridge.runfolder.caches import read_graph
from corpus import Corpus
from corpus.synthetic import TRUTH_FILE, load_truth

LABELS_SOURCE = "labels of labelled users (edges with both ends labelled, all splits)"


@dataclass(frozen=True)
class EdgeTopics:
    """The edges that can be judged (rows of ``corpus.edges``), whether each joins one topic, and from where."""

    rows: np.ndarray
    same: np.ndarray
    source: str
    note: str | None = None


def _truth_topics(corpus: Corpus) -> tuple[np.ndarray | None, str | None]:
    """``[N]`` topics from the generator's truth matched by user id, or (None, why not) when unusable."""
    truth_file = Path(corpus.root) / TRUTH_FILE
    if not truth_file.is_file():
        return None, None
    try:
        truth = load_truth(corpus.root)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as err:
        return None, f"{truth_file} could not be read ({type(err).__name__}: {err}); topics from the labels"
    if "user_id" not in truth or "user_topic" not in truth:
        return None, f"{truth_file} does not name its users (an older generator); topics from the labels"
    index = {str(u): i for i, u in enumerate(truth["user_id"].tolist())}
    missing = [u for u in corpus.user_ids if u not in index]
    if missing or len(truth["user_topic"]) != len(index):
        return None, f"{truth_file} does not match this corpus's users; topics from the labels"
    return np.asarray(truth["user_topic"])[[index[u] for u in corpus.user_ids]], None


def edge_topics(corpus: Corpus) -> EdgeTopics | None:
    """Which edges can be judged and whether each joins users of one topic; None when no edge can be."""
    topic, note = _truth_topics(corpus)
    if topic is not None:
        same = topic[corpus.edges[:, 0]] == topic[corpus.edges[:, 1]]
        return EdgeTopics(np.arange(corpus.num_edges), same, "generator truth")
    labels = corpus.labels
    both = (labels[corpus.edges[:, 0]] >= 0) & (labels[corpus.edges[:, 1]] >= 0)
    if not both.any():
        return None
    rows = np.flatnonzero(both)
    same = labels[corpus.edges[rows, 0]] == labels[corpus.edges[rows, 1]]
    return EdgeTopics(rows, same, LABELS_SOURCE, note)


def _seed_scores(weights: np.ndarray, same: np.ndarray) -> dict[str, float]:
    return {
        "auc_same_topic": roc_auc_score(same, weights) if 0 < same.sum() < len(same) else float("nan"),
        "mean_same": float(weights[same].mean()) if same.any() else float("nan"),
        "mean_cross": float(weights[~same].mean()) if (~same).any() else float("nan"),
        "std": float(weights.std()),
    }


def edge_weight_diagnostics(
    corpus: Corpus, paths: RunPaths, rounds: int, variants: tuple[str, ...], seeds: tuple[int, ...]
) -> dict[str, Any] | None:
    """Per variant, round and training seed: how well the edge weights separate same-topic from cross-topic
    edges (ROC AUC; 0.5 = not at all). None when no edge can be judged."""
    judged = edge_topics(corpus)
    if judged is None:
        return None
    out: dict[str, Any] = {
        "source": judged.source,
        "edges_judged": int(len(judged.rows)),
        "same_topic_share": float(judged.same.mean()),
        "variants": {},
    }
    if judged.note:
        out["note"] = judged.note
    for variant in variants:
        per_round = []
        for r in range(rounds):
            per_seed = []
            for seed in seeds:
                graph = read_graph(paths.for_seed(seed).cache_dir(variant), r, corpus)
                per_seed.append(_seed_scores(graph.edge_weight.astype(np.float64)[judged.rows], judged.same))
            per_round.append(
                {
                    "auc_same_topic": Stat.of([d["auc_same_topic"] for d in per_seed]).to_json(),
                    "mean_same": float(np.mean([d["mean_same"] for d in per_seed])),
                    "mean_cross": float(np.mean([d["mean_cross"] for d in per_seed])),
                    "per_seed": per_seed,
                }
            )
        out["variants"][variant] = per_round
    return out
