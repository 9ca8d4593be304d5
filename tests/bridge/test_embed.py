"""bridge.embed: a trained run embeds its own corpus exactly as its cache, embeds held-out users with the
training statistics, and refuses unfinished runs, other statistic columns, images outside the corpus and
checkpoints of another version with a clear message (exit code 2 on the command line)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import bridge
from bridge.embed import main
from bridge.inference import EmbedError, load_run
from bridge.inference.holdout import holdout_mask, write_user_subset
from bridge.rounds.runner import run_bridge
from bridge.runfolder.manifest import Manifest
from bridge.runfolder.records import file_sha256
from cache import read_encoder_embeddings, read_graph_outputs
from corpus import CorpusError, load_corpus
from stage1_encoders import ConfigError as Stage1ConfigError
from stage2_graph import ConfigError as Stage2ConfigError
from tests.bridge.test_bridge_run import tiny_config


@pytest.fixture(scope="module")
def trained(tiny_corpus_loaded, tiny_corpus, tmp_path_factory):
    """A 2-round MMGA run (no baselines) on the tiny corpus minus 20% of its users."""
    held = holdout_mask(tiny_corpus_loaded, 0.2, seed=0)
    keep = {u for u, h in zip(tiny_corpus_loaded.user_ids, held) if not h}
    base = tmp_path_factory.mktemp("embed")
    train_dir = write_user_subset(tiny_corpus, base / "train_corpus", keep)
    run_dir = base / "run"
    run_bridge(tiny_config(train_dir, baselines=False), run_dir)
    return run_dir, train_dir, held


def _raw_users(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """user ids, statistic column names and the raw values [N, F] of users.csv, read naively."""
    with open(path / "users.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    names = [c for c in rows[0] if c not in ("user_id", "label", "fans", "split")]
    return [r["user_id"] for r in rows], names, np.array([[float(r[c]) for c in names] for r in rows])


def test_round_trip_equals_the_runs_cache(trained, tmp_path):
    run_dir, train_dir, _ = trained
    run = bridge.load_run(run_dir)
    assert run.round == 1 and run.seed == 0
    train = load_corpus(train_dir)
    cache_dir = run.paths.cache_dir("mmga")
    enc = read_encoder_embeddings(cache_dir, 1, fingerprint=train.fingerprint, num_users=train.num_users)
    graph = read_graph_outputs(
        cache_dir, 1, fingerprint=train.fingerprint, num_users=train.num_users, num_edges=train.num_edges
    )
    out = run.embed_corpus(train_dir)
    np.testing.assert_allclose(out.encoders.user_image_emb, enc.user_image_emb, atol=1e-5, rtol=0)
    np.testing.assert_allclose(out.encoders.user_text_emb, enc.user_text_emb, atol=1e-5, rtol=0)
    np.testing.assert_allclose(out.graph.user_graph_emb, graph.user_graph_emb, atol=1e-5, rtol=0)
    np.testing.assert_allclose(out.graph.gate, graph.gate, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(out.encoders.image_mask, enc.image_mask)

    ids, own = run.embeddings()
    assert ids == train.user_ids and out.user_ids == train.user_ids
    np.testing.assert_allclose(out.matrix, own, atol=1e-5, rtol=0)
    expected = np.concatenate([graph.user_graph_emb, enc.user_text_emb, enc.user_image_emb], axis=1)
    np.testing.assert_allclose(own, expected, atol=0, rtol=0)

    # the command line writes the same numbers to an .npz and to a cache folder
    npz = tmp_path / "self.npz"
    assert main(["--run-dir", str(run_dir), "--corpus", str(train_dir), "--out", str(npz)]) == 0
    data = np.load(npz)
    assert list(data["user_ids"]) == train.user_ids
    np.testing.assert_allclose(data["embeddings"], expected, atol=1e-5, rtol=0)
    assert list(data["blocks"]) == ["graph", "text", "image"]
    assert data["block_dims"].sum() == expected.shape[1]
    written = read_graph_outputs(
        tmp_path / "self_cache",
        1,
        fingerprint=train.fingerprint,
        num_users=train.num_users,
        num_edges=train.num_edges,
    )
    np.testing.assert_allclose(written.user_graph_emb, graph.user_graph_emb, atol=1e-5, rtol=0)


def test_held_out_users_embed_with_the_training_statistics(trained, tiny_corpus, tiny_corpus_loaded):
    run_dir, train_dir, held = trained
    run = load_run(run_dir)
    out = run.embed_corpus(tiny_corpus)
    full = tiny_corpus_loaded
    assert out.user_ids == full.user_ids
    dims = out.graph.user_graph_emb.shape[1] + out.encoders.user_text_emb.shape[1]
    dims += out.encoders.user_image_emb.shape[1]
    assert out.matrix.shape == (full.num_users, dims) and np.isfinite(out.matrix).all()
    assert out.graph.edge_index.shape == (2, 2 * full.num_edges)

    # X against a naive reference: raw users.csv values, standardized with the training rows' mean and std
    _, _, raw_train = _raw_users(train_dir)
    _, _, raw_full = _raw_users(tiny_corpus)
    mean, std = raw_train.mean(axis=0), raw_train.std(axis=0)
    expected = np.where(std > 0, (raw_full - mean) / np.where(std > 0, std, 1), 0)
    np.testing.assert_allclose(out.features, expected, atol=1e-5)
    own_stats = full.features
    assert np.abs(own_stats - expected).max() > 1e-3  # the full corpus's own statistics would differ

    # only the held-out users, with their edges among themselves, and with no edges at all
    new_ids = {u for u, h in zip(full.user_ids, held) if h}
    new_dir = write_user_subset(tiny_corpus, train_dir.parent / "new_users", new_ids)
    ids, emb = run.embed(new_dir)
    assert set(ids) == new_ids and emb.shape == (len(new_ids), dims) and np.isfinite(emb).all()
    np.testing.assert_allclose(
        run.embed_corpus(new_dir).features, expected[held], atol=1e-5
    )  # the same users get the same X
    (new_dir / "edges.csv").write_text("src,dst\n")
    ids, emb = run.embed(new_dir)
    assert emb.shape == (len(new_ids), dims) and np.isfinite(emb).all()


def _cli_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    return err


def test_unfinished_run_is_refused(trained, tmp_path, capsys):
    run_dir, train_dir, _ = trained
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    manifest = Manifest.load(copy / "manifest.json")
    manifest.forget("seed_0/mmga/round_1/stage2")
    with pytest.raises(
        EmbedError, match=r"not finished: seed_0/mmga/round_1/stage2 .*alternate.py --run-dir"
    ):
        load_run(copy)
    err = _cli_error(
        capsys, ["--run-dir", str(copy), "--corpus", str(train_dir), "--out", str(tmp_path / "o.npz")]
    )
    assert "not finished" in err and not (tmp_path / "o.npz").exists()
    # stopped after a complete round, before the next one (or before evaluating): not the run's last round
    shutil.copytree(run_dir, tmp_path / "stopped")
    manifest = Manifest.load(tmp_path / "stopped" / "manifest.json")
    for key in [k for k in manifest.data["entries"] if k.startswith("eval/") or "round_1" in k]:
        manifest.forget(key)
    with pytest.raises(
        EmbedError, match="not finished: round 0 of training seed 0 is trained but was not evaluated"
    ):
        load_run(tmp_path / "stopped")
    with pytest.raises(EmbedError, match="no manifest.json"):
        load_run(tmp_path / "nothing")
    with pytest.raises(EmbedError, match="variant 'graph_only' cannot embed users"):
        load_run(run_dir, variant="graph_only")
    with pytest.raises(EmbedError, match="training seed 7"):
        load_run(run_dir, seed=7)


def test_other_statistic_columns_are_refused(trained, tiny_corpus, tmp_path, capsys):
    run_dir, _, _ = trained
    bad = tmp_path / "bad"
    shutil.copytree(tiny_corpus, bad)
    text = (bad / "users.csv").read_text().replace("posts_per_week", "posts_per_day", 1)
    (bad / "users.csv").write_text(text)
    with pytest.raises(
        EmbedError, match=r"missing: \['posts_per_week'\]; not in training: \['posts_per_day'\]"
    ):
        load_run(run_dir).embed(bad)
    err = _cli_error(
        capsys, ["--run-dir", str(run_dir), "--corpus", str(bad), "--out", str(tmp_path / "o.npz")]
    )
    assert "other statistic columns" in err


def test_image_outside_the_corpus_is_refused(trained, tiny_corpus, tmp_path, capsys):
    run_dir, _, _ = trained
    bad = tmp_path / "bad"
    shutil.copytree(tiny_corpus, bad)
    lines = (bad / "posts.jsonl").read_text().splitlines()
    post = json.loads(lines[0])
    shutil.copyfile(bad / post["image"], tmp_path / "outside.png")
    post["image"] = "../outside.png"
    (bad / "posts.jsonl").write_text("\n".join([json.dumps(post), *lines[1:]]) + "\n")
    with pytest.raises(CorpusError, match="escapes the corpus folder"):
        load_run(run_dir).embed(bad)
    err = _cli_error(
        capsys, ["--run-dir", str(run_dir), "--corpus", str(bad), "--out", str(tmp_path / "o.npz")]
    )
    assert "posts.jsonl, line 1, field 'image': path escapes the corpus folder" in err


def _rewrite_checkpoint(run_copy: Path, key: str, change) -> None:
    """Change a checkpoint of a copied run and record its new size and hash (so the run still looks finished)."""
    manifest = Manifest.load(run_copy / "manifest.json")
    path = manifest.outputs(key)["checkpoint"]
    payload = torch.load(path, map_location="cpu", weights_only=True)
    change(payload)
    torch.save(payload, path)
    rel = path.relative_to(run_copy).as_posix()
    manifest.data["entries"][key]["files"][rel] = {"size": path.stat().st_size, "sha256": file_sha256(path)}
    manifest.save()


def test_checkpoints_of_another_version_are_refused(trained, tmp_path, capsys):
    run_dir, train_dir, _ = trained
    argv = ["--corpus", str(train_dir), "--out", str(tmp_path / "o.npz")]

    copy = tmp_path / "new_field"
    shutil.copytree(run_dir, copy)
    _rewrite_checkpoint(
        copy,
        "seed_0/mmga/round_1/stage2",
        lambda p: p["hyper_parameters"]["stage2_config"]["model"].update(future_switch=True),
    )
    with pytest.raises(Stage2ConfigError, match="future_switch.*another version of stage 2"):
        load_run(copy).embed(train_dir)
    assert "another version" in _cli_error(capsys, ["--run-dir", str(copy), *argv])

    copy = tmp_path / "other_weights"
    shutil.copytree(run_dir, copy)

    def drop_a_weight(payload):
        key = next(k for k in payload["state_dict"] if k.startswith("text_encoder."))
        del payload["state_dict"][key]

    _rewrite_checkpoint(copy, "seed_0/mmga/round_1/stage1", drop_a_weight)
    with pytest.raises(Stage1ConfigError, match="text_encoder weights do not fit.*another version"):
        load_run(copy).embed(train_dir)
    assert "another version" in _cli_error(capsys, ["--run-dir", str(copy), *argv])


def test_small_inductive_gap_scoring(trained, tiny_corpus, tiny_corpus_loaded):
    """The benchmark's scoring on the tiny run: heads fit on training users, scored on the held-out users."""
    from bridge.evaluation.heads import evaluate_representation
    from bridge.inference.holdout import held_out_splits
    from tests.bridge.test_bridge_run import TINY_EVAL

    run_dir, train_dir, held = trained
    full, train = tiny_corpus_loaded, load_corpus(train_dir)
    splits = held_out_splits(full, held, train)
    assert (splits[held] == 2).all() and (splits[~held] != 2).all()
    index = {u: i for i, u in enumerate(train.user_ids)}
    kept = [index[u] for u, h in zip(full.user_ids, held) if not h]
    np.testing.assert_array_equal(splits[~held], np.where(train.splits[kept] == 2, 0, train.splits[kept]))
    assert round(0.2 * np.sum(full.labels == 0)) == np.sum(held & (full.labels == 0))  # stratified

    _, emb = load_run(run_dir).embed(tiny_corpus)
    metrics = evaluate_representation(emb, full.labels, full.fans, splits, TINY_EVAL)
    assert metrics.topic.n["test"] == int(held.sum())
    assert 0.0 <= metrics.topic["macro_f1"].mean <= 1.0 and np.isfinite(metrics.fans["mae"].mean)


