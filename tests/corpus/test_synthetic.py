"""The synthetic generator: format, determinism, and the planted structure the paper's claims rely on."""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import corpus.synthetic.generator as generator_module
from corpus import load_corpus
from corpus.synthetic import SyntheticConfig, generate, load_truth
from corpus.synthetic.__main__ import main as cli_main
from corpus.synthetic.graph import dcsbm_edges, pareto_theta
from corpus.synthetic.text import TEXT_FACTOR_WORDS

SMALL = SyntheticConfig(num_users=60, seed=0, posts_per_user=6.0, workers=1)


def file_digests(root: Path) -> dict[str, str]:
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = Path(folder) / name
            out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def best_single_factor_accuracy(factor: np.ndarray, target: np.ndarray) -> float:
    """Accuracy of the best predictor of ``target`` that sees only ``factor`` (majority target per value)."""
    correct = 0
    for value in np.unique(factor):
        correct += np.bincount(target[factor == value]).max()
    return correct / target.size


# ---- format and reader round trip ---------------------------------------------------------------------
def test_tiny_corpus_loads_and_matches_truth(tiny_corpus, tiny_corpus_loaded):
    corpus, truth = tiny_corpus_loaded, load_truth(tiny_corpus)
    assert corpus.num_users == 60
    assert corpus.label_names == [f"topic_{k}" for k in range(6)]
    np.testing.assert_array_equal(corpus.labels, truth["user_topic"])
    np.testing.assert_array_equal(corpus.fans, truth["user_fans"].astype(np.float64))
    np.testing.assert_array_equal(corpus.edges, truth["edges"])  # written shuffled, both orientations
    np.testing.assert_array_equal(corpus.user_num_posts, truth["user_num_posts"])
    np.testing.assert_array_equal(corpus.post_has_image, truth["post_has_image"])
    np.testing.assert_array_equal(corpus.post_has_text, truth["post_has_text"])
    assert corpus.features.shape == (60, 6)
    np.testing.assert_allclose(corpus.features.std(axis=0), 1.0, rtol=1e-5)
    img = corpus.load_image(int(np.flatnonzero(corpus.post_has_image)[0]))
    assert img.size == (32, 32) and img.mode == "RGB"
    assert Image.open(corpus.image_path(int(np.flatnonzero(corpus.post_has_image)[0]))).format == "PNG"


def test_missing_modalities_and_silent_users_are_present(synthetic_corpus):
    root = synthetic_corpus(num_users=300, image_pool=64)
    corpus = load_corpus(root)
    assert 0 < (corpus.user_num_posts == 0).sum() < 0.15 * corpus.num_users
    assert 0.03 < 1 - corpus.post_has_image.mean() < 0.2
    assert 0.03 < 1 - corpus.post_has_text.mean() < 0.2
    assert (~corpus.user_image_mask).sum() >= (corpus.user_num_posts == 0).sum()


def test_image_pool_shares_files(synthetic_corpus):
    root = synthetic_corpus(num_users=200, image_pool=40)
    corpus = load_corpus(root)
    used = {p for p in corpus.post_image if p is not None}
    assert len(used) <= 40 < corpus.post_has_image.sum()
    assert sum(1 for _ in (root / "images").rglob("*.png")) == 40
    truth = load_truth(root)
    # a shared image still shows the visual factor of each post that uses it
    has = truth["post_image_id"] >= 0
    post_visual = truth["topic_visual"][truth["post_topic"]]
    np.testing.assert_array_equal(truth["image_visual"][truth["post_image_id"][has]], post_visual[has])
    np.testing.assert_array_equal(
        truth["image_palette"][truth["post_image_id"][has]], truth["post_palette"][has]
    )


def test_labels_and_fans_can_be_left_empty(synthetic_corpus):
    corpus = load_corpus(
        synthetic_corpus(num_users=200, unlabelled_share=0.3, fans_unknown_share=0.2, image_pool=32)
    )
    assert 0.15 < (corpus.labels < 0).mean() < 0.45
    assert 0.08 < np.isnan(corpus.fans).mean() < 0.32


# ---- determinism -------------------------------------------------------------------------------------
def test_same_seed_same_bytes_and_different_seed_differs(tmp_path):
    first = file_digests(generate(tmp_path / "a", SMALL))
    second = file_digests(generate(tmp_path / "b", SMALL))
    assert first == second
    assert {"users.csv", "posts.jsonl", "edges.csv", "_truth.npz"} <= set(first)
    other = file_digests(generate(tmp_path / "c", replace(SMALL, seed=1)))
    for name in ("users.csv", "posts.jsonl", "edges.csv", "_truth.npz"):
        assert other[name] != first[name], name
    shared_images = set(first) & set(other)
    assert any(first[k] != other[k] for k in shared_images if k.startswith("images/"))


