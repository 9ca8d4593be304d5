"""Short Lightning fits on the tiny generated corpus: losses fall, a valid cache is written, variants run,
and bad caches are refused with a message that names the command to run."""

from __future__ import annotations

import csv
import json
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from cache import (
    EncoderEmbeddings,
    graph_file,
    read_cache_info,
    read_graph_outputs,
    read_producer,
    write_encoder_embeddings,
)
from corpus import load_corpus
from stage2_graph import Stage2Config, Stage2InputError, run_stage2
from stage2_graph.run import main


@pytest.fixture(scope="module")
def loaded(tiny_corpus):
    return load_corpus(tiny_corpus)


def write_random_encoders(
    cache_dir: Path, corpus, round_idx: int = 0, fingerprint: str | None = None
) -> None:
    rng = np.random.default_rng(round_idx)
    n = corpus.num_users
    image_mask, text_mask = rng.random(n) > 0.2, rng.random(n) > 0.2
    emb = EncoderEmbeddings(
        (rng.standard_normal((n, 16)) * image_mask[:, None]).astype(np.float32),
        (rng.standard_normal((n, 12)) * text_mask[:, None]).astype(np.float32),
        image_mask,
        text_mask,
    )
    write_encoder_embeddings(
        cache_dir, round_idx, emb, fingerprint=fingerprint or corpus.fingerprint, producer={"test": "random"}
    )


def small_config(corpus_dir: Path, cache_dir: Path, out_dir: Path, **top) -> Stage2Config:
    data = {
        "corpus": str(corpus_dir),
        "cache_dir": str(cache_dir),
        "out_dir": str(out_dir),
        "model": {"hidden_dim": 32, "num_layers": 2, "heads": 2, "dropout": 0.0},
        "optim": {"lr": 0.01},
        "trainer": {
            "max_steps": 80,
            "enable_progress_bar": False,
            "log_every_n_steps": 1,
            "accelerator": "cpu",
        },
    }
    for key, value in top.items():
        if isinstance(value, dict):
            data[key] = {**data.get(key, {}), **value}
        else:
            data[key] = value
    return Stage2Config.from_dict(data)


def logged(log_dir: Path, column: str) -> list[float]:
    with open(log_dir / "metrics.csv") as handle:
        return [float(row[column]) for row in csv.DictReader(handle) if row.get(column)]


def test_fit_reduces_both_losses_and_writes_a_valid_cache(synthetic_corpus, tmp_path):
    # The encoders are random here, so only X can predict held-out edges: use a corpus where it can (the
    # earlier design's homophily and topic effect on X; the default design keeps X and edges apart on purpose).
    root = synthetic_corpus(homophily=0.8, stats_topic_effect=0.35)
    loaded = load_corpus(root)
    write_random_encoders(tmp_path / "cache", loaded)
    cfg = small_config(root, tmp_path / "cache", tmp_path / "out")
    result = run_stage2(cfg)

    for term in ("feature_loss", "structure_loss"):
        values = logged(result.log_dir, f"train/{term}")
        assert len(values) == 80
        assert np.mean(values[-10:]) < 0.9 * np.mean(values[:10]), term
        assert f"{term}_first" in result.metrics and f"{term}_last" in result.metrics

    assert result.cache_file == graph_file(tmp_path / "cache", 0)
    outputs = read_graph_outputs(
        tmp_path / "cache",
        0,
        fingerprint=loaded.fingerprint,
        num_users=loaded.num_users,
        num_edges=loaded.num_edges,
    )
    num_edges = loaded.num_edges
    # the GNN's 32 columns, then model.content_hops = 2 hops of [X || R^I (16) || R^T (12)]
    assert outputs.user_graph_emb.shape == (loaded.num_users, 32 + 2 * (loaded.features.shape[1] + 16 + 12))
    assert outputs.gate.shape == (2 * num_edges, 2)
    assert np.array_equal(outputs.edge_index[:, :num_edges], loaded.edges.T)
    assert np.array_equal(outputs.edge_index[:, num_edges:], loaded.edges.T[::-1])
    # Sigmoid gate: a_uv * deg(u) is the sigmoid, and edge_weight averages it over heads and directions.
    degree = np.bincount(loaded.edges.ravel(), minlength=loaded.num_users)
    relevance = (outputs.gate * degree[outputs.edge_index[1]][:, None]).mean(1)
    np.testing.assert_allclose(
        outputs.edge_weight, (relevance[:num_edges] + relevance[num_edges:]) / 2, rtol=1e-5
    )
    assert 0 < outputs.edge_weight.min() and outputs.edge_weight.max() < 1

    producer = read_producer(result.cache_file)
    assert producer["model"]["hidden_dim"] == 32 and producer["gate"] == "mgate"
    assert result.checkpoint.is_file()
    saved = json.loads((result.checkpoint.parent / "config.json").read_text())
    assert saved == cfg.to_dict()


