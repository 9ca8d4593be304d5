"""The report's t-SNE map: every user of a small corpus, a fixed random subset of a large one."""

import numpy as np

from bridge.report.plots import TSNE_MAX_USERS, projection_sample


def test_small_corpus_shows_every_user():
    assert np.array_equal(projection_sample(1000), np.arange(1000))
    assert np.array_equal(projection_sample(TSNE_MAX_USERS), np.arange(TSNE_MAX_USERS))


def test_large_corpus_shows_a_fixed_sorted_subset():
    shown = projection_sample(60_000)
    assert len(shown) == TSNE_MAX_USERS
    assert len(np.unique(shown)) == TSNE_MAX_USERS  # no user twice
    assert np.all(np.diff(shown) > 0) and shown[0] >= 0 and shown[-1] < 60_000
    assert np.array_equal(shown, projection_sample(60_000))  # the same users every run
    assert not np.array_equal(shown, projection_sample(60_000, seed=1))
