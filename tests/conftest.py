"""Shared fixtures: tiny synthetic corpora generated once per test session, and a tiny stage-2 checkpoint.

``tiny_corpus`` (folder Path) and ``tiny_corpus_loaded`` (``corpus.Corpus``) are session-scoped and shared by
every package's tests: treat them as read-only (copy a folder with ``shutil.copytree`` before changing it).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from corpus import Corpus, load_corpus
from corpus.synthetic import SyntheticConfig, generate
from tests.planted import planted_communities

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


@pytest.fixture
def finetune_checkpoint(tmp_path):
    """``(path, system, (X, edges, labels, fans, splits))``: a stage-2 checkpoint as the stage writes it
    (state_dict + stage2_config) over a 90-user graph of three planted communities, its weights perturbed so
    they differ from any fresh initialisation; the system it was saved from; the graph and its targets."""
    import torch

    from stage2_graph.config import Stage2Config
    from stage2_graph.infer import graph_inputs
    from stage2_graph.system import Stage2System

    x, *targets = planted_communities(
        90, communities=3, features=5, shift=0.3, edges_per_user=3, cross=0.15, fans_base=1.0
    )
    graph = (x.astype(np.float32), *targets)
    x, edges, *_ = graph
    cfg = Stage2Config.from_dict(
        {
            "corpus": ".",
            "cache_dir": ".",
            "use_modalities": False,
            "model": {"hidden_dim": 8, "num_layers": 2},
        }
    )
    torch.manual_seed(123)
    system = Stage2System.from_config(graph_inputs(x, edges, "fp"), cfg)
    with torch.no_grad():
        for p in system.model.parameters():
            p.add_(0.5)
    path = tmp_path / "last.ckpt"
    torch.save(
        {"state_dict": system.state_dict(), "hyper_parameters": {"stage2_config": cfg.to_dict()}}, path
    )
    return path, system, graph