def test_uniform_and_x_only_variants_run(tiny_corpus, loaded, tmp_path, capsys):
    # The uniform baseline reads stage 1's embeddings for its node inputs (the same inputs as the M-Gate's
    # run); the X-only variant reads none: its cache folder stays empty.
    write_random_encoders(tmp_path / "c1", loaded)
    trainer = {"max_steps": 5, "enable_progress_bar": True}
    uniform = run_stage2(
        small_config(tiny_corpus, tmp_path / "c1", tmp_path / "o1", gate="uniform", trainer=trainer)
    )
    progress = capsys.readouterr().err  # not a terminal: one summary line instead of a redrawn bar
    assert "stage 2: 5 steps in" in progress and "\r" not in progress and "Epoch" not in progress
    outputs = read_graph_outputs(
        tmp_path / "c1",
        0,
        fingerprint=loaded.fingerprint,
        num_users=loaded.num_users,
        num_edges=loaded.num_edges,
    )
    assert outputs.gate.shape[1] == 1 and np.all(outputs.edge_weight == 1.0)
    degree = np.bincount(loaded.edges.ravel(), minlength=loaded.num_users)
    np.testing.assert_allclose(outputs.gate[:, 0], 1.0 / degree[outputs.edge_index[1]], rtol=1e-6)
    assert uniform.metrics["steps_run"] == 5

    threads = torch.get_num_threads()
    trainer = {"max_steps": 5, "num_threads": 1}
    x_only = run_stage2(
        small_config(tiny_corpus, tmp_path / "c2", tmp_path / "o2", use_modalities=False, trainer=trainer)
    )
    assert read_producer(x_only.cache_file)["use_modalities"] is False
    description = read_cache_info(x_only.cache_file).model
    assert "node inputs stats+degree," in description
    assert description.endswith("M-Gate (cosine, sigmoid, 2 head(s)) on X only")
    assert torch.get_num_threads() == threads


def test_full_batch_fits_and_exports_within_the_retained_heap_unless_switched_off(
    tiny_corpus, tmp_path, monkeypatch
):
    from stage2_graph import pipeline

    calls = []
    real = pipeline.retained_heap

    @contextmanager
    def spy(enabled: bool = True):
        with real(enabled) as applied:
            yield applied
            # what the block covered: the fit (its checkpoint) and the export (the round's cache file)
            out = tmp_path / f"o{len(calls)}"
            done = (out / "checkpoints" / "last.ckpt").exists(), graph_file(out / "c", 0).exists()
            calls.append((enabled, *done))

    monkeypatch.setattr(pipeline, "retained_heap", spy)
    for trainer in (
        {"max_steps": 2},
        {"max_steps": 2, "retain_freed_memory": False},
        {"max_steps": 2, "batching": "subgraph", "batch_size": 16},  # mini-batches: limit_allocator_caching
    ):
        out = tmp_path / f"o{len(calls)}"
        run_stage2(small_config(tiny_corpus, out / "c", out, use_modalities=False, trainer=trainer))
    assert calls == [(True, True, True), (False, True, True), (False, True, True)]


def test_the_export_is_the_full_forward_unless_layerwise_is_asked_for(tiny_corpus, tmp_path, monkeypatch):
    """``trainer.inference: auto`` exports with one full forward on every path (mini-batches included: without
    gradients it is faster and smaller than layer-wise inference, docs/performance.md); ``layerwise`` chunks by
    the resolved batch size."""
    from stage2_graph import pipeline

    chunks = []
    real = pipeline.compute_graph_outputs

    def spy(system, layerwise_batch_size=None):
        chunks.append(layerwise_batch_size)
        return real(system, layerwise_batch_size)

    monkeypatch.setattr(pipeline, "compute_graph_outputs", spy)
    for trainer in (
        {"batching": "subgraph"},
        {"batching": "neighbor"},
        {"batching": "subgraph", "inference": "layerwise"},
        {"batching": "neighbor", "inference": "layerwise", "batch_size": 16},
    ):
        out = tmp_path / f"o{len(chunks)}"
        cfg = small_config(
            tiny_corpus, out / "c", out, use_modalities=False, trainer={"max_steps": 2, **trainer}
        )
        run_stage2(cfg)
    assert chunks == [None, None, 1024, 16]


