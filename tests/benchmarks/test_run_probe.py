"""benchmarks/run_probe.py: the probe scores a representation with the run's own evaluation settings."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # the script's own imports

import run_probe  # noqa: E402

from tests.bridge.bridge_tiny import TINY_EVAL  # noqa: E402


def test_probe_uses_the_evaluation_settings_it_is_given(tiny_corpus_loaded, monkeypatch):
    """The settings reach the report's probe (a run with non-default ``eval`` settings is probed as its report
    was); without them, the defaults; and the scores are the probe's own means over the head seeds."""
    corpus = tiny_corpus_loaded
    x = np.random.default_rng(0).normal(size=(corpus.num_users, 4))
    seen = []
    real = run_probe.evaluate_representation

    def spy(*args):
        seen.append(args[-1])
        return real(*args)

    monkeypatch.setattr(run_probe, "evaluate_representation", spy)
    topic, fans = run_probe.probe(x, corpus, TINY_EVAL)
    run_probe.probe(x, corpus)
    assert seen == [TINY_EVAL, None]
    expected = real(x, corpus.labels, corpus.fans, corpus.splits, TINY_EVAL)
    assert (topic, fans) == (expected.topic.scores["macro_f1"].mean, expected.fans.scores["mae"].mean)
