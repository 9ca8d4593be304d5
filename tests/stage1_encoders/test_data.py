"""The pair-batch collator and data module: pairs, posts, tokens, masks, images, weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stage1_encoders.data import PairBatchCollator, Stage1DataModule, is_edge_key, sample_negative_pairs


def _edge_set(corpus) -> set[tuple[int, int]]:
    return {(int(u), int(v)) for u, v in corpus.edges}


def test_batch_pairs_posts_and_rows_are_consistent(tiny_parts):
    corpus = tiny_parts.corpus
    torch.manual_seed(0)
    collator = PairBatchCollator(corpus, tiny_parts.prep, negatives_per_positive=2.0, posts_per_user=2)
    edge_ids = [0, 5, 17, 42, 99]
    batch = collator(edge_ids)
    users = batch["users"]
    edges = _edge_set(corpus)
    u = users[batch["pair_u"]].tolist()
    v = users[batch["pair_v"]].tolist()
    label = batch["pair_label"].tolist()
    assert label == [1.0] * 5 + [0.0] * 10
    for i, e in enumerate(edge_ids):  # positives are the given edges, in either orientation
        assert (min(u[i], v[i]), max(u[i], v[i])) == tuple(corpus.edges[e])
    for a, b in zip(u[5:], v[5:]):
        assert a != b and (min(a, b), max(a, b)) not in edges
    assert batch["num_users"] == len(users) == len(set(u + v))

    post_user = corpus.post_user
    for rows, key in (("text_post", "text_post_user"), ("image_post", "image_post_user")):
        assert torch.equal(torch.from_numpy(post_user[batch[rows].numpy()]), users[batch[key]])
    assert corpus.post_has_text[batch["text_post"].numpy()].all()
    assert corpus.post_has_image[batch["image_post"].numpy()].all()
    assert torch.equal(batch["text_post"][batch["ita_text_row"]], batch["image_post"][batch["ita_image_row"]])
    both = corpus.post_has_text & corpus.post_has_image
    all_posts = set(batch["text_post"].tolist()) | set(batch["image_post"].tolist())
    assert len(batch["ita_text_row"]) == sum(bool(both[p]) for p in all_posts)

    counts = np.bincount(
        np.concatenate([batch["text_post_user"], batch["image_post_user"]]).tolist(), minlength=len(users)
    )
    assert batch["num_posts"] <= 2 * len(users)
    for row, user in enumerate(users.tolist()):  # a user with <= 2 posts shows them all
        n = int(corpus.user_num_posts[user])
        if n <= 2:
            expect = sum(
                int(corpus.post_has_text[p]) + int(corpus.post_has_image[p])
                for p in range(*corpus.post_offsets[user : user + 2])
            )
            assert counts[row] == expect

    enc = tiny_parts.tokenizer(
        [corpus.post_text[p] for p in batch["text_post"].tolist()],
        padding="longest",
        truncation=True,
        max_length=16,
        return_tensors="pt",
    )
    assert torch.equal(batch["input_ids"], enc["input_ids"])
    assert batch["pixel_values"].shape == (len(batch["image_post"]), 3, 32, 32)


def test_mlm_masking_in_collate_respects_special_tokens(tiny_parts):
    torch.manual_seed(1)
    collator = PairBatchCollator(tiny_parts.corpus, tiny_parts.prep, mlm_probability=0.5)
    batch = collator(list(range(40)))
    labels, ids = batch["mlm_labels"], batch["input_ids"]
    special = torch.isin(ids, collator.special_ids) | (batch["attention_mask"] == 0)
    assert (labels[special] == -100).all()
    assert torch.equal(batch["mlm_input_ids"][special], ids[special])
    assert torch.equal(labels[labels != -100], ids[labels != -100])
    assert (labels != -100).sum() > 0
    no_mlm = PairBatchCollator(tiny_parts.corpus, tiny_parts.prep, mlm=False)(list(range(4)))
    assert "mlm_labels" not in no_mlm


def test_positive_pairs_carry_edge_weights(tiny_parts):
    corpus = tiny_parts.corpus
    weight = np.linspace(0.1, 2.0, corpus.num_edges).astype(np.float32)
    collator = PairBatchCollator(corpus, tiny_parts.prep, edge_weight=weight, negatives_per_positive=1.0)
    batch = collator([3, 10, 200])
    torch.testing.assert_close(
        batch["pair_weight"], torch.tensor([weight[3], weight[10], weight[200], 1, 1, 1])
    )


def test_negative_sampling_never_returns_linked_pairs():
    torch.manual_seed(2)
    num_users = 12
    edges = torch.tensor([[u, v] for u in range(num_users) for v in range(u + 1, num_users) if (u + v) % 3])
    keys = edges[:, 0] * num_users + edges[:, 1]
    u, v = sample_negative_pairs(2000, num_users, keys)
    assert len(u) == 2000
    assert (u != v).all()
    got = torch.minimum(u, v) * num_users + torch.maximum(u, v)
    assert not torch.isin(got, keys).any()
    full = torch.tensor([[a, b] for a in range(3) for b in range(a + 1, 3)])
    u, v = sample_negative_pairs(5, 3, full[:, 0] * 3 + full[:, 1])
    assert len(u) == 0  # a complete graph has no negative pair


def _isin_sampler(num_pairs: int, num_users: int, edge_keys: torch.Tensor, max_rounds: int = 50):
    """The sampler before issue 23, kept as the reference: the same draws, checked with ``torch.isin``."""
    got_u, got_v, have = [], [], 0
    for _ in range(max_rounds):
        need = num_pairs - have
        if need <= 0 or num_users < 2:
            break
        u = torch.randint(num_users, (2 * need + 8,))
        v = torch.randint(num_users, (2 * need + 8,))
        key = torch.minimum(u, v) * num_users + torch.maximum(u, v)
        ok = (u != v) & ~torch.isin(key, edge_keys)
        got_u.append(u[ok][:need])
        got_v.append(v[ok][:need])
        have += len(got_u[-1])
    if not got_u:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    return torch.cat(got_u), torch.cat(got_v)


def _random_graph(num_users: int, num_edges: int, seed: int) -> torch.Tensor:
    """int64 [E', 2] distinct edges u < v, sorted like ``corpus.edges``."""
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randint(num_users, (2, num_edges), generator=g)
    keep = a != b
    keys = torch.unique(torch.minimum(a, b)[keep] * num_users + torch.maximum(a, b)[keep])
    return torch.stack([keys // num_users, keys % num_users], dim=1)


def test_is_edge_key_equals_isin_on_random_keys():
    g = torch.Generator().manual_seed(4)
    for num_keys, high in ((0, 10), (1, 10), (50, 60), (1000, 5000), (3000, 10**12)):
        sorted_keys = torch.randint(high, (num_keys,), generator=g).sort().values  # duplicates included
        queries = torch.cat([torch.randint(-5, high + 5, (4000,), generator=g), sorted_keys[:100]])
        assert torch.equal(is_edge_key(queries, sorted_keys), torch.isin(queries, sorted_keys))


@pytest.mark.parametrize("num_users,num_edges", [(40, 300), (500, 20000), (5000, 10000)])
def test_negative_sampler_draws_the_same_pairs_as_the_isin_reference(num_users, num_edges):
    edges = _random_graph(num_users, num_edges, seed=num_users)
    keys = edges[:, 0] * num_users + edges[:, 1]
    for seed in range(3):
        torch.manual_seed(seed)
        expected = _isin_sampler(700, num_users, keys)
        torch.manual_seed(seed)
        got = sample_negative_pairs(700, num_users, keys)
        assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
        assert len(got[0]) == 700
        pair = torch.minimum(*got) * num_users + torch.maximum(*got)
        assert not torch.isin(pair, keys).any()  # no corpus edge is ever a negative


def test_batch_negatives_draw_the_same_pairs_as_the_local_key_reference():
    num_users = 300
    edges = _random_graph(num_users, 6000, seed=5)
    keys = edges[:, 0] * num_users + edges[:, 1]
    users = torch.randperm(num_users, generator=torch.Generator().manual_seed(6))[:60].sort().values
    is_member = torch.zeros(num_users, dtype=torch.bool)
    is_member[users] = True
    inside = torch.searchsorted(users, edges[is_member[edges[:, 0]] & is_member[edges[:, 1]]])
    local_keys = inside[:, 0] * len(users) + inside[:, 1]  # the old per-batch keys, built over all edges
    assert len(local_keys) > 20
    torch.manual_seed(7)
    expected = _isin_sampler(500, len(users), local_keys)
    torch.manual_seed(7)
    got = sample_negative_pairs(500, len(users), keys, user_ids=users, key_base=num_users)
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
    a, b = users[got[0]], users[got[1]]
    assert not torch.isin(torch.minimum(a, b) * num_users + torch.maximum(a, b), keys).any()


def test_datamodule_covers_every_edge_once_per_epoch(tiny_parts):
    corpus = tiny_parts.corpus
    collator = PairBatchCollator(corpus, tiny_parts.prep, negatives_per_positive=0.0)
    loader = Stage1DataModule(collator, corpus.num_edges, pairs_per_batch=64).train_dataloader()
    assert len(loader) == -(-corpus.num_edges // 64)
    seen = []
    for batch in loader:
        users = batch["users"]
        seen += [
            tuple(sorted((int(a), int(b)))) for a, b in zip(users[batch["pair_u"]], users[batch["pair_v"]])
        ]
    assert sorted(seen) == sorted(_edge_set(corpus))


@pytest.mark.parametrize("posts_per_user", [1, 3])
def test_posts_per_user_limit(tiny_parts, posts_per_user):
    collator = PairBatchCollator(tiny_parts.corpus, tiny_parts.prep, posts_per_user=posts_per_user)
    users = torch.arange(tiny_parts.corpus.num_users)
    post_idx, post_user = collator.sample_posts(users)
    counts = np.bincount(post_user, minlength=len(users))
    assert (counts == np.minimum(tiny_parts.corpus.user_num_posts, posts_per_user)).all()
    assert (tiny_parts.corpus.post_user[post_idx] == post_user).all()
    assert len(np.unique(post_idx)) == len(post_idx)


def test_batch_negatives_are_unlinked_pairs_of_batch_users(tiny_parts):
    corpus = tiny_parts.corpus
    torch.manual_seed(3)
    collator = PairBatchCollator(
        corpus, tiny_parts.prep, negatives_per_positive=1.0, batch_negatives_per_positive=3.0
    )
    plain = PairBatchCollator(corpus, tiny_parts.prep, negatives_per_positive=1.0)
    batch = collator(list(range(10)))
    users, labels = batch["users"], batch["pair_label"]
    assert len(labels) == 10 + 10 + 30 and labels[20:].sum() == 0 and (batch["pair_weight"][20:] == 1).all()
    edges = _edge_set(corpus)
    for a, b in zip(users[batch["pair_u"][20:]].tolist(), users[batch["pair_v"][20:]].tolist()):
        assert a != b and (min(a, b), max(a, b)) not in edges
    torch.manual_seed(3)
    assert plain(list(range(10)))["num_users"] == batch["num_users"]  # no extra users to encode


def test_batched_normalisation_equals_the_per_image_transform_bit_for_bit(tiny_parts):
    from stage1_encoders.data import PostPreprocessor, split_to_tensor

    corpus, transform = tiny_parts.corpus, tiny_parts.image_encoder.image_transform()
    pil_stage, mean, std = split_to_tensor(transform)
    # open_clip's Compose([..., ToTensor, Normalize])
    assert pil_stage is not None and mean.shape == (1, 3, 1, 1)
    posts = np.flatnonzero(corpus.post_has_image)[:40]
    reference = torch.stack([transform(corpus.load_image(int(p))) for p in posts])
    for cache_mb in (0.0, 64.0):  # decoded each time, and from the uint8 cache on the second call
        prep = PostPreprocessor(
            corpus, tiny_parts.tokenizer, transform, tiny_parts.prep.image_size, 16, cache_mb
        )
        for _ in range(2):
            got = prep.images(posts)
            assert got.dtype == torch.float32
            assert torch.equal(got, reference)


def test_image_cache_is_keyed_by_file_so_reposts_decode_once(tiny_parts):
    from stage1_encoders.data import PostPreprocessor

    corpus = tiny_parts.corpus
    posts = np.flatnonzero(corpus.post_has_image)[:6]
    shared = corpus.post_image[int(posts[0])]
    reposted = type("Reposted", (), {})()  # the same corpus, with every image post pointing at one file
    reposted.post_image = [shared] * corpus.num_posts
    reposted.load_image = lambda post, min_side=None: corpus.load_image(int(posts[0]), min_side)
    prep = PostPreprocessor(
        reposted,
        tiny_parts.tokenizer,
        tiny_parts.image_encoder.image_transform(),
        tiny_parts.prep.image_size,
        16,
        image_cache_mb=64.0,
    )
    calls = []
    original = reposted.load_image
    reposted.load_image = lambda post, min_side=None: calls.append(post) or original(post, min_side)
    pixels = prep.images(posts)
    assert len(calls) == 1  # six posts, one file, one decode
    assert torch.equal(pixels, pixels[:1].expand_as(pixels))


def test_a_transform_of_another_shape_runs_per_image(tiny_parts):
    from stage1_encoders.data import PostPreprocessor, split_to_tensor

    corpus = tiny_parts.corpus
    transform = tiny_parts.image_encoder.image_transform()

    def custom(image):  # not a Compose: no batching possible, the output is used as it is
        return transform(image) * 2.0

    assert split_to_tensor(custom) == (None, None, None)
    posts = np.flatnonzero(corpus.post_has_image)[:5]
    prep = PostPreprocessor(corpus, tiny_parts.tokenizer, custom, tiny_parts.prep.image_size, 16, 64.0)
    expected = torch.stack([transform(corpus.load_image(int(p))) * 2.0 for p in posts])
    assert torch.equal(prep.images(posts), expected)
    assert torch.equal(prep.images(posts), expected)  # cached float rows


def test_decode_side_is_the_reducing_gap_times_the_input_side_for_open_clip_resizes():
    import open_clip

    from stage1_encoders.data import REDUCING_GAP, decode_side, split_to_tensor

    assert REDUCING_GAP == 3
    for mode, size in (("shortest", 96), ("longest", 96), ("squash", (96, 80))):
        transform = open_clip.image_transform(size, is_train=False, resize_mode=mode)
        pil_stage, _, _ = split_to_tensor(transform)
        assert decode_side(pil_stage, (96, 80) if mode == "squash" else (96, 96)) == 288, mode
    assert decode_side(None, (96, 96)) is None  # a transform of another shape: decoded at full size
    from torchvision.transforms import CenterCrop, Compose

    assert decode_side(Compose([CenterCrop(96)]), (96, 96)) is None  # crops at full size first


def _large_image_corpus(tmp_path, sides):
    """A corpus folder whose posts show PNG and JPEG images of the given sides, loaded."""
    import json

    from PIL import Image

    from corpus import load_corpus

    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    users = ["user_id,label"] + [f"u{i},{'ab'[i % 2]}" for i in range(12)]
    posts = []
    for i, (width, height) in enumerate(sides):
        yy, xx = np.mgrid[0:height, 0:width]
        base = np.stack([xx * 255 / width, yy * 255 / height, np.full(xx.shape, 40.0 * (i % 5))], axis=-1)
        array = np.clip(base + rng.normal(0, 10, base.shape), 0, 255).astype(np.uint8)
        name = f"images/{i}.{'jpg' if i % 2 else 'png'}"
        Image.fromarray(array).save(tmp_path / name, **({"quality": 95} if i % 2 else {}))
        posts.append({"post_id": f"p{i}", "user_id": f"u{i % 12}", "text": f"post {i}", "image": name})
    (tmp_path / "users.csv").write_text("\n".join(users) + "\n")
    (tmp_path / "posts.jsonl").write_text("".join(json.dumps(p) + "\n" for p in posts))
    (tmp_path / "edges.csv").write_text("src,dst\nu0,u1\nu2,u3\n")
    return load_corpus(tmp_path)


def test_large_images_decoded_small_match_the_full_size_transform(tiny_parts, tmp_path):
    import open_clip

    from stage1_encoders.data import PostPreprocessor

    # sides from below 2x the decode side (decoded as before) to 6x it, both formats, one tall and one wide
    sides = [(500, 400), (640, 600), (900, 700), (1800, 1300), (700, 2000), (2400, 600)]
    corpus = _large_image_corpus(tmp_path, sides)
    # the default image tower's preprocessing (EfficientNet-Lite0: 96 x 96, bicubic, mean and std 0.5)
    transform = open_clip.image_transform(96, is_train=False, mean=(0.5,) * 3, std=(0.5,) * 3)
    posts = np.flatnonzero(corpus.post_has_image)
    prep = PostPreprocessor(corpus, tiny_parts.tokenizer, transform, (96, 96), 16)
    assert prep.decode_side == 288
    got = prep.images(posts)
    reference = torch.stack([transform(corpus.load_image(int(p))) for p in posts])  # full-size decode
    diff = (got - reference).abs()
    side = prep.decode_side
    for row, post in enumerate(posts):
        width, height = sides[int(corpus.post_image[post].split("/")[1].split(".")[0])]
        if min(width, height) < 2 * side:  # nothing to gain: the same pixels bit for bit
            assert torch.equal(got[row], reference[row]), (width, height)
        else:  # the same picture: under half a level of 255 on average, 3 levels at most (measured 0.2-0.47, 1-3)
            levels = diff[row] * 255 / 2  # open_clip's normalisation here: mean 0.5, std 0.5
            assert levels.mean() < 0.5 and levels.max() <= 3.0 + 1e-4, (width, height)
    assert not torch.equal(got, reference)  # the large ones were decoded small


def test_a_batch_decoded_by_threads_equals_one_decoded_in_turn(tiny_parts, tmp_path):
    from corpus import CorpusError
    from stage1_encoders.data import PostPreprocessor

    corpus = _large_image_corpus(tmp_path, [(700, 650 + 10 * i) for i in range(8)])
    transform = tiny_parts.image_encoder.image_transform()
    posts = np.flatnonzero(corpus.post_has_image)
    posts = np.concatenate([posts, posts[::-1][:3]])  # files shown twice in the batch: decoded once each
    batches = {}
    for threads in (1, 3):
        prep = PostPreprocessor(
            corpus, tiny_parts.tokenizer, transform, tiny_parts.prep.image_size, 16, 64.0, threads
        )
        calls = []
        load = corpus.load_image
        prep.corpus = type("Counting", (), {"post_image": corpus.post_image})()
        prep.corpus.load_image = lambda post, min_side=None, load=load, calls=calls: (
            calls.append(post) or load(post, min_side)
        )
        batches[threads] = prep.images(posts)
        assert sorted(calls) == sorted(set(corpus.post_image.index(corpus.post_image[p]) for p in posts))
        assert torch.equal(prep.images(posts), batches[threads])  # from the cache
    assert torch.equal(batches[1], batches[3])
    with pytest.raises(ValueError, match="decode_threads must be >= 1"):
        PostPreprocessor(corpus, tiny_parts.tokenizer, transform, tiny_parts.prep.image_size, 16, 0.0, 0)
    # a file that cannot be decoded, in a thread: the error names posts.jsonl, its line and the image
    broken = tmp_path / corpus.post_image[int(posts[2])]
    broken.write_bytes(b"not an image")
    prep = PostPreprocessor(corpus, tiny_parts.tokenizer, transform, tiny_parts.prep.image_size, 16, 0.0, 3)
    with pytest.raises(CorpusError, match=r"posts.jsonl, line 3, field 'image': cannot decode image"):
        prep.images(posts)


def test_by_default_threads_decode_only_images_seen_to_be_costly(tiny_parts, tmp_path, monkeypatch):
    import time

    from stage1_encoders import data

    corpus = tiny_parts.corpus
    transform = tiny_parts.image_encoder.image_transform()
    posts = np.flatnonzero(corpus.post_has_image)[:12]
    pools = []

    class RecordingPool(data.ThreadPoolExecutor):
        def __init__(self, workers):
            pools.append(workers)
            super().__init__(workers)

    monkeypatch.setattr(data, "ThreadPoolExecutor", RecordingPool)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    prep = data.PostPreprocessor(corpus, tiny_parts.tokenizer, transform, tiny_parts.prep.image_size, 16)
    cheap = prep.images(posts[:6])
    assert prep._seconds_per_image < data.THREADED_DECODE_SECONDS  # the tiny corpus's images: well under 2 ms
    assert torch.equal(
        prep.images(posts[6:]), torch.stack([transform(corpus.load_image(int(p))) for p in posts[6:]])
    )
    assert pools == []  # cheap images stay in turn
    slow = type("Slow", (), {"post_image": corpus.post_image})()
    slow.load_image = lambda post, min_side=None: time.sleep(0.003) or corpus.load_image(post, min_side)
    prep = data.PostPreprocessor(slow, tiny_parts.tokenizer, transform, tiny_parts.prep.image_size, 16)
    assert torch.equal(prep.images(posts[:6]), cheap) and pools == []  # the first batch measures, in turn
    assert prep._seconds_per_image >= data.THREADED_DECODE_SECONDS
    assert torch.equal(
        prep.images(posts[6:]), torch.stack([transform(corpus.load_image(int(p))) for p in posts[6:]])
    )
    assert pools == [2]  # then torch's thread count decodes
    prep = data.PostPreprocessor(
        corpus, tiny_parts.tokenizer, transform, tiny_parts.prep.image_size, 16, 0.0, 3
    )
    prep.images(posts)
    assert pools == [2, 3]  # a thread count given is used from the first batch
