"""The reader on a valid hand-written corpus (tests/corpus/conftest.py): every value is known."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest

from corpus import CorpusWarning, load_corpus


@pytest.fixture
def corpus(make_corpus):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the valid corpus must load without any warning
        return load_corpus(make_corpus())


def test_counts_and_user_order(corpus):
    assert corpus.user_ids == list("abcdefghijk")
    assert (corpus.num_users, corpus.num_posts, corpus.num_edges) == (11, 11, 3)


def test_features_are_standardized_and_constant_column_is_zero(corpus):
    assert corpus.feature_names == ["likes", "posts_per_week", "constant"]
    assert corpus.features.dtype == np.float32 and corpus.features.shape == (11, 3)
    likes = np.arange(1, 22, 2, dtype=np.float64)
    np.testing.assert_allclose(corpus.features[:, 0], (likes - 11.0) / np.sqrt(40.0), rtol=1e-6)
    np.testing.assert_allclose(corpus.features[:, 1], (likes + 1 - 12.0) / np.sqrt(40.0), rtol=1e-6)
    assert np.all(corpus.features[:, 2] == 0.0)
    np.testing.assert_allclose(corpus.feature_mean, [11.0, 12.0, 5.0])
    np.testing.assert_allclose(corpus.feature_std, [np.sqrt(40.0), np.sqrt(40.0), 0.0])


def test_labels_and_fans(corpus):
    assert corpus.label_names == ["cat", "dog"]
    assert corpus.labels.dtype == np.int64
    assert corpus.labels.tolist() == [0, 1, 0, 1, 0, 1, 0, 1, 0, 1, -1]
    assert corpus.fans.dtype == np.float64
    np.testing.assert_array_equal(corpus.fans, [10, np.nan, 0, 7, 1, 2, 3, 4, 5, 6, 8])


def test_edges_are_merged_canonical_and_sorted(corpus):
    # b,a + a,b + a,b (duplicate) -> (0,1); c,a -> (0,2); d,k -> (3,10)
    assert corpus.edges.dtype == np.int64
    assert corpus.edges.tolist() == [[0, 1], [0, 2], [3, 10]]


def test_posts_are_csr_grouped_by_user_in_file_order(corpus):
    assert corpus.post_offsets.dtype == np.int64
    assert corpus.post_offsets.tolist() == [0, 2, 4, 5, 6, 7, 8, 9, 10, 11, 11, 11]
    assert corpus.post_ids == ["p2", "p5", "p1", "p3", "p4", "p6", "p7", "p8", "p9", "p10", "p11"]
    assert corpus.post_lines.tolist() == [2, 5, 1, 3, 4, 6, 7, 8, 9, 10, 11]
    assert corpus.post_text[:5] == ["cat nap", "  ", "dog park", "", "hello"]
    assert corpus.post_image[:6] == [
        "images/sub/y.jpg",
        "images/z.webp",
        "images/x.png",
        None,
        "images/x.png",
        None,
    ]
    assert corpus.post_user.tolist() == [0, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8]
    assert corpus.user_num_posts.tolist() == [2, 2, 1, 1, 1, 1, 1, 1, 1, 0, 0]


def test_modality_masks(corpus):
    assert corpus.post_has_image.tolist()[:6] == [True, True, True, False, True, False]
    assert corpus.post_has_text.tolist()[:5] == [True, False, True, False, True]  # "  " counts as empty
    assert corpus.user_image_mask.tolist() == [True, True, True] + [False] * 8
    assert corpus.user_text_mask.tolist() == [True] * 9 + [False, False]


def test_images_load_as_rgb_and_paths_resolve(corpus):
    assert corpus.image_path(3) is None
    assert corpus.image_path(0) == corpus.root / "images/sub/y.jpg"
    img = corpus.load_image(0)
    assert img.mode == "RGB" and img.size == (5, 6)
    webp = corpus.load_image(1)
    assert webp.mode == "RGB" and webp.size == (2, 2)
    assert corpus.load_image(2).getpixel((0, 0)) == (255, 0, 0)


def test_seeded_split_is_stratified_and_recorded(corpus, tmp_path):
    assert corpus.split_source == "seeded-stratified-60/20/20(seed=0)"
    assert corpus.splits.dtype == np.int8
    for label in (0, 1):  # 5 users per class -> 3 train, 1 val, 1 test
        assert np.bincount(corpus.splits[corpus.labels == label], minlength=3).tolist() == [3, 1, 1]
    assert corpus.splits[10] == 0  # the single unlabelled user is its own stratum
    path = corpus.save_splits(tmp_path / "splits.csv")
    lines = path.read_text().splitlines()
    assert lines[0] == "user_id,split" and len(lines) == 12
    names = ["train", "val", "test"]
    assert lines[1:] == [f"{u},{names[s]}" for u, s in zip(corpus.user_ids, corpus.splits.tolist())]


def test_split_seed_changes_the_split_and_is_reproducible(make_corpus):
    root = make_corpus()
    a, b = load_corpus(root, split_seed=0), load_corpus(root, split_seed=0)
    c = load_corpus(root, split_seed=1)
    assert a.splits.tolist() == b.splits.tolist()
    assert a.splits.tolist() != c.splits.tolist()
    assert c.split_source == "seeded-stratified-60/20/20(seed=1)"


def test_split_column_is_used_when_present(make_corpus):
    users = "user_id,label,split,x\n" + "".join(
        f"u{i},{'ab'[i % 2]},{['train', 'val', 'test'][i % 3]},{i}\n" for i in range(12)
    )
    corpus = load_corpus(make_corpus(users=users, posts="", edges="src,dst\n", images={}))
    assert corpus.split_source == "users.csv"
    assert corpus.splits.tolist() == [i % 3 for i in range(12)]
    assert corpus.num_posts == 0 and corpus.num_edges == 0
    assert corpus.post_offsets.tolist() == [0] * 13
    assert corpus.user_image_mask.sum() == 0


def test_unlabelled_corpus_and_no_statistics_are_legal(make_corpus):
    corpus = load_corpus(make_corpus(users="user_id\nx\ny\n", posts="", edges="src,dst\nx,y\n", images={}))
    assert corpus.label_names == [] and corpus.labels.tolist() == [-1, -1]
    assert corpus.features.shape == (2, 0) and corpus.feature_names == []
    assert np.isnan(corpus.fans).all()
    assert corpus.edges.tolist() == [[0, 1]]


def test_self_loops_are_dropped_with_a_warning(make_corpus):
    root = make_corpus(edges="src,dst\na,b\nc,c\nb,b\n")
    with pytest.warns(CorpusWarning, match=r"^edges.csv: dropped 2 self-loop\(s\) \(first on line 3\)$"):
        corpus = load_corpus(root)
    assert corpus.edges.tolist() == [[0, 1]]


def test_symlink_inside_the_corpus_is_allowed(make_corpus):
    root = make_corpus()
    (root / "images" / "link.png").symlink_to(root / "images" / "x.png")
    (root / "posts.jsonl").write_text('{"user_id": "a", "text": "t", "image": "images/link.png"}\n')
    corpus = load_corpus(root)
    assert corpus.load_image(0).size == (4, 3)


def test_blank_lines_and_extra_keys_are_accepted(make_corpus):
    posts = '\n{"user_id": "a", "text": "t", "image": null, "likes": 3}\n   \n{"user_id": "b", "text": "", "image": null}\n'
    corpus = load_corpus(make_corpus(posts=posts))
    assert corpus.post_lines.tolist() == [2, 4]
    assert corpus.post_ids is None


def test_image_check_modes(make_corpus):
    root = make_corpus()
    for mode in ("header", "decode", "exists"):
        assert load_corpus(root, image_check=mode).num_posts == 11


def test_fingerprint_is_content_based(make_corpus, tmp_path):
    root = make_corpus()
    base = load_corpus(root).fingerprint
    assert len(base) == 64 and int(base, 16) >= 0
    copy = shutil.copytree(root, tmp_path / "elsewhere")
    assert load_corpus(copy).fingerprint == base  # the folder's location does not matter
    assert load_corpus(root, split_seed=3).fingerprint == base  # nor the split seed

    def changed(mutate) -> str:
        other = shutil.copytree(root, tmp_path / f"c{len(list(tmp_path.iterdir()))}")
        mutate(other)
        return load_corpus(other).fingerprint

    assert (
        changed(
            lambda r: (r / "users.csv").write_text(
                (r / "users.csv").read_text().replace("a,cat,10", "a,cat,11")
            )
        )
        != base
    )
    assert (
        changed(
            lambda r: (r / "posts.jsonl").write_text(
                (r / "posts.jsonl").read_text().replace("cat nap", "cat map")
            )
        )
        != base
    )
    assert changed(lambda r: (r / "edges.csv").write_text((r / "edges.csv").read_text() + "e,f\n")) != base
    assert (
        changed(lambda r: (r / "images/x.png").write_bytes((r / "images/x.png").read_bytes() + b"\0")) != base
    )


def test_quoted_csv_and_crlf_line_endings(make_corpus):
    users = 'user_id,label,x\r\n"smith, j",a,1\r\n"o""neil",a,2\r\nz,,3\r\n'
    edges = 'src,dst\r\n"smith, j","o""neil"\r\n'
    posts = '{"user_id": "smith, j", "text": "hi", "image": null}\r\n  {"user_id": "z", "text": "", "image": null}  \n'
    corpus = load_corpus(
        make_corpus(users=users, posts=posts, edges=edges, images={}), min_labelled_per_class=0
    )
    assert corpus.user_ids == ["smith, j", 'o"neil', "z"]
    assert corpus.edges.tolist() == [[0, 1]]
    assert corpus.post_lines.tolist() == [1, 2] and corpus.post_text == ["hi", ""]


def test_quoted_csv_errors_keep_line_numbers(make_corpus):
    from corpus import CorpusError

    users = 'user_id,x\r\n"a",1\r\n"b\r\nc",2\r\n"a",3\r\n'
    with pytest.raises(
        CorpusError, match=r"^users.csv, line 5, field 'user_id': duplicate user id 'a' \(first on line 2\)$"
    ):
        load_corpus(make_corpus(users=users, posts="", edges="src,dst\n", images={}))
