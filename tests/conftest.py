"""Shared fixtures: tiny synthetic corpora generated once per test session.

``tiny_corpus`` (folder Path) and ``tiny_corpus_loaded`` (``corpus.Corpus``) are session-scoped and shared by
every package's tests: treat them as read-only (copy a folder with ``shutil.copytree`` before changing it).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from corpus import Corpus, load_corpus
from corpus.synthetic import SyntheticConfig, generate

# 60 users, 4 topics (2 visual x 2 textual), ~350 posts with 32 px PNGs, 300 edges; about a second.
TINY_CONFIG = SyntheticConfig(num_users=60, seed=0, posts_per_user=6.0, avg_degree=10.0, workers=1)


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    """Folder of a 60-user synthetic corpus (``TINY_CONFIG``); ground truth in ``_truth.npz``."""
    return generate(tmp_path_factory.mktemp("tiny_corpus"), TINY_CONFIG)


@pytest.fixture(scope="session")
def tiny_corpus_loaded(tiny_corpus) -> Corpus:
    """``load_corpus(tiny_corpus)``; do not mutate its arrays."""
    return load_corpus(tiny_corpus)


@pytest.fixture(scope="session")
def synthetic_corpus(tmp_path_factory):
    """Factory: ``synthetic_corpus(num_users=200, homophily=0.5, ...) -> Path``, knobs applied to ``TINY_CONFIG``;
    cached per knob set for the session."""
    made: dict[tuple, Path] = {}

    def make(**knobs) -> Path:
        key = tuple(sorted(knobs.items()))
        if key not in made:
            made[key] = generate(tmp_path_factory.mktemp("synthetic_corpus"), replace(TINY_CONFIG, **knobs))
        return made[key]

    return make
