"""stage2_graph.infer: a trained checkpoint, rebuilt from its stored config, gives back the run's cache on the
training graph and runs on another graph (a subgraph, no edges); foreign checkpoints are refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cache import read_encoder_embeddings, read_graph_outputs
from corpus import load_corpus
from stage2_graph import ConfigError, Stage2InputError, run_stage2
from stage2_graph.infer import infer_graph_outputs, read_checkpoint_config
from tests.stage2_graph.test_stage2_run import small_config, write_random_encoders


@pytest.fixture(scope="module")
def trained(tiny_corpus, tmp_path_factory):
    corpus = load_corpus(tiny_corpus)
    base = tmp_path_factory.mktemp("stage2_infer")
    write_random_encoders(base / "cache", corpus)
    cfg = small_config(
        tiny_corpus, base / "cache", base / "out", trainer={"max_steps": 5}, model={"dropout": 0.2}
    )
    result = run_stage2(cfg)
    enc = read_encoder_embeddings(
        base / "cache", 0, fingerprint=corpus.fingerprint, num_users=corpus.num_users
    )
    return corpus, result, enc, base


def test_training_graph_gives_the_cache_back(trained):
    corpus, result, enc, base = trained
    cfg, out = infer_graph_outputs(result.checkpoint, corpus.features, corpus.edges, corpus.fingerprint, enc)
    assert cfg.model.heads == 2 and cfg.model.dropout == 0.2  # built from the stored config
    cached = read_graph_outputs(
        base / "cache",
        0,
        fingerprint=corpus.fingerprint,
        num_users=corpus.num_users,
        num_edges=corpus.num_edges,
    )
    np.testing.assert_allclose(out.user_graph_emb, cached.user_graph_emb, atol=1e-6, rtol=0)
    np.testing.assert_allclose(out.gate, cached.gate, atol=1e-6, rtol=0)
    np.testing.assert_array_equal(out.edge_index, cached.edge_index)


def test_other_graphs(trained):
    corpus, result, enc, _ = trained
    users = np.arange(20)
    sub_enc = type(enc)(
        *(
            np.asarray(getattr(enc, f))[users]
            for f in ("user_image_emb", "user_text_emb", "image_mask", "text_mask")
        )
    )
    inside = (corpus.edges < 20).all(axis=1)
    _, out = infer_graph_outputs(
        result.checkpoint, corpus.features[users], corpus.edges[inside], "sub", sub_enc
    )
    # R^G = the GNN's 32 columns, then 2 content hops of [X || R^I || R^T]
    width = 32 + 2 * (corpus.features.shape[1] + enc.user_image_emb.shape[1] + enc.user_text_emb.shape[1])
    assert out.user_graph_emb.shape == (20, width) and out.gate.shape == (2 * int(inside.sum()), 2)
    _, alone = infer_graph_outputs(
        result.checkpoint, corpus.features[users], np.zeros((0, 2)), "none", sub_enc
    )
    assert alone.user_graph_emb.shape == (20, width) and np.isfinite(alone.user_graph_emb).all()
    assert not np.allclose(alone.user_graph_emb, out.user_graph_emb)  # the neighbours matter


def test_foreign_checkpoints_are_refused(trained, tmp_path):
    corpus, result, enc, _ = trained
    payload = torch.load(result.checkpoint, map_location="cpu", weights_only=True)
    payload["hyper_parameters"]["stage2_config"]["model"]["future_switch"] = True
    torch.save(payload, tmp_path / "new_field.ckpt")
    with pytest.raises(
        ConfigError, match="field 'model.future_switch': unknown field.*another version of stage 2"
    ):
        read_checkpoint_config(tmp_path / "new_field.ckpt")

    payload = torch.load(result.checkpoint, map_location="cpu", weights_only=True)
    payload["hyper_parameters"]["stage2_config"]["model"]["hidden_dim"] = 16
    torch.save(payload, tmp_path / "other_width.ckpt")
    with pytest.raises(Stage2InputError, match="weights do not fit the model its config describes"):
        infer_graph_outputs(tmp_path / "other_width.ckpt", corpus.features, corpus.edges, "x", enc)

    torch.save({"state_dict": {}}, tmp_path / "foreign.ckpt")
    with pytest.raises(Stage2InputError, match="not a stage-2 checkpoint"):
        read_checkpoint_config(tmp_path / "foreign.ckpt")
    with pytest.raises(Stage2InputError, match="this model reads stage 1's embeddings"):
        infer_graph_outputs(result.checkpoint, corpus.features, corpus.edges, "x", None)