def test_exports_parquet_npz_and_pyg_data(trained, tmp_path):
    from bridge.export import main as export_main
    from bridge.inference.exports import read_parquet_blocks, to_pyg_data

    run_dir, train_dir, _ = trained
    run = load_run(run_dir)
    ids, own = run.embeddings()
    assert export_main(["--run-dir", str(run_dir), "--out", str(tmp_path / "own.parquet")]) == 0
    user_ids, blocks, meta = read_parquet_blocks(tmp_path / "own.parquet")
    assert user_ids == ids and meta["variant"] == "mmga" and meta["round"] == run.round
    np.testing.assert_array_equal(
        np.concatenate([blocks["graph"], blocks["text"], blocks["image"]], axis=1), own
    )
    assert export_main(["--run-dir", str(run_dir), "--out", str(tmp_path / "own.npz")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "own.npz")["embeddings"], own)
    assert (
        export_main(["--run-dir", str(run_dir), "--out", str(run_dir / "inside.parquet")]) == 2
    )  # run-owned

    corpus = load_corpus(train_dir)
    data = to_pyg_data(own, corpus)
    assert data.num_nodes == corpus.num_users and data.edge_index.shape == (2, 2 * corpus.num_edges)
    assert (
        int(data.train_mask.sum()) == int((corpus.splits == 0).sum())
        and data.y.tolist() == corpus.labels.tolist()
    )
    with pytest.raises(ValueError, match=r"embeddings must be \[N="):
        to_pyg_data(own[:-1], corpus)


def test_embed_writes_parquet_for_new_users(trained, tiny_corpus, tmp_path):
    from bridge.inference.exports import read_parquet_blocks

    run_dir, _, _ = trained
    out = tmp_path / "new.parquet"
    assert main(["--run-dir", str(run_dir), "--corpus", str(tiny_corpus), "--out", str(out)]) == 0
    user_ids, blocks, meta = read_parquet_blocks(out)
    _, emb = load_run(run_dir).embed(tiny_corpus)
    assert len(user_ids) == len(emb) and meta["corpus_fingerprint"] == load_corpus(tiny_corpus).fingerprint
    np.testing.assert_allclose(
        np.concatenate([blocks[b] for b in ("graph", "text", "image")], axis=1), emb, atol=1e-5
    )
