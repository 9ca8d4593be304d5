"""Stage 1 under Lightning DDP on CPU (gloo), 2 processes: the CLI with ``ddp`` (Lightning re-launches the
module per rank) and an in-process call with ``ddp_spawn`` (what the bridge does). Each run trains, exports
sharded by rank and writes the cache from rank 0; the file must equal a 1-process export of the same
checkpoint. Marked slow: each run starts 2 extra Python processes that import torch, open_clip and
transformers (5-16 s each, 28-34 s for the file, on the 2-core machine at load 1.6-3)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from stage1_test_utils import TINY_MODEL

from cache import read_encoder_embeddings
from corpus import load_corpus
from stage1_encoders import Stage1Config, run_stage1
from stage1_encoders.infer import encode_corpus, load_trained_encoders

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def _assert_export_matches_one_process(corpus_dir: Path, cache_dir: Path, checkpoint: Path) -> None:
    corpus = load_corpus(corpus_dir)
    written = read_encoder_embeddings(
        cache_dir, 0, fingerprint=corpus.fingerprint, num_users=corpus.num_users
    )
    single = encode_corpus(load_trained_encoders(checkpoint), corpus)
    assert written.user_image_emb.any() and written.user_text_emb.any()
    np.testing.assert_array_equal(written.image_mask, single.image_mask)
    np.testing.assert_array_equal(written.text_mask, single.text_mask)
    np.testing.assert_allclose(written.user_image_emb, single.user_image_emb, rtol=0, atol=1e-6)
    np.testing.assert_allclose(written.user_text_emb, single.user_text_emb, rtol=0, atol=1e-6)


def test_cli_ddp_two_processes_trains_and_exports_like_one_process(tiny_corpus, tmp_path):
    config = tmp_path / "stage1.yaml"
    config.write_text(
        "model:\n"
        + "".join(f"  {k}: {v}\n" for k, v in TINY_MODEL.items())
        + "data:\n  pairs_per_batch: 8\n  posts_per_user: 2\n  export_batch_size: 16\n"
    )
    cache_dir, out_dir = tmp_path / "cache", tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "stage1_encoders.run",
        "--config",
        str(config),
        "--corpus",
        str(tiny_corpus),
        "--cache",
        str(cache_dir),
        "--round",
        "0",
        "--out",
        str(out_dir),
        "--max-steps",
        "2",
        "--devices",
        "2",
        "--strategy",
        "ddp",
        "--accelerator",
        "cpu",
        "--no-enable-progress-bar",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "distributed_backend=gloo" in done.stderr + done.stdout
    assert "All distributed processes registered. Starting with 2 processes" in done.stderr + done.stdout
    assert f"cache file {cache_dir / 'round_0' / 'encoders.h5'}" in done.stdout
    _assert_export_matches_one_process(tiny_corpus, cache_dir, out_dir / "checkpoints" / "last.ckpt")


def test_in_process_ddp_spawn_trains_and_exports_like_one_process(tiny_corpus, tmp_path):
    cfg = Stage1Config.from_dict(
        {
            "corpus": str(tiny_corpus),
            "cache_dir": str(tmp_path / "cache"),
            "out_dir": str(tmp_path / "out"),
            "model": dict(TINY_MODEL),
            "data": {"pairs_per_batch": 8, "posts_per_user": 2, "export_batch_size": 16},
            "trainer": {"max_steps": 2, "devices": 2, "strategy": "ddp_spawn", "enable_progress_bar": False},
        }
    )
    result = run_stage1(cfg)
    assert result.global_rank == 0
    assert result.metrics["global_step"] == 2
    _assert_export_matches_one_process(tiny_corpus, tmp_path / "cache", result.checkpoint)
