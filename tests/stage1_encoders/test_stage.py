"""Integration: short stage-1 fits + export on the tiny corpus, continuation across rounds, CLI errors."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from stage1_test_utils import TINY_MODEL, GuardedCorpus

from cache import (
    GraphOutputs,
    read_encoder_embeddings,
    read_producer,
    write_graph_outputs,
)
from corpus import load_corpus
from stage1_encoders import Stage1Config, run_stage1
from stage1_encoders.checkpoint import load_weights
from stage1_encoders.config import ConfigError
from stage1_encoders.parts import build_parts
from stage1_encoders.run import main
from stage1_encoders.stage import read_edge_weight


def tiny_config(corpus, cache_dir, out_dir, **sections) -> Stage1Config:
    data = {
        "corpus": str(corpus),
        "cache_dir": str(cache_dir),
        "out_dir": str(out_dir),
        "model": dict(TINY_MODEL),
        "losses": {"ita_dim": 16, "gcl_hidden_dim": 16},
        "data": {"pairs_per_batch": 16, "posts_per_user": 2, "export_batch_size": 64},
        "trainer": {"max_steps": 3, "enable_progress_bar": False, "loggers": ["csv"]},
        "optim": {"warmup_steps": 1},
    }
    for key, value in sections.items():
        if isinstance(value, dict):
            data[key] = {**data.get(key, {}), **value}
        else:
            data[key] = value
    return Stage1Config.from_dict(data)


@pytest.fixture(scope="module")
def round0(tiny_corpus, tmp_path_factory):
    """Round 0 on the tiny corpus, with a corpus that fails on any label/fans/split access."""
    root = tmp_path_factory.mktemp("stage1_round0")
    cfg = tiny_config(tiny_corpus, root / "cache", root / "out0")
    threads = torch.get_num_threads()
    result = run_stage1(
        cfg, GuardedCorpus(load_corpus(tiny_corpus))
    )  # trainer.num_threads is 1 during the run ...
    assert torch.get_num_threads() == threads  # ... and the caller's setting comes back
    return cfg, result, root


def test_round0_writes_a_complete_cache_file(round0, tiny_corpus_loaded):
    cfg, result, _ = round0
    corpus = tiny_corpus_loaded
    emb = read_encoder_embeddings(
        cfg.cache_dir, 0, fingerprint=corpus.fingerprint, num_users=corpus.num_users
    )
    assert result.cache_file == cfg.cache_dir / "round_0" / "encoders.h5" and result.cache_file.is_file()
    assert emb.user_image_emb.shape == (corpus.num_users, 32)  # mmga-vit-tiny embed_dim
    assert emb.user_text_emb.shape == (corpus.num_users, 32)  # text_hidden_size
    assert np.array_equal(emb.image_mask, corpus.user_image_mask)
    assert np.array_equal(emb.text_mask, corpus.user_text_mask)
    assert np.isfinite(emb.user_image_emb).all() and np.isfinite(emb.user_text_emb).all()
    assert np.all(emb.user_text_emb[~emb.text_mask] == 0)
    assert np.abs(emb.user_text_emb[emb.text_mask]).sum(1).min() > 0
    producer = read_producer(result.cache_file)
    assert producer == json.loads(result.config_file.read_text())
    assert producer["model"]["image_model"] == "mmga-vit-tiny" and producer["out_dir"] == str(cfg.out_dir)


def test_round0_checkpoint_logs_and_metrics(round0):
    cfg, result, _ = round0
    assert result.checkpoint.is_file() and result.checkpoint.parent == cfg.out_dir / "checkpoints"
    payload = torch.load(result.checkpoint, map_location="cpu", weights_only=True)
    assert payload["stage1_config"] == cfg.to_dict() and payload["global_step"] == 3
    assert (cfg.out_dir / "checkpoints" / "tokenizer" / "tokenizer.json").is_file()
    with open(result.log_dir / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    for name in ("mlm_loss", "ita_loss", "gcl_image_loss", "gcl_text_loss", "loss"):
        values = [float(r[f"train/{name}"]) for r in rows if r.get(f"train/{name}")]
        assert len(values) == 3, name
        assert result.metrics[name]["first"] == pytest.approx(values[0], rel=1e-5)
        assert result.metrics[name]["last"] == pytest.approx(values[-1], rel=1e-5)
    assert result.metrics["global_step"] == 3 and result.metrics["train_posts_per_second"] > 0


def test_round1_continues_from_checkpoint_with_edge_weights(round0, tiny_corpus_loaded):
    cfg0, result0, root = round0
    corpus = tiny_corpus_loaded
    rng = np.random.default_rng(0)
    num_edges, num_users = corpus.num_edges, corpus.num_users
    edge_index = np.concatenate([corpus.edges.T, corpus.edges.T[::-1]], axis=1)
    weight = rng.uniform(0.05, 1.0, num_edges).astype(np.float32)
    graph = GraphOutputs(
        user_graph_emb=rng.normal(size=(num_users, 8)).astype(np.float32),
        edge_index=edge_index,
        gate=np.concatenate([weight, weight])[:, None],
        edge_weight=weight,
    )
    write_graph_outputs(cfg0.cache_dir, 0, graph, fingerprint=corpus.fingerprint, producer={"test": True})

    read = read_edge_weight(Stage1Config.from_dict({**cfg0.to_dict(), "edge_weight_round": 0}), corpus)
    np.testing.assert_allclose(read, weight / weight.mean(), rtol=1e-6)

    # an lr of ~0 makes round 1 a pure continuation: its export must equal round 0's
    cfg1 = tiny_config(
        cfg0.corpus,
        cfg0.cache_dir,
        root / "out1",
        round=1,
        init_checkpoint=str(result0.checkpoint),
        edge_weight_round=0,
        optim={"lr": 1e-12, "warmup_steps": 1},
        trainer={"max_steps": 2},
    )
    result1 = run_stage1(cfg1)
    emb0 = read_encoder_embeddings(cfg0.cache_dir, 0, fingerprint=corpus.fingerprint, num_users=num_users)
    emb1 = read_encoder_embeddings(cfg0.cache_dir, 1, fingerprint=corpus.fingerprint, num_users=num_users)
    np.testing.assert_allclose(emb1.user_image_emb, emb0.user_image_emb, atol=1e-5)
    np.testing.assert_allclose(emb1.user_text_emb, emb0.user_text_emb, atol=1e-5)
    assert read_producer(result1.cache_file)["edge_weight_round"] == 0
    assert result1.metrics["global_step"] == 2

    # a fresh round-1 model (no init checkpoint) gives different embeddings
    fresh = run_stage1(
        tiny_config(cfg0.corpus, root / "cache_fresh", root / "out_fresh", seed=5, trainer={"max_steps": 1})
    )
    emb_fresh = read_encoder_embeddings(
        root / "cache_fresh", 0, fingerprint=corpus.fingerprint, num_users=num_users
    )
    assert fresh.cache_file.is_file()
    assert not np.allclose(emb_fresh.user_text_emb, emb0.user_text_emb, atol=1e-3)


def test_no_alignment_baseline_skips_gcl_cleanly(round0):
    cfg0, result0, root = round0
    cfg = tiny_config(
        cfg0.corpus,
        root / "cache_baseline",
        root / "out_baseline",
        init_checkpoint=str(result0.checkpoint),
        losses={"gcl_image_weight": 0.0, "gcl_text_weight": 0.0, "text_feature_input": "clean"},
    )
    result = run_stage1(cfg)
    assert result.metrics["loss_terms"] == ["mlm_loss", "ita_loss"]
    assert "gcl_image_loss" not in result.metrics and "gcl_text_loss" not in result.metrics
    payload = torch.load(result.checkpoint, map_location="cpu", weights_only=True)
    assert not any(k.startswith("gcl_") for k in payload["state_dict"])


def test_architecture_mismatch_with_checkpoint_is_a_clear_error(round0, capsys):
    cfg0, result0, root = round0
    code = main(
        [
            "--corpus",
            str(cfg0.corpus),
            "--cache",
            str(root / "cache_x"),
            "--out",
            str(root / "out_x"),
            "--image-model",
            "mmga-vit-tiny",
            "--text-hidden-size",
            "64",
            "--text-heads",
            "2",
            "--init-checkpoint",
            str(result0.checkpoint),
            "--max-steps",
            "1",
            "--no-enable-progress-bar",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "field 'model.text_hidden_size': is 64 but checkpoint" in err and str(result0.checkpoint) in err


def test_cli_refuses_a_cache_of_another_corpus(round0, synthetic_corpus, capsys):
    cfg0, _, root = round0
    other = synthetic_corpus(num_users=30, seed=3)
    argv = [
        "--corpus",
        str(other),
        "--cache",
        str(cfg0.cache_dir),
        "--round",
        "0",
        "--out",
        str(root / "out_other"),
        "--image-model",
        "mmga-vit-tiny",
        "--max-steps",
        "1",
        "--no-enable-progress-bar",
    ]
    assert main(argv) == 2
    assert "belongs to corpus fingerprint" in capsys.readouterr().err
    assert main([*argv[:5], "7", *argv[6:], "--edge-weight-round", "0"]) == 2
    assert "cache belongs to corpus fingerprint" in capsys.readouterr().err


def test_cli_trains_and_prints_where_it_wrote(round0, capsys, tmp_path):
    cfg0, _, _ = round0
    config = tmp_path / "stage1.yaml"
    config.write_text(
        "model:\n"
        + "".join(f"  {k}: {v}\n" for k, v in TINY_MODEL.items())
        + "trainer:\n  max_steps: 2\n  enable_progress_bar: false\n  loggers: [csv, tensorboard]\n"
    )
    code = main(
        [
            "--corpus",
            str(cfg0.corpus),
            "--cache",
            str(tmp_path / "cache"),
            "--round",
            "4",
            "--out",
            str(tmp_path / "out"),
            "--config",
            str(config),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert f"checkpoint {tmp_path / 'out' / 'checkpoints' / 'last.ckpt'}" in out
    assert f"cache file {tmp_path / 'cache' / 'round_4' / 'encoders.h5'}" in out
    assert any((tmp_path / "out" / "tensorboard").iterdir())


def test_checkpoint_loads_strictly_and_old_head_names_still_load(round0, tiny_corpus_loaded):
    cfg0, result0, _ = round0
    payload = torch.load(result0.checkpoint, map_location="cpu", weights_only=True)
    state = payload["state_dict"]
    assert {k.split(".")[0] for k in state} == {
        "image_encoder",
        "text_encoder",
        "ita_head",
        "gcl_image_head",
        "gcl_text_head",
    }

    def loaded(state_dict, **losses):
        cfg = tiny_config(
            cfg0.corpus, cfg0.cache_dir, cfg0.out_dir, losses={"ita_dim": 16, "gcl_hidden_dim": 16, **losses}
        )
        system = build_parts(cfg, tiny_corpus_loaded, payload).system
        load_weights(system, {**payload, "state_dict": state_dict}, result0.checkpoint)
        return system.state_dict()

    # a checkpoint from when the losses owned the heads (``ita_loss.*``, ``gcl_image_loss.*``, ...)
    heads = ("ita_head.", "gcl_image_head.", "gcl_text_head.")
    legacy = {(k.replace("_head.", "_loss.", 1) if k.startswith(heads) else k): v for k, v in state.items()}
    assert any(k.startswith("ita_loss.") for k in legacy)
    got = loaded(legacy)
    assert got.keys() == state.keys() and all(torch.equal(got[k], state[k]) for k in state)
    # a head whose loss is off now is dropped; a head the checkpoint lacks starts fresh
    assert not any(k.startswith("gcl_text_head.") for k in loaded(state, gcl_text_weight=0.0))
    without_ita = {k: v for k, v in state.items() if not k.startswith("ita_head.")}
    assert torch.equal(
        loaded(without_ita)["gcl_image_head.mlp.0.weight"], state["gcl_image_head.mlp.0.weight"]
    )
    # anything else that does not fit is an error, not silently skipped
    with pytest.raises(
        ConfigError, match=r"(?s)weights do not fit the configured model.*Unexpected.*ita_head.extra"
    ):
        loaded({**state, "ita_head.extra": torch.zeros(1)})
    encoder_key = next(k for k in state if k.startswith("text_encoder."))
    with pytest.raises(ConfigError, match="checkpoint lacks encoder weights"):
        loaded({k: v for k, v in state.items() if k != encoder_key})


def test_round0_saves_its_encoders_for_transformers_and_open_clip(round0, tiny_corpus_loaded):
    """``AutoModel`` / ``AutoTokenizer`` / ``open_clip.create_model`` load what the run saved beside its checkpoint,
    and give the trained encoders' outputs (as ``load_trained_encoders`` rebuilds them from ``last.ckpt``)."""
    import open_clip
    from transformers import AutoModel, AutoTokenizer

    from stage1_encoders.infer import load_trained_encoders

    cfg, result, _ = round0
    trained = load_trained_encoders(result.checkpoint)
    ckpt = cfg.out_dir / "checkpoints"
    text = AutoModel.from_pretrained(ckpt / "text_encoder").eval()
    tokenizer = AutoTokenizer.from_pretrained(ckpt / "text_encoder")
    captions = [t for t in tiny_corpus_loaded.post_text if t.strip()][:6]
    batch = tokenizer(captions, padding=True, truncation=True, return_tensors="pt")
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    image = open_clip.create_model(f"local-dir:{ckpt / 'image_encoder'}").eval()
    with torch.no_grad():
        torch.testing.assert_close(
            text(**batch).last_hidden_state[:, 0],
            trained.text_encoder(batch["input_ids"], batch["attention_mask"]),
            rtol=0,
            atol=1e-6,
        )
        torch.testing.assert_close(
            image.encode_image(pixels), trained.image_encoder(pixels), rtol=0, atol=1e-6
        )