@pytest.mark.parametrize(
    "knobs", [{"image_pool": 48}, {"design": "factorised"}, {"topics": 5, "text_ambiguous_share": 0.9}]
)
def test_same_seed_same_bytes_for_other_knobs(tmp_path, knobs):
    cfg = replace(SMALL, **knobs)
    assert file_digests(generate(tmp_path / "a", cfg)) == file_digests(generate(tmp_path / "b", cfg))


def test_bytes_do_not_depend_on_worker_processes(tmp_path, monkeypatch):
    cfg = replace(SMALL, num_users=30, avg_degree=4.0)
    in_process = file_digests(generate(tmp_path / "one", cfg))
    monkeypatch.setattr(generator_module, "IN_PROCESS_MAX", 0)  # force the process pool
    pooled = file_digests(generate(tmp_path / "two", replace(cfg, workers=2)))
    assert pooled == in_process


def test_refuses_to_overwrite_without_flag(tmp_path):
    cfg = replace(SMALL, num_users=10, avg_degree=1.0)
    generate(tmp_path, cfg)
    with pytest.raises(FileExistsError, match="pass overwrite=True"):
        generate(tmp_path, cfg)
    (tmp_path / "keep.txt").write_text("mine")
    generate(tmp_path, replace(cfg, seed=5), overwrite=True)
    assert (tmp_path / "keep.txt").read_text() == "mine"
    assert load_corpus(tmp_path, min_labelled_per_class=0).num_users == 10


def test_tiny_corpus_lowers_a_too_dense_degree(tmp_path):
    with pytest.warns(
        UserWarning, match=r"avg_degree 10.0 is too dense for 12 users at homophily 0.6; writing \d+ edges"
    ):
        root = generate(tmp_path, replace(SMALL, num_users=12))
    corpus = load_corpus(root, min_labelled_per_class=0)
    assert 0 < corpus.num_edges < 60


def test_bad_knob_is_rejected():
    with pytest.raises(ValueError, match=r"homophily must be in \[0, 1\], got 1.5"):
        SyntheticConfig(homophily=1.5).check()
    with pytest.raises(ValueError, match="num_visual_factors must be in 1..6"):
        SyntheticConfig(num_visual_factors=7).check()
    with pytest.raises(ValueError, match="design must be one of shared, factorised, got 'mixed'"):
        SyntheticConfig(design="mixed").check()
    with pytest.raises(ValueError, match=r"image_pool must be 0 or >= 24 \(one per image cell\), got 10"):
        SyntheticConfig(image_pool=10).check()


# ---- planted structure -------------------------------------------------------------------------------
@pytest.mark.parametrize("homophily", [0.3, 0.8])
def test_measured_homophily_matches_the_knob(synthetic_corpus, homophily):
    corpus = load_corpus(synthetic_corpus(num_users=300, homophily=homophily, image_pool=32))
    same = corpus.labels[corpus.edges[:, 0]] == corpus.labels[corpus.edges[:, 1]]
    assert corpus.num_edges == 1500
    assert abs(same.mean() - homophily) < 0.01


def test_degrees_are_heavy_tailed_and_follow_theta():
    rng = np.random.default_rng(0)
    n = 5000
    topic = rng.integers(0, 4, n)
    theta = pareto_theta(n, 2.5, rng)
    edges = dcsbm_edges(topic, theta, n * 5, 0.8, rng)
    assert np.all(edges[:, 0] < edges[:, 1])
    assert np.unique(edges, axis=0).shape[0] == edges.shape[0] == n * 5
    degree = np.bincount(edges.ravel(), minlength=n)
    assert degree.max() > 10 * degree.mean()  # hubs
    assert np.median(degree) < degree.mean()  # right-skewed
    assert np.corrcoef(np.log(theta), np.log1p(degree))[0, 1] > 0.6


