"""Bucket accuracy and the scikit-learn / SciPy conventions the evaluation relies on; the batched heads."""

import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score

from bridge.evaluation import metrics
from bridge.evaluation.heads import BatchedHeads, EvalConfig, evaluate_representation


def test_macro_f1_convention_known_values():
    # the call evaluate.py and peers.py make; class 0: tp=1 fp=0 fn=1 -> 2/3; class 1: tp=1 fp=1 fn=0 -> 2/3
    def macro_f1(y_true, y_pred):
        return f1_score(y_true, y_pred, average="macro", zero_division=0.0)

    assert macro_f1(np.array([0, 0, 1]), np.array([0, 1, 1])) == pytest.approx(2 / 3)
    # a predicted class that never occurs counts as F1 = 0 in the mean, and raises no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert macro_f1(np.array([0, 0]), np.array([0, 2])) == pytest.approx((2 / 3 + 0) / 2)
    # what the evaluation selects on and reports
    assert metrics.selection_score("topic", np.array([0, 0, 1]), np.array([0, 1, 1])) == pytest.approx(-2 / 3)
    assert metrics.selection_score("fans", np.array([1.0, 2.0]), np.array([2.0, 4.0])) == pytest.approx(1.5)
    topic = metrics.task_scores("topic", np.array([0, 0, 1]), np.array([0, 1, 1]))
    assert topic == pytest.approx({"accuracy": 2 / 3, "macro_f1": 2 / 3})
    y_true, y_pred = np.array([0.0, 3.0, 5.0, 9.0]), np.array([1.0, 4.0, 4.0, 8.0])
    fans = metrics.task_scores("fans", y_true, y_pred, np.array([2.25, 4.5, 6.75]))
    # ranks 1 2 3 4 against 1 2.5 2.5 4 -> r = 4.5 / sqrt(5 * 4.5) = 3 / sqrt(10); buckets 0,1,2,3 vs 0,1,1,3
    assert fans == pytest.approx({"mae": 1.0, "spearman": 3 / np.sqrt(10), "bucket_accuracy": 0.75})


def test_buckets():
    train = np.arange(10.0)  # quantiles at 2.25, 4.5, 6.75 for 4 buckets
    edges = metrics.quantile_edges(train, 4)
    np.testing.assert_allclose(edges, [2.25, 4.5, 6.75])
    np.testing.assert_array_equal(metrics.bucketize(np.array([0.0, 2.25, 5.0, 100.0]), edges), [0, 1, 2, 3])
    # true buckets 0,1,2,3; predictions land in 0,1,1,3 -> 3 of 4 right
    acc = metrics.bucket_accuracy(np.array([0.0, 3.0, 5.0, 9.0]), np.array([1.0, 4.0, 4.0, 8.0]), edges)
    assert acc == pytest.approx(0.75)


def test_batched_heads_are_independent_and_match_a_loop():
    torch.manual_seed(0)
    x = torch.randn(7, 5)
    for hidden in (None, 4):
        heads = BatchedHeads([3, 4, 5], in_dim=5, out_dim=2, hidden=hidden).eval()
        out = heads(x)
        assert out.shape == (3, 7, 2)
        for g in range(3):  # each head equals its own plain MLP / linear map
            h = x @ heads.weights[0][g] + heads.biases[0][g]
            if hidden is not None:
                h = torch.relu(h) @ heads.weights[1][g] + heads.biases[1][g]
            torch.testing.assert_close(out[g], h)
        # the gradient of head 0's output reaches only head 0's parameters
        heads.zero_grad()
        out = heads(x)
        out[0].sum().backward()
        for w in heads.weights:
            assert w.grad[0].abs().sum() > 0 and w.grad[1:].abs().sum() == 0
    # same seed -> same initialisation, different seed -> different
    a, b, c = (BatchedHeads([s], 5, 2, None) for s in (1, 1, 2))
    assert torch.equal(a.weights[0], b.weights[0]) and not torch.equal(a.weights[0], c.weights[0])


def test_evaluate_representation_learns_planted_signal_and_excludes_unknowns():
    rng = np.random.default_rng(0)
    n = 300
    labels = rng.integers(0, 3, n)
    fans_log = rng.normal(size=n)
    x = np.concatenate([np.eye(3)[labels] * 2 + rng.normal(size=(n, 3)) * 0.3, fans_log[:, None]], 1)
    fans = np.expm1(fans_log + 5)
    splits = rng.choice(3, n, p=[0.6, 0.2, 0.2]).astype(np.int8)
    labels[:10] = -1
    fans[10:20] = np.nan
    cfg = EvalConfig(head_seeds=(0, 1), heads=("linear",), weight_decays=(1e-3,), max_epochs=200)
    res = evaluate_representation(x.astype(np.float32), labels, fans, splits, cfg)
    assert res.topic["macro_f1"].mean > 0.9
    assert res.fans["spearman"].mean > 0.9
    assert res.fans["mae"].mean < 0.3
    assert len(res.topic["macro_f1"].values) == 2
    assert sum(res.topic.n.values()) == n - 10
    assert sum(res.fans.n.values()) == n - 10
    # deterministic given the seeds
    again = evaluate_representation(x.astype(np.float32), labels, fans, splits, cfg)
    assert again["fans"]["mae"] == res["fans"]["mae"]
    # pure noise stays near chance
    noise = evaluate_representation(rng.normal(size=(n, 4)).astype(np.float32), labels, fans, splits, cfg)
    assert noise.topic["macro_f1"].mean < 0.6


