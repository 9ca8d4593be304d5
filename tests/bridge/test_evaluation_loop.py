"""The one evaluation skeleton: targets prepared once, the best val candidate per head seed (ties keep the earlier),
test scored once per seed with it only; typed results round-trip through the manifest's JSON."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.evaluation import loop, metrics
from bridge.evaluation.results import Choice, Evaluation, Stat, TaskScores


def _topic_targets():
    y = np.array([0, 1, 0, 1, 0, 1, 1, 0, -1])
    known = y >= 0
    splits = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
    return loop.prepare_targets("topic", y, known, splits, fans_buckets=3)


def test_targets_know_their_splits_and_output_width():
    t = _topic_targets()
    assert t.out_dim == 2 and t.split_sizes() == {
        "train": 3,
        "val": 3,
        "test": 2,
    }  # the unlabelled user is out
    np.testing.assert_array_equal(t.decode(np.array([[0.1, 0.9], [2.0, 1.0]])), [1, 0])
    y = np.log1p(np.array([1.0, 10.0, 100.0, 5.0, 50.0, 7.0]))
    f = loop.prepare_targets("fans", y, np.ones(6, bool), np.array([0, 0, 0, 1, 1, 2]), fans_buckets=2)
    assert f.mu == pytest.approx(y[:3].mean()) and f.sd == pytest.approx(y[:3].std())
    np.testing.assert_allclose(f.decode(np.array([[0.0], [1.0]])), [f.mu, f.mu + f.sd])
    np.testing.assert_allclose(f.standardized()[:3], (y[:3] - f.mu) / f.sd, rtol=1e-6)
    with pytest.raises(ValueError, match="no users with a known target in the test split"):
        loop.prepare_targets("topic", y, np.ones(6, bool), np.array([0, 0, 0, 1, 1, 1]), 2)


def test_val_chooses_per_seed_ties_keep_the_earlier_and_test_is_scored_once(monkeypatch):
    t = _topic_targets()
    perfect_val, wrong_val = np.array([1, 0, 1]), np.array([0, 1, 0])  # y_val = [1, 0, 1]
    candidates = [
        loop.Candidate(0, "linear", 1e-3, wrong_val, np.array([0, 0])),
        loop.Candidate(0, "linear", 1e-2, perfect_val, np.array([1, 0])),  # seed 0's best
        loop.Candidate(0, "mlp", 1e-2, perfect_val, np.array([0, 1])),  # a tie: the earlier one stays
        loop.Candidate(1, "linear", 1e-3, perfect_val, np.array([0, 1]), epochs=7),  # seed 1's best (first)
        loop.Candidate(1, "linear", 1e-2, perfect_val, np.array([1, 0])),
    ]
    scored = []
    real = metrics.task_scores
    monkeypatch.setattr(metrics, "task_scores", lambda *a: scored.append(a[2]) or real(*a))
    out = loop.select_and_score(t, candidates, seeds=(0, 1))
    assert [c.weight_decay for c in out.chosen] == [1e-2, 1e-3] and [c.head for c in out.chosen] == [
        "linear"
    ] * 2
    assert out.chosen[1].epochs == 7 and out.chosen[0].val_score == 1.0
    assert len(scored) == 2  # test scored once per seed, with the chosen candidate only
    np.testing.assert_array_equal(scored[0], [1, 0])
    # y_test = [1, 0]: seed 0 predicts it exactly, seed 1 gets both wrong
    assert out["accuracy"].values == (1.0, 0.0) and out["accuracy"].mean == 0.5


def test_stat_is_mean_sample_sd_and_values():
    assert Stat.of([1.0, 2.0, 3.0]) == Stat(2.0, 1.0, (1.0, 2.0, 3.0))
    assert Stat.of([4.0]).std == 0.0
    empty = Stat.of([])
    assert np.isnan(empty.mean) and empty.values == ()
    assert np.isnan(Stat.of([1.0, float("nan")]).mean)  # a NaN stays NaN


def test_results_round_trip_through_json_including_skipped_tasks():
    topic = TaskScores(
        "topic",
        {"accuracy": Stat.of([0.5, 0.7]), "macro_f1": Stat.of([0.4, 0.6])},
        (Choice(0, "linear", 1e-3, 0.4), Choice(1, "gcn", 5e-4, 0.6, epochs=12)),
        {"train": 6, "val": 2, "test": 2},
    )
    fans = TaskScores.skipped_task("fans", "no user has a known fans count")
    ev = Evaluation(topic, fans, dim=64)
    data = ev.to_json()
    assert data["topic"]["chosen"][1] == {
        "seed": 1,
        "head": "gcn",
        "weight_decay": 5e-4,
        "epochs": 12,
        "val_score": 0.6,
    }
    assert "epochs" not in data["topic"]["chosen"][0] and data["fans"]["skipped"].startswith("no user")
    back = Evaluation.from_json(data)
    assert back.topic == topic and back.dim == 64 and back.fans.skipped == fans.skipped
    assert np.isnan(back.fans["mae"].mean)
    # the manifest stores NaN as the string 'nan' (JSON has no NaN): still read back as NaN
    data["fans"]["mae"]["mean"] = "nan"
    assert np.isnan(Evaluation.from_json(data).fans["mae"].mean)
