"""benchmarks/image_graph_head.py: the users' mean trunk outputs, the head's batches (anchors with an image and a
neighbour that has one, common-neighbour counts), and a head that pulls linked users together."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # the script's own imports

from benchmarks.image_graph_head import EdgeSampler, HeadRecipe, train_head, user_means  # noqa: E402


def test_user_means_are_each_users_mean_over_its_images(tiny_corpus_loaded):
    corpus = tiny_corpus_loaded
    states = torch.randn(len(corpus.post_text), 6, generator=torch.Generator().manual_seed(0))
    means, has_image = user_means(corpus, states)
    has = np.asarray(corpus.post_has_image)
    for user in range(corpus.num_users):
        posts = [p for p in range(corpus.post_offsets[user], corpus.post_offsets[user + 1]) if has[p]]
        assert bool(has_image[user]) == bool(posts)
        expected = states[posts].mean(0) if posts else torch.zeros(6)
        torch.testing.assert_close(means[user], expected)


def test_sampler_draws_neighbours_that_have_images_and_counts_common_neighbours(tiny_corpus_loaded):
    corpus = tiny_corpus_loaded
    usable = torch.rand(corpus.num_users, generator=torch.Generator().manual_seed(1)) > 0.2
    sampler = EdgeSampler(corpus, usable)
    edges = {tuple(e) for e in np.asarray(corpus.edges).tolist()}
    linked = {(u, v) for u, v in edges if usable[u] and usable[v]} | {
        (v, u) for u, v in edges if usable[u] and usable[v]
    }
    neighbours = {u: {v for a, v in linked if a == u} for u in range(corpus.num_users)}
    anchor, positive, common = sampler.sample(16, torch.Generator().manual_seed(2))
    assert len(anchor) == min(16, len({u for u, _ in linked})) and len(set(anchor.tolist())) == len(anchor)
    for u, v in zip(anchor.tolist(), positive.tolist()):
        assert (u, v) in linked
    for i, u in enumerate(anchor.tolist()):
        for j, v in enumerate(positive.tolist()):
            assert common[i, j] == len(neighbours[u] & neighbours[v])


def test_the_trained_head_pulls_linked_users_together(tiny_corpus_loaded):
    """After training, linked users' head outputs are closer (cosine) than random pairs' by a margin the untrained
    head does not have (measured: 0.20 against -0.01); the same seed gives the same head."""
    corpus = tiny_corpus_loaded
    means = torch.randn(corpus.num_users, 12, generator=torch.Generator().manual_seed(3))
    sampler = EdgeSampler(corpus, torch.ones(corpus.num_users, dtype=torch.bool))
    edges = np.asarray(corpus.edges)
    rng = np.random.default_rng(0)
    random_pairs = rng.integers(0, corpus.num_users, size=(2000, 2))

    def gap(out: np.ndarray) -> float:
        unit = out / np.linalg.norm(out, axis=1, keepdims=True)
        cosine = lambda pairs: float((unit[pairs[:, 0]] * unit[pairs[:, 1]]).sum(1).mean())  # noqa: E731
        return cosine(edges) - cosine(random_pairs)

    untrained = train_head(means, sampler, HeadRecipe(steps=0, users=32, head_dim=8), seed=0)
    trained = train_head(means, sampler, HeadRecipe(steps=150, users=32, head_dim=8, lr=3e-3), seed=0)
    assert gap(untrained) < 0.05 and gap(trained) > 0.1
    again = train_head(means, sampler, HeadRecipe(steps=150, users=32, head_dim=8, lr=3e-3), seed=0)
    np.testing.assert_array_equal(trained, again)
