"""The planted structure at the default knobs, measured by simple probes on the generator's files and truth
(corpus/synthetic/probes.py): no single block at ceiling, fusing image and text beats either, cross-topic edges
recoverable from content but not from X or degree, fans depending on content quality."""

from __future__ import annotations

import numpy as np
import pytest

from corpus import load_corpus
from corpus.synthetic import SyntheticConfig, generate, load_truth
from corpus.synthetic.probes import image_features, probe, user_text_features
from corpus.synthetic.render import render_images

# The bridge's corpus size (at 1,000 users the scores move by at most about 0.04 between seeds, docs/corpus.md),
# with 1,000 shared image files instead of ~6,200: the probe scores stay within 0.015, in a quarter of the time.
PROBE_CONFIG = SyntheticConfig(num_users=1000, seed=0, workers=1, image_pool=1000)


@pytest.fixture(scope="module")
def probed(tmp_path_factory) -> dict[str, float]:
    return probe(generate(tmp_path_factory.mktemp("probe_corpus"), PROBE_CONFIG))


def test_each_modality_alone_is_informative_but_ambiguous(probed):
    chance = 1 / PROBE_CONFIG.topics
    for block in ("image", "text"):
        assert 2.5 * chance < probed[block] < 0.85, (block, probed[block])


def test_fusing_image_and_text_beats_each_alone(probed):
    assert probed["image+text"] > max(probed["image"], probed["text"]) + 0.04, probed
    assert probed["image+text"] < 0.9


def test_x_and_graph_are_below_ceiling(probed):
    assert probed["X"] < 0.45
    assert probed["X"] < probed["graph X"] < 0.85  # the graph adds to X, and stays below ceiling
    assert probed["graph labels"] < 0.9


def test_cross_topic_edges_are_recoverable_from_content_only(probed):
    assert probed["edge content"] > 0.65
    assert abs(probed["edge X"] - 0.5) < 0.05
    assert abs(probed["edge degree"] - 0.5) < 0.05
    # Among cross-topic edges, those to a secondary interest join users with more similar content.
    assert probed["edge secondary content"] > 0.53


def test_fans_depend_on_content_quality(probed):
    assert probed["fans X+degree+content quality"] > probed["fans X+degree"] + 0.1
    for modality in ("caption", "image"):  # quality shows in each modality
        assert probed[f"fans X+degree+{modality} quality"] > probed["fans X+degree"] + 0.05, modality


def test_factorised_design_is_still_reachable(tmp_path):
    """The earlier design through its knobs: with homophily 0.8 the graph reads the topic almost exactly."""
    cfg = SyntheticConfig(
        num_users=400,
        seed=1,
        workers=1,
        design="factorised",
        homophily=0.8,
        secondary_share=0.0,
        cross_edge_affinity=0.0,
        stats_topic_effect=0.35,
    )
    scores = probe(generate(tmp_path, cfg))
    assert scores["graph labels"] > 0.9
    assert scores["image"] < 0.7 and scores["text"] < 0.7  # each shows one factor of two


def test_quality_shows_in_images_and_captions(tmp_path):
    """Higher quality: stronger pattern (more low-frequency energy), less noise, more praise words."""
    quality = np.repeat([0.1, 0.9], 60)
    pixels = render_images(np.tile(np.arange(3), 40), quality, (0, 7), 32, 0.15, np.tile([0, 1], 60))
    feats = np.stack([image_features(px) for px in pixels])
    side = int(round(np.sqrt(feats.shape[1] - 6)))
    spectrum = feats[:, 6:].reshape(-1, side, side)
    outer = spectrum[:, 0, :].mean(axis=1)  # highest vertical frequencies: noise
    assert outer[quality > 0.5].mean() < outer[quality < 0.5].mean()

    root = generate(tmp_path / "c", SyntheticConfig(num_users=200, seed=0, workers=1, image_pool=48))
    corpus, truth = load_corpus(root), load_truth(root)
    text, vocab = user_text_features(corpus)
    from corpus.synthetic.text import QUALITY_WORDS

    praise = text[:, [vocab.index(w) for w in QUALITY_WORDS if w in vocab]].sum(axis=1)
    has = corpus.user_num_posts > 0
    assert np.corrcoef(praise[has], truth["user_quality"][has])[0, 1] > 0.4