def test_factorised_design_topic_needs_both_factors(synthetic_corpus):
    """Design 'factorised': neither the visual nor the textual factor alone tells the topic (best ~1/2 with
    2x2); both do."""
    root = synthetic_corpus(num_users=400, image_pool=64, design="factorised", secondary_share=0.0)
    truth = load_truth(root)
    post_topic = truth["post_topic"]
    visual = truth["topic_visual"][post_topic]
    textual = truth["topic_text"][post_topic]
    assert abs(best_single_factor_accuracy(visual, post_topic) - 0.5) < 0.05
    assert abs(best_single_factor_accuracy(textual, post_topic) - 0.5) < 0.05
    assert best_single_factor_accuracy(visual * 2 + textual, post_topic) == 1.0
    # The same holds per user, from the majority factor of the user's posts.
    user = truth["post_user"]
    has_posts = truth["user_num_posts"] > 0
    n_users = truth["user_topic"].size

    def majority(values, k):
        counts = np.zeros((n_users, k))
        np.add.at(counts, (user, values), 1)
        return counts.argmax(axis=1)

    user_topic = truth["user_topic"][has_posts]
    user_visual, user_textual = majority(visual, 2)[has_posts], majority(textual, 2)[has_posts]
    assert best_single_factor_accuracy(user_visual, user_topic) < 0.6
    assert best_single_factor_accuracy(user_textual, user_topic) < 0.6
    assert best_single_factor_accuracy(user_visual * 2 + user_textual, user_topic) > 0.9