def test_the_heads_train_on_the_evaluation_device(monkeypatch):
    """``EvalConfig.device`` is resolved once per task and every head grid is moved there (CUDA faked by the
    resolver answering "cpu"; the heads are drawn on the CPU from their seeds first, so the draw is the same)."""
    from bridge.evaluation import heads as heads_mod

    asked, moved = [], []
    monkeypatch.setattr(heads_mod, "resolve_torch_device", lambda d: asked.append(d) or "cpu")

    class Recorded(BatchedHeads):
        def to(self, *args, **kwargs):
            moved.append(torch.device(*args, **kwargs))
            return super().to(*args, **kwargs)

    monkeypatch.setattr(heads_mod, "BatchedHeads", Recorded)
    rng = np.random.default_rng(0)
    n = 120
    labels = rng.integers(0, 3, n)
    x = (np.eye(3)[labels] + rng.normal(size=(n, 3)) * 0.3).astype(np.float32)
    fans, splits = np.expm1(rng.normal(size=n) + 5), rng.choice(3, n, p=[0.6, 0.2, 0.2]).astype(np.int8)
    cfg = EvalConfig(
        device="cuda", head_seeds=(0,), heads=("linear", "mlp"), weight_decays=(1e-3,), max_epochs=5
    )
    evaluate_representation(x, labels, fans, splits, cfg)
    assert asked == ["cuda", "cuda"] and moved == [torch.device("cpu")] * 4  # 2 tasks x 2 head types


def test_each_head_stops_as_it_would_alone():
    """Per-head early stopping: a head's best epoch lies within its own patience, so its result does not depend on
    the heads that share its batch (a head trained longer by a slower grid-mate once picked a later epoch, which
    moved a head's val macro-F1 by 0.01 on the default run; this case reproduces the coupling)."""
    from bridge.evaluation.heads import _fit_heads

    rng = np.random.default_rng(1)
    n = 100
    y = rng.integers(0, 3, n)
    x = np.eye(3)[y] * 0.8 + rng.normal(size=(n, 3))
    x = torch.from_numpy(np.concatenate([x, rng.normal(size=(n, 30))], 1).astype(np.float32))
    y = torch.from_numpy(y)
    cfg = EvalConfig(max_epochs=300, patience=5, lr=0.01)
    alone = _fit_heads(x[:50], y[:50], x[50:], y[50:], "topic", 3, "linear", [1.0], [0], cfg)
    shared = _fit_heads(x[:50], y[:50], x[50:], y[50:], "topic", 3, "linear", [1.0, 0.1], [0, 0], cfg)
    other = _fit_heads(x[:50], y[:50], x[50:], y[50:], "topic", 3, "linear", [0.1], [0], cfg)
    for w_alone, w_other, w_shared in zip(alone.parameters(), other.parameters(), shared.parameters()):
        torch.testing.assert_close(w_shared[0], w_alone[0], rtol=0, atol=0)
        torch.testing.assert_close(w_shared[1], w_other[0], rtol=0, atol=0)


def test_each_mlp_head_with_dropout_trains_as_it_would_alone():
    """An MLP head's dropout masks come from its own stream: trained beside another head (another seed and weight
    decay), it ends with the parameters it has when trained alone."""
    from bridge.evaluation.heads import _fit_heads

    rng = np.random.default_rng(0)
    n = 90
    y = rng.integers(0, 3, n)
    x = torch.from_numpy((np.eye(3)[y] + rng.normal(size=(n, 3))).astype(np.float32))
    y = torch.from_numpy(y)
    cfg = EvalConfig(max_epochs=40, patience=5, hidden=8, dropout=0.5)
    args = (x[:60], y[:60], x[60:], y[60:], "topic", 3, "mlp")
    alone = _fit_heads(*args, [1e-3], [4], cfg)
    shared = _fit_heads(*args, [1e-2, 1e-3], [7, 4], cfg)
    for w_alone, w_shared in zip(alone.parameters(), shared.parameters()):
        torch.testing.assert_close(w_shared[1], w_alone[0], rtol=0, atol=0)
