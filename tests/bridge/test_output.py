"""The main job's output when it is not a terminal: short, no third-party noise, the verdict at the end."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

NOISE = (
    "torch.jit",  # torch-sparse's import-time FutureWarning
    "FutureWarning",
    "DeprecationWarning",
    "_pytree",  # Lightning's deprecation warning
    "litlogger",  # Lightning's advertising tip
    "Tip:",
    "GPU available",
    "Epoch 0/",  # Lightning's per-epoch bar on a step-limited run
    "No pretrained weights loaded",  # open_clip, once per stage-1 round
    "Training:",  # Lightning's second bar in stage 2
    "it/s",  # any tqdm redraw
)

TINY = [
    "--frozen",
    "model.text_model=tiny",
    "--stage1",
    "model.text_hidden_size=32",
    "--stage1",
    "model.text_layers=1",
    "--stage1",
    "model.text_heads=2",
    "--stage1",
    "model.text_intermediate_size=64",
    "--stage1",
    "model.text_vocab_size=120",
    "--stage1",
    "model.max_text_length=12",
    "--stage1",
    "losses.ita_dim=16",
    "--stage1",
    "losses.gcl_hidden_dim=16",
    "--stage1",
    "data.pairs_per_batch=8",
    "--stage1",
    "trainer.max_steps=2",
    "--stage1",
    "optim.warmup_steps=1",
    "--stage2",
    "model.hidden_dim=16",
    "--stage2",
    "model.num_layers=1",
    "--stage2",
    "trainer.max_steps=3",
    "--eval",
    "head_seeds=[0]",
    "--eval",
    "weight_decays=[0.001]",
    "--eval",
    "max_epochs=20",
    "--eval",
    "gcn_max_epochs=20",
    "--eval",
    "gcn_weight_decays=[0.001]",
]


@pytest.mark.slow  # a full 2-round, 2-seed run in a fresh interpreter
def test_default_output_is_short_and_free_of_third_party_noise(tiny_corpus, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHONWARNINGS")}
    out = subprocess.run(
        [
            sys.executable,
            "bridge/alternate.py",
            "--rounds",
            "2",
            "--seeds",
            "2",
            "--jobs",
            "2",
            "--corpus",
            str(tiny_corpus),
            "--run-dir",
            str(tmp_path / "run"),
            *TINY,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    for noise in NOISE:
        assert noise not in text, f"{noise!r} in the output:\n{text}"
    lines = text.strip().splitlines()
    runs = re.search(r"= (\d+) stage-1 and (\d+) stage-2 runs", lines[0])
    assert lines[0].startswith("MMGA bridge:") and runs, lines[0]
    stages = int(runs[1]) + int(runs[2])
    stage_lines = [line for line in lines if line.startswith("[stage ")]
    last = f"[stage {stages}/{stages}]"
    assert len(stage_lines) == stages and stage_lines[-1].startswith(last)  # one line per stage
    assert all("of training left" in line for line in stage_lines[:-1])
    rows = [line.split()[1] for line in lines if line.startswith("[eval] ")]
    some_rows = {"mmga_round_1", "no_align", "peer_gcn", "mmga_finetuned"}
    assert len(rows) == len(set(rows)) and some_rows <= set(rows)  # one line per row
    verdict = re.compile(r"(Linear probe|Fine-tuned|Cold start).*: `\w+` is ")
    verdicts = [line for line in lines if verdict.match(line)]
    assert len(verdicts) == 8  # topic and fans for each of the report's four sections
    assert "\r" not in text
    assert sum("starts from random weights" in line for line in lines) == 1  # said once, in the header
    assert any(line.startswith("  roughly") for line in lines[:5])
    # nothing else: the header, its note on random weights, the corpus, the estimate, the text states, the blank
    # line before the verdicts and the report's path
    other = [line for line in lines if not line.startswith(("[stage ", "[eval] ")) and line not in verdicts]
    assert len(other) == 7, "\n".join(other)
    assert lines[-1].startswith("Report: ")
    # each stage's own output went to its stage.log: one summary line for training, nothing from Lightning
    log = (tmp_path / "run" / "seed_1" / "mmga" / "round_1" / "stage1" / "stage.log").read_text()
    assert log.strip().splitlines() == [
        line for line in log.strip().splitlines() if line.startswith("stage 1:")
    ]
    assert "stage 1: 2 steps in" in log


def test_quiet_prints_the_verdict_only(tiny_corpus, tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "bridge/alternate.py",
            "--rounds",
            "1",
            "--seeds",
            "1",
            "--jobs",
            "1",
            "--skip-baselines",
            "--quiet",
            "--corpus",
            str(tiny_corpus),
            "--run-dir",
            str(tmp_path / "run"),
            *TINY,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    lines = [line for line in (out.stdout + out.stderr).splitlines() if line.strip()]
    # one training seed: no verdict word, the plain statement instead (then where the report is)
    assert [line.split(":")[0] for line in lines] == ["one training seed", "Report"], lines
