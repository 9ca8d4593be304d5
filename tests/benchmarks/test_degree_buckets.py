"""benchmarks/degree_buckets.py: degrees, buckets, and scores per bucket of the head the report chooses."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import f1_score

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # the script's own imports

import degree_buckets  # noqa: E402

from bridge.evaluation.loop import Candidate, prepare_targets  # noqa: E402


def test_degree_counts_distinct_neighbours(tiny_corpus_loaded):
    corpus = tiny_corpus_loaded
    neighbours = [set() for _ in range(corpus.num_users)]
    for u, v in np.asarray(corpus.edges).reshape(-1, 2):
        neighbours[u].add(v)
        neighbours[v].add(u)
    expected = [len(n) for n in neighbours]
    assert degree_buckets.degrees(corpus).tolist() == expected
    assert sum(expected) > 0


def test_buckets_cut_at_their_upper_bounds():
    bounds = [2, 5, 10]
    assert degree_buckets.bucket_names(bounds) == ["0-2", "3-5", "6-10", "11+", "all"]
    assert degree_buckets.bucket_names([0, 3]) == ["0", "1-3", "4+", "all"]
    got = degree_buckets.bucket_of(np.array([0, 2, 3, 5, 6, 10, 11, 117]), bounds)
    assert got.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]


def test_scores_by_bucket_score_the_head_val_chooses_on_each_bucket():
    """Per head seed the candidate with the better val macro-F1 is scored (the report's rule); each bucket's value
    is the metric on that bucket's test users alone, "all" is the report's own test figure."""
    rng = np.random.default_rng(0)
    n = 90
    labels = rng.integers(0, 3, n)
    splits = np.repeat([0, 1, 2], n // 3)
    targets = prepare_targets("topic", labels, np.ones(n, dtype=bool), splits, fans_buckets=3)
    y_val, y_test = labels[splits == 1], labels[splits == 2]
    noisy = lambda y, p: np.where(rng.random(len(y)) < p, rng.integers(0, 3, len(y)), y)  # noqa: E731
    candidates = []
    for seed in (0, 1):
        # the first setting is worse on val (more noise) than the second, whose test predictions are scored
        candidates.append(Candidate(seed, "linear", 1e-4, noisy(y_val, 0.9), noisy(y_test, 0.1)))
        candidates.append(Candidate(seed, "linear", 1e-2, noisy(y_val, 0.1), noisy(y_test, 0.5)))
    bucket = rng.integers(0, 2, n)
    values, chosen = degree_buckets.scores_by_bucket(targets, candidates, [0, 1], bucket, num_buckets=2)
    assert [c.weight_decay for c in chosen.chosen] == [1e-2, 1e-2]
    picked = [candidates[1].test_pred, candidates[3].test_pred]
    b_test = bucket[splits == 2]
    for k in range(2):
        inside = b_test == k
        expected = np.mean([f1_score(y_test[inside], p[inside], average="macro") for p in picked])
        assert values["macro_f1"][k] == pytest.approx(expected)
        expected_acc = np.mean([np.mean(y_test[inside] == p[inside]) for p in picked])
        assert values["accuracy"][k] == pytest.approx(expected_acc)
    assert values["macro_f1"][2] == pytest.approx(chosen.scores["macro_f1"].mean)
    assert values["accuracy"][2] == pytest.approx(chosen.scores["accuracy"].mean)
    # an empty bucket reads nan, not a score
    values, _ = degree_buckets.scores_by_bucket(targets, candidates, [0, 1], np.zeros(n, dtype=int), 2)
    assert np.isnan(values["macro_f1"][1]) and values["macro_f1"][0] == pytest.approx(values["macro_f1"][2])


def test_only_probe_and_sgc_rows_on_the_whole_graph_are_scored():
    rows = degree_buckets.scorable_rows(["mmga_round_2", "no_align", "peer_sgc", "mmga_sgc"], rounds=3)
    assert [r.name for r in rows] == ["mmga_round_2", "no_align", "peer_sgc", "mmga_sgc"]
    assert [r.method for r in rows] == ["probe", "probe", "sgc", "sgc"]
    with pytest.raises(ValueError) as err:
        degree_buckets.scorable_rows(["mmga_cold", "peer_gcn", "nope", "no_align"], rounds=3)
    message = str(err.value)
    assert "'mmga_cold' is a cold-start row" in message
    assert "'peer_gcn' is a network trained end to end (gcn)" in message
    assert "'nope' is not a row of the report" in message
    assert "no_align" in message.split("the rows scored here are")[1]