def test_round0_writes_hparams_and_user_ids(round0, tiny_corpus_loaded):
    import yaml

    from cache import read_cache_info

    cfg, result, _ = round0
    hparams = yaml.safe_load((result.log_dir / "hparams.yaml").read_text())
    assert hparams["stage1_config"] == json.loads(result.config_file.read_text())
    info = read_cache_info(result.cache_file)
    assert info.has_user_ids and info.run_dir == str(cfg.out_dir.resolve())
    corpus = tiny_corpus_loaded
    read_encoder_embeddings(
        cfg.cache_dir, 0, fingerprint=corpus.fingerprint, num_users=corpus.num_users, user_ids=corpus.user_ids
    )


def test_cli_refuses_another_runs_cache_file_without_force(round0, capsys):
    cfg0, _, root = round0
    argv = [
        "--corpus",
        str(cfg0.corpus),
        "--cache",
        str(cfg0.cache_dir),
        "--round",
        "0",
        "--out",
        str(root / "out_b"),
        *sum((["--" + k.replace("_", "-"), str(v)] for k, v in TINY_MODEL.items()), []),
        "--max-steps",
        "1",
        "--no-enable-progress-bar",
    ]
    before = cfg0.cache_dir.joinpath("round_0", "encoders.h5").stat().st_mtime_ns
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "was written by another run (output folder" in err[0]
    assert f"not by this one ({(root / 'out_b').resolve()}): pass --force to overwrite it" in err[0]
    assert not (root / "out_b" / "checkpoints" / "last.ckpt").exists()  # refused before any work
    assert cfg0.cache_dir.joinpath("round_0", "encoders.h5").stat().st_mtime_ns == before