def test_shared_design_families_pair_topics_differently(synthetic_corpus):
    """Design 'shared': image families and caption families each merge topic pairs, different pairs, so each
    alone leaves a pair (best ~1/2 of the topics) and both name the topic; cues follow the post's topic except for
    ambiguous users."""
    root = synthetic_corpus(num_users=400, image_pool=64)
    truth = load_truth(root)
    visual, textual = truth["topic_visual"], truth["topic_text"]
    np.testing.assert_array_equal(visual, [0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(textual, [0, 1, 1, 2, 2, 0])
    post_topic = truth["post_topic"]
    assert abs(best_single_factor_accuracy(visual[post_topic], post_topic) - 0.5) < 0.05
    assert abs(best_single_factor_accuracy(textual[post_topic], post_topic) - 0.5) < 0.05
    assert best_single_factor_accuracy(visual[post_topic] * 3 + textual[post_topic], post_topic) == 1.0
    ambiguous_image = truth["user_image_ambiguous"][truth["post_user"]]
    np.testing.assert_array_equal(truth["post_palette"][~ambiguous_image], post_topic[~ambiguous_image] % 2)
    assert 0.4 < (truth["post_palette"][ambiguous_image] == post_topic[ambiguous_image] % 2).mean() < 0.6
    ambiguous_text = truth["user_text_ambiguous"][truth["post_user"]]
    cue = truth["post_text_cue"]
    np.testing.assert_array_equal(cue[~ambiguous_text], post_topic[~ambiguous_text])
    np.testing.assert_array_equal(textual[cue], textual[post_topic])  # a cue never leaves the caption family
    # Off-topic posts are mostly about the user's secondary interest.
    off = truth["post_off_topic"]
    secondary = truth["user_secondary"][truth["post_user"]]
    assert 0.15 < off.mean() < 0.25
    assert (post_topic[off] == secondary[off]).mean() > 0.75
    assert np.all(truth["user_secondary"] != truth["user_topic"])


def test_shared_design_captions_carry_family_and_cue_words(synthetic_corpus):
    from corpus.synthetic.text import TOPIC_WORDS

    root = synthetic_corpus(num_users=200, image_pool=32)
    corpus, truth = load_corpus(root), load_truth(root)
    family_of = {w: f for f, words in enumerate(TEXT_FACTOR_WORDS) for w in words}
    cue_of = {w: k for k, words in enumerate(TOPIC_WORDS) for w in words}
    family = truth["topic_text"][truth["post_topic"]]
    for i, text in enumerate(corpus.post_text):
        words = text.split()
        assert {family_of[w] for w in words if w in family_of} <= {family[i]}
        assert {cue_of[w] for w in words if w in cue_of} <= {truth["post_text_cue"][i]}
    with_cue = [any(w in cue_of for w in t.split()) for t in corpus.post_text]
    assert 0.5 < np.mean(with_cue) < 0.95


def test_factorised_design_captions_carry_only_the_textual_factor(synthetic_corpus):
    root = synthetic_corpus(num_users=200, image_pool=32, design="factorised")
    corpus, truth = load_corpus(root), load_truth(root)
    word_factor = {w: f for f, words in enumerate(TEXT_FACTOR_WORDS) for w in words}
    textual = truth["topic_text"][truth["post_topic"]]
    predicted = np.full(corpus.num_posts, -1)
    for i, text in enumerate(corpus.post_text):
        hits = [word_factor[w] for w in text.split() if w in word_factor]
        if hits:
            assert len(set(hits)) == 1  # one post, one textual factor
            predicted[i] = hits[0]
    has = predicted >= 0
    assert has.mean() > 0.8
    np.testing.assert_array_equal(predicted[has], textual[has])


def r_squared(x: np.ndarray, y: np.ndarray) -> float:
    """In-sample R^2 of an ordinary least-squares fit with intercept."""
    design = np.column_stack([x, np.ones(len(y))])
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    residual = y - design @ coef
    return 1.0 - residual.var() / y.var()


def test_images_carry_the_visual_factor(synthetic_corpus):
    """A ridge probe on FFT magnitudes of the PNG files recovers the visual factor (the pattern): chance is 0.5."""
    root = synthetic_corpus(num_users=150, seed=2, image_pool=400, design="factorised")
    corpus, truth = load_corpus(root), load_truth(root)
    paths = sorted({p for p in corpus.post_image if p is not None})
    feats = []
    for rel in paths:
        gray = np.asarray(Image.open(root / rel).convert("L"), dtype=np.float64)
        feats.append(np.log1p(np.abs(np.fft.fft2(gray - gray.mean()))).ravel())
    feats = np.stack(feats)
    visual = truth["image_visual"][[int(Path(p).stem) for p in paths]]
    half = len(paths) // 2
    mean, std = feats[:half].mean(axis=0), feats[:half].std(axis=0) + 1e-6
    train, test = (feats[:half] - mean) / std, (feats[half:] - mean) / std
    target = np.where(visual[:half] == 1, 1.0, -1.0)
    weights = np.linalg.solve(train.T @ train + 10.0 * np.eye(train.shape[1]), train.T @ target)
    accuracy = ((test @ weights > 0).astype(int) == visual[half:]).mean()
    assert accuracy > 0.75


def test_fans_need_more_than_statistics(synthetic_corpus):
    root = synthetic_corpus(num_users=600, image_pool=64)
    corpus, truth = load_corpus(root), load_truth(root)
    log_fans = np.log1p(corpus.fans)  # fans may be 0
    degree = np.bincount(corpus.edges.ravel(), minlength=corpus.num_users)
    rich = np.column_stack(
        [corpus.features, np.log1p(degree), truth["fans_neighbour"], truth["user_quality"]]
    )
    assert r_squared(corpus.features, log_fans) < 0.45
    assert r_squared(rich, log_fans) > 0.75


def test_quality_is_visible_in_captions(synthetic_corpus):
    from corpus.synthetic.text import QUALITY_WORDS

    root = synthetic_corpus(num_users=300, image_pool=64)
    corpus, truth = load_corpus(root), load_truth(root)
    praise = np.array([sum(w in QUALITY_WORDS for w in t.split()) for t in corpus.post_text], dtype=float)
    assert np.corrcoef(praise[corpus.post_has_text], truth["post_quality"][corpus.post_has_text])[0, 1] > 0.3


# ---- CLI ---------------------------------------------------------------------------------------------
def test_cli_writes_a_corpus(tmp_path, capsys):
    assert (
        cli_main(
            [
                "--out",
                str(tmp_path / "c"),
                "--users",
                "40",
                "--seed",
                "3",
                "--workers",
                "1",
                "--avg-degree",
                "6",
            ]
        )
        == 0
    )
    assert "wrote" in capsys.readouterr().out
    corpus = load_corpus(tmp_path / "c")
    assert corpus.num_users == 40
    assert cli_main(["--out", str(tmp_path / "c"), "--users", "40"]) == 2
    assert "pass overwrite=True" in capsys.readouterr().err


def test_cli_help_lists_every_knob(capsys):
    with pytest.raises(SystemExit):
        cli_main(["--help"])
    text = capsys.readouterr().out
    for flag in (
        "--users",
        "--seed",
        "--homophily",
        "--image-pool",
        "--off-topic-share",
        "--workers",
        "--design",
        "--topics",
        "--cross-edge-affinity",
        "--image-ambiguous-share",
    ):
        assert flag in text
    assert "{shared,factorised}" in text


def test_png_encoder_round_trips_through_pillow_uncompressed():
    import io
    import zlib

    from corpus.synthetic.render import encode_png, render_images

    pixels = render_images(np.arange(12) % 6, np.linspace(0, 1, 12), (0, 1), 24, 0.15)
    for px in pixels:
        data = encode_png(px)
        assert data == encode_png(px.copy())  # deterministic
        # no metadata chunks, and the image data is stored, not compressed: zlib header 0x78 0x01 (level 0)
        assert data[12:16] == b"IHDR" and data[37:41] == b"IDAT" and data[-8:-4] == b"IEND"
        idat = data[41 : 41 + int.from_bytes(data[33:37], "big")]
        assert idat[:2] == b"\x78\x01" and len(zlib.decompress(idat)) == 24 * (1 + 3 * 24)
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            assert (img.format, img.mode, img.size) == ("PNG", "RGB", (24, 24))
            np.testing.assert_array_equal(np.asarray(img), px)
