"""The seeded stratified 60/20/20 split."""

from __future__ import annotations

import numpy as np
import pytest

from corpus.splits import stratified_split


def test_each_stratum_is_split_60_20_20():
    labels = np.repeat([0, 1, 2, -1], [100, 50, 10, 20])
    splits = stratified_split(np.random.default_rng(0).permutation(labels), seed=0)
    shuffled = np.random.default_rng(0).permutation(labels)
    expected = {0: [60, 20, 20], 1: [30, 10, 10], 2: [6, 2, 2], -1: [12, 4, 4]}
    for label, counts in expected.items():
        assert np.bincount(splits[shuffled == label], minlength=3).tolist() == counts
    assert splits.dtype == np.int8


def test_small_classes_still_reach_val_and_test():
    labels = np.array([0, 0, 0, 1, 1, 1, 1, 2])
    splits = stratified_split(labels, seed=0)
    assert np.bincount(splits[labels == 0], minlength=3).tolist() == [1, 1, 1]
    assert np.bincount(splits[labels == 1], minlength=3).tolist() == [2, 1, 1]
    assert splits[labels == 2].tolist() == [0]  # a single user goes to train


def test_seeded_and_deterministic():
    labels = np.repeat([0, 1], 50)
    a, b, c = stratified_split(labels, 7), stratified_split(labels, 7), stratified_split(labels, 8)
    assert a.tolist() == b.tolist()
    assert a.tolist() != c.tolist()


def test_bad_fractions():
    with pytest.raises(ValueError, match="summing to 1"):
        stratified_split(np.zeros(3, dtype=np.int64), fractions=(0.5, 0.5, 0.5))


def test_tiny_corpus_split_is_stratified(tiny_corpus_loaded):
    corpus = tiny_corpus_loaded
    for label in range(corpus.num_classes):
        counts = np.bincount(corpus.splits[corpus.labels == label], minlength=3)
        n = counts.sum()
        assert abs(counts[1] - 0.2 * n) <= 1 and abs(counts[2] - 0.2 * n) <= 1
