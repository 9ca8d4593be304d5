"""``python -m cache.inspect``: what it prints for a good cache, a foreign one and a damaged one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
from cache_payloads import FINGERPRINT, PRODUCER, random_encoders, random_graph

from cache import encoder_file, graph_file, write_encoder_embeddings, write_graph_outputs
from cache.inspect import main

REPO = Path(__file__).resolve().parents[2]


def make_cache(tmp_path: Path) -> None:
    for r in (0, 1):
        write_encoder_embeddings(
            tmp_path,
            r,
            random_encoders(50, seed=r),
            fingerprint=FINGERPRINT,
            producer=PRODUCER,
            model="tiny-vit",
        )
        write_graph_outputs(
            tmp_path, r, random_graph(50, 120), fingerprint=FINGERPRINT, producer={"heads": 4}
        )


def test_inspect_folder_lists_every_round(tmp_path, capsys):
    make_cache(tmp_path)
    emb = random_encoders(50, seed=0)
    assert main([str(tmp_path), "--fingerprint", FINGERPRINT]) == 0
    out = capsys.readouterr().out
    blocks = out.strip().split("\n\n")
    assert [b.splitlines()[0] for b in blocks] == [
        str(encoder_file(tmp_path, 0)),
        str(graph_file(tmp_path, 0)),
        str(encoder_file(tmp_path, 1)),
        str(graph_file(tmp_path, 1)),
    ]
    first = blocks[0]
    assert "  kind                encoders\n  round               0\n  schema_version      2\n" in first
    assert f"  corpus_fingerprint  {FINGERPRINT}\n  model               tiny-vit\n" in first
    assert "  status              OK (schema, shapes, dtypes, values, fingerprint)" in first
    n_img = int(emb.image_mask.sum())
    assert (
        f"    image_mask      [50]           bool     chunks contiguous   True {n_img} / False {50 - n_img}"
        in first
    )
    img = emb.user_image_emb
    stats = f"min {img.min():.4g}  max {img.max():.4g}  mean {img.mean():.4g}"
    assert f"    user_image_emb  [50, 32]       float32  chunks contiguous   {stats}" in first
    assert '    model.vision = "vit-tiny"\n    model.width = 32\n' in first
    assert (
        "  num_edges           120" in blocks[1] and "    edge_index      [2, 240]       int64" in blocks[1]
    )


def test_inspect_reports_foreign_and_damaged_files(tmp_path, capsys):
    make_cache(tmp_path)
    assert main([str(encoder_file(tmp_path, 0)), "--fingerprint", "other"]) == 1
    out = capsys.readouterr().out
    assert (
        f"ERROR: {encoder_file(tmp_path, 0)}: cache belongs to corpus fingerprint {FINGERPRINT} but the corpus is other"
        in out
    )
    with h5py.File(graph_file(tmp_path, 1), "r+") as h5:
        h5["gate"][3, 0] = np.nan
    (graph_file(tmp_path, 1).parent / "graph.h5.tmp-123-abcd").write_bytes(b"half")
    assert main([str(tmp_path), "--no-stats"]) == 1
    out = capsys.readouterr().out
    assert (
        f"ERROR: {graph_file(tmp_path, 1)}, dataset 'gate': has 1 NaN/inf values (first at index (3, 0))"
        in out
    )
    assert "graph.h5.tmp-123-abcd: temporary file left by an interrupted write; safe to delete" in out
    assert "min " not in out


def test_inspect_cli_runs_as_a_module(tmp_path):
    make_cache(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    help_run = subprocess.run(
        [sys.executable, "-m", "cache.inspect", "--help"], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert help_run.returncode == 0 and help_run.stdout.startswith("usage: python -m cache.inspect")
    assert "--fingerprint" in help_run.stdout
    run = subprocess.run(
        [sys.executable, "-m", "cache.inspect", str(graph_file(tmp_path, 0)), "--producer"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    assert '  producer config:\n    {\n      "heads": 4\n    }\n' in run.stdout
    missing = subprocess.run(
        [sys.executable, "-m", "cache.inspect", str(tmp_path / "nope")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 2 and "no such file or folder" in missing.stderr