def test_softmax_gate_resume_and_init_checkpoint(tiny_corpus, loaded, tmp_path):
    cache = tmp_path / "cache"
    write_random_encoders(cache, loaded, round_idx=0)
    write_random_encoders(cache, loaded, round_idx=1)
    model = {"gate_normalization": "softmax"}
    first = run_stage2(
        small_config(tiny_corpus, cache, tmp_path / "r0", model=model, trainer={"max_steps": 6})
    )
    resumed = run_stage2(
        small_config(
            tiny_corpus, cache, tmp_path / "r0", model=model, trainer={"max_steps": 10, "resume": "last"}
        )
    )
    assert resumed.metrics["steps_run"] == 4
    outputs = read_graph_outputs(
        cache, 0, fingerprint=loaded.fingerprint, num_users=loaded.num_users, num_edges=loaded.num_edges
    )
    assert outputs.edge_weight.max() <= 1.0 and outputs.edge_weight.min() > 0

    second = run_stage2(
        small_config(
            tiny_corpus,
            cache,
            tmp_path / "r1",
            round=1,
            model=model,
            init_checkpoint=str(first.checkpoint),
            trainer={"max_steps": 2},
        )
    )
    assert graph_file(cache, 1) == second.cache_file

    wrong = small_config(tiny_corpus, cache, tmp_path / "r2", round=1, init_checkpoint=str(first.checkpoint))
    wrong.model.hidden_dim = 16
    with pytest.raises(Stage2InputError, match="cannot initialise"):
        run_stage2(wrong, force=True)  # force: round 1's graph.h5 belongs to the run in r1


def test_refuses_missing_stage1_embeddings(tiny_corpus, tmp_path, capsys):
    code = main(
        [
            "--corpus",
            str(tiny_corpus),
            "--cache",
            str(tmp_path / "cache"),
            "--round",
            "3",
            "--out",
            str(tmp_path / "out"),
            "--no-enable-progress-bar",
        ]
    )
    message = capsys.readouterr().err
    assert code == 2
    assert "round 3 are missing" in message
    assert (
        f"python -m stage1_encoders.run --corpus {tiny_corpus} --cache {tmp_path / 'cache'} --round 3"
        in message
    )


def test_refuses_cache_of_another_corpus(tiny_corpus, loaded, tmp_path):
    write_random_encoders(tmp_path / "cache", loaded, fingerprint="0" * 64)
    cfg = small_config(tiny_corpus, tmp_path / "cache", tmp_path / "out")
    with pytest.raises(Stage2InputError, match="corpus fingerprint") as err:
        run_stage2(cfg)
    assert "python -m stage1_encoders.run" in str(err.value)
    cfg.use_modalities = False
    with pytest.raises(Stage2InputError, match="belongs to corpus fingerprint"):
        run_stage2(cfg)


def test_writes_hparams_and_user_ids_and_refuses_another_runs_file_without_force(
    tiny_corpus, loaded, tmp_path, capsys
):
    import yaml

    write_random_encoders(tmp_path / "cache", loaded)
    trainer = {"max_steps": 2, "enable_progress_bar": False}
    result = run_stage2(small_config(tiny_corpus, tmp_path / "cache", tmp_path / "a", trainer=trainer))
    hparams = yaml.safe_load((result.log_dir / "hparams.yaml").read_text())
    assert hparams["stage2_config"]["out_dir"] == str(tmp_path / "a")
    info = read_cache_info(result.cache_file)
    assert info.has_user_ids and info.run_dir == str(tmp_path / "a")
    read_graph_outputs(
        tmp_path / "cache",
        0,
        fingerprint=loaded.fingerprint,
        num_users=loaded.num_users,
        num_edges=loaded.num_edges,
        user_ids=loaded.user_ids,
    )
    # another run (another --out) on the same cache folder: refused in one line before any work, then forced
    argv = [
        "--corpus",
        str(tiny_corpus),
        "--cache",
        str(tmp_path / "cache"),
        "--out",
        str(tmp_path / "b"),
        "--max-steps",
        "1",
        "--no-enable-progress-bar",
        "--accelerator",
        "cpu",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"stage2_graph.run: error: {result.cache_file}: was written by another run (output folder {tmp_path / 'a'}, "
        f"{info.created}), not by this one ({tmp_path / 'b'}): pass --force to overwrite it, or use another --cache folder"
    ]
    assert not (tmp_path / "b").exists() or not any((tmp_path / "b").iterdir())  # nothing written (the
    # writability probe may have made the empty folder)
    assert main([*argv, "--force"]) == 0
    assert read_cache_info(result.cache_file).run_dir == str(tmp_path / "b")
    # the same run again (a rerun into its own folder) owns the file
    assert main([*argv]) == 0
