"""Export: per-user sums equal the means over every post at once; shards add up to the single-process export;
pooling and masks match a loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from stage1_test_utils import TINY_MODEL

from stage1_encoders import encoders as enc
from stage1_encoders.config import ModelConfig
from stage1_encoders.encoders import build_text_encoder
from stage1_encoders.export import (
    encode_posts,
    encode_shard,
    export_batches,
    export_user_embeddings,
    merge_shards,
    pool_users,
    shard_range,
)
from stage1_encoders.pooling import mean_by_user


@pytest.mark.parametrize(("num_items", "world_size"), [(10, 3), (2, 4), (0, 2), (7, 1)])
def test_shard_ranges_cover_items_once_and_are_balanced(num_items, world_size):
    shards = [shard_range(num_items, rank, world_size) for rank in range(world_size)]
    assert [i for shard in shards for i in shard] == list(range(num_items))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_export_batches_are_fixed():
    batches = export_batches(10, 4)
    assert [b.tolist() for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


@pytest.mark.parametrize("world_size", [2, 3])
def test_sharded_export_equals_single_process_export(tiny_parts, world_size):
    """The ranks' sums, added in rank order, give every user's count exactly and its mean to float rounding (the
    one or two users whose posts two ranks share); every other user's mean bit for bit."""
    kwargs = {"batch_size": 48}
    full = encode_shard(tiny_parts.image_encoder, tiny_parts.text_encoder, tiny_parts.prep, **kwargs)
    shards = [
        encode_shard(
            tiny_parts.image_encoder,
            tiny_parts.text_encoder,
            tiny_parts.prep,
            rank=rank,
            world_size=world_size,
            **kwargs,
        )
        for rank in range(world_size)
    ]
    assert all(int(s.image.counts.sum() + s.text.counts.sum()) > 0 for s in shards)
    merged = merge_shards(shards)
    for name in ("image", "text"):
        assert torch.equal(getattr(merged, name).counts, getattr(full, name).counts), name
        # users in one shard only: their sums are that shard's, bit for bit
        alone = (torch.stack([getattr(s, name).counts > 0 for s in shards]).sum(0) == 1).numpy()
        assert alone.sum() > len(alone) // 2
        assert torch.equal(getattr(merged, name).sums[alone], getattr(full, name).sums[alone]), name
    one, many = pool_users(full), pool_users(merged)
    np.testing.assert_allclose(many.user_image_emb, one.user_image_emb, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(many.user_text_emb, one.user_text_emb, rtol=1e-6, atol=1e-7)
    assert np.array_equal(many.image_mask, one.image_mask) and np.array_equal(many.text_mask, one.text_mask)
    with pytest.raises(ValueError, match="no shard to merge"):
        merge_shards([])


def test_export_pools_every_post_per_user(tiny_parts):
    corpus = tiny_parts.corpus
    emb = export_user_embeddings(
        tiny_parts.image_encoder, tiny_parts.text_encoder, tiny_parts.prep, batch_size=64
    )
    assert emb.user_image_emb.shape == (corpus.num_users, tiny_parts.image_encoder.dim)
    assert emb.user_text_emb.shape == (corpus.num_users, tiny_parts.text_encoder.dim)
    assert np.array_equal(emb.image_mask, corpus.user_image_mask)
    assert np.array_equal(emb.text_mask, corpus.user_text_mask)
    assert not emb.image_mask.all() and not emb.text_mask.all()  # the tiny corpus has users without posts
    assert np.all(emb.user_image_emb[~emb.image_mask] == 0) and np.all(emb.user_text_emb[~emb.text_mask] == 0)
    assert np.isfinite(emb.user_image_emb).all() and np.isfinite(emb.user_text_emb).all()

    tiny_parts.image_encoder.eval()
    tiny_parts.text_encoder.eval()
    with torch.no_grad():
        for user in np.flatnonzero(emb.text_mask)[:5]:  # loop reference, one post at a time
            posts = [p for p in range(*corpus.post_offsets[user : user + 2]) if corpus.post_has_text[p]]
            rows = [tiny_parts.text_encoder(*tiny_parts.prep.texts(np.array([p]))) for p in posts]
            np.testing.assert_allclose(
                emb.user_text_emb[user], torch.cat(rows).mean(0).numpy(), rtol=1e-4, atol=1e-5
            )
        for user in np.flatnonzero(emb.image_mask)[:5]:
            posts = np.array(
                [p for p in range(*corpus.post_offsets[user : user + 2]) if corpus.post_has_image[p]]
            )
            want = tiny_parts.image_encoder(tiny_parts.prep.images(posts)).mean(0).numpy()
            np.testing.assert_allclose(emb.user_image_emb[user], want, rtol=1e-4, atol=1e-5)
    tiny_parts.image_encoder.train()
    tiny_parts.text_encoder.train()


def test_export_sums_equal_the_means_over_every_post_row_at_once(tiny_parts):
    """The export keeps no post's row: each batch is added to its users' sums. The means equal ``mean_by_user``
    over every post's row at once (how the export pooled before), bit for bit, with the same batches."""
    corpus, prep = tiny_parts.corpus, tiny_parts.prep
    image_encoder, text_encoder = tiny_parts.image_encoder.eval(), tiny_parts.text_encoder.eval()
    batches = export_batches(corpus.num_posts, 16)
    sums = encode_posts(image_encoder, text_encoder, prep, batches)
    assert sums.image.sums.shape == (corpus.num_users, image_encoder.dim)  # [U, D], not a row per post
    post_user = torch.as_tensor(np.asarray(corpus.post_user), dtype=torch.long)
    has_image, has_text = np.asarray(corpus.post_has_image), np.asarray(corpus.post_has_text)
    with torch.no_grad():
        image_rows = [image_encoder(prep.images(b[has_image[b]])) for b in batches if has_image[b].any()]
        text_rows = [
            text_encoder(*prep.texts(b[has_text[b]]), torch.from_numpy(b[has_text[b]]))
            for b in batches
            if has_text[b].any()
        ]
    image_want = mean_by_user(torch.cat(image_rows), post_user[np.flatnonzero(has_image)], corpus.num_users)
    text_want = mean_by_user(torch.cat(text_rows), post_user[np.flatnonzero(has_text)], corpus.num_users)
    for got, want in ((sums.image.means(), image_want), (sums.text.means(), text_want)):
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    tiny_parts.image_encoder.train()
    tiny_parts.text_encoder.train()


def test_export_reads_pooled_caption_states_without_tokenizing(tiny_parts, monkeypatch):
    """With every text layer frozen the export takes each caption's row from the pooled cache: the same rows as the
    forward that checks the batch's tokenization, bit for bit, and not one caption tokenized."""
    torch.manual_seed(0)
    cfg = ModelConfig(**{**TINY_MODEL, "text_layers": 2, "text_tuned_layers": 0, "text_pooling": "mean"})
    text_encoder = build_text_encoder(cfg, tiny_parts.tokenizer).eval()
    enc._LOWER_STATES_MEMO.clear()
    prep = tiny_parts.prep
    assert not text_encoder.reads_cached_captions
    text_encoder.use_cached_lower_states(prep, batch_size=8)
    text_encoder.compute_lower_states()
    assert text_encoder.reads_cached_captions

    batches = export_batches(tiny_parts.corpus.num_posts, 16)
    calls = []
    real_texts = prep.texts
    monkeypatch.setattr(prep, "texts", lambda posts: calls.append(len(posts)) or real_texts(posts))
    out = encode_posts(tiny_parts.image_encoder, text_encoder, prep, batches)
    assert calls == []  # no caption tokenized
    has_text = np.asarray(tiny_parts.corpus.post_has_text)
    with torch.no_grad():  # the checked path: tokenize, compare the token counts, read the rows
        want = [
            text_encoder(*real_texts(b[has_text[b]]), torch.from_numpy(b[has_text[b]]))
            for b in batches
            if has_text[b].any()
        ]
    post_user = torch.as_tensor(np.asarray(tiny_parts.corpus.post_user), dtype=torch.long)
    means, has = mean_by_user(
        torch.cat(want), post_user[np.flatnonzero(has_text)], tiny_parts.corpus.num_users
    )
    assert torch.equal(out.text.means()[0], means) and torch.equal(out.text.counts > 0, has)
    # the same means as the training's (the graph head's input), also read from the cache by chunks of posts
    assert torch.equal(text_encoder.user_means()[0], means)

    without = np.flatnonzero(~has_text)[:2]
    with pytest.raises(
        RuntimeError, match=r"no caption for post\(s\) " + str(without.tolist()).replace("[", r"\[")
    ):
        text_encoder.cached_caption_rows(torch.from_numpy(without))
    enc._LOWER_STATES_MEMO.clear()
    with pytest.raises(ValueError, match="every text layer frozen"):
        tiny_parts.text_encoder.cached_caption_rows(torch.tensor([0]))


def test_caption_states_report_their_progress_only_when_computed(tiny_parts, tmp_path):
    """``progress(done, total)`` before the first batch and after each batch of the caption states, ending at the
    number of captions; not at all when the states are loaded from the store or the process's memo."""
    torch.manual_seed(0)
    cfg = ModelConfig(**{**TINY_MODEL, "text_layers": 2, "text_tuned_layers": 0, "text_pooling": "mean"})
    text_encoder = build_text_encoder(cfg, tiny_parts.tokenizer).eval()
    enc._LOWER_STATES_MEMO.clear()
    text_encoder.use_cached_lower_states(tiny_parts.prep, batch_size=8, store_dir=tmp_path)
    calls = []
    text_encoder.compute_lower_states(lambda done, total: calls.append((done, total)))
    captions = int(np.asarray(tiny_parts.corpus.post_has_text).sum())
    done = [d for d, _ in calls]
    assert calls[0] == (0, captions) and calls[-1] == (captions, captions)
    assert {t for _, t in calls} == {captions} and done == sorted(set(done))
    assert len(calls) == 1 + -(-captions // 8)  # one before, one per batch
    calls.clear()
    text_encoder.compute_lower_states(lambda done, total: calls.append((done, total)))  # the memo
    enc._LOWER_STATES_MEMO.clear()
    text_encoder.compute_lower_states(lambda done, total: calls.append((done, total)))  # the stored file
    assert calls == [] and list(tmp_path.glob("text_states-*.pt"))
    enc._LOWER_STATES_MEMO.clear()
