"""benchmarks/random_splits.py: the new splits, the scoring of each row on each split, and the margins' averages."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # the script's own imports

import random_splits  # noqa: E402
import run_probe  # noqa: E402

from bridge.evaluation.config import EvalConfig  # noqa: E402
from bridge.evaluation.rows import report_rows  # noqa: E402
from bridge.runfolder import RunPaths  # noqa: E402
from corpus.splits import stratified_split  # noqa: E402


def test_new_splits_are_seeded_stratified_and_differ_from_each_other():
    labels = np.repeat(np.arange(4), 25)
    labels[::10] = -1  # unlabelled users get a split too (the fans task reads them)
    splits = random_splits.new_splits(labels, 3)
    assert len(splits) == 3
    for j, s in enumerate(splits, start=1):
        assert np.array_equal(s, stratified_split(labels, seed=random_splits.SPLIT_SEED_BASE + j))
        for c in range(4):  # every topic in every part, in the 60/20/20 shares
            n = int((labels == c).sum())
            share = round(n * 0.2)
            assert np.bincount(s[labels == c], minlength=3).tolist() == [n - 2 * share, share, share]
    assert not np.array_equal(splits[0], splits[1]) and not np.array_equal(splits[1], splits[2])
    assert all(np.array_equal(a, b) for a, b in zip(splits, random_splits.new_splits(labels, 3), strict=True))


def test_margins_average_over_splits_per_seed_and_over_seeds_per_split():
    # 2 splits x 3 training seeds
    mmga = np.array([[0.90, 0.80, 0.70], [0.60, 0.50, 0.40]])
    other = np.array([[0.85, 0.85, 0.70], [0.50, 0.50, 0.50]])
    per_seed, per_split = random_splits.margins_over_splits(mmga, other, higher_is_better=True)
    assert per_seed == pytest.approx([0.075, -0.025, -0.05])  # seed s: mean over splits of mmga - other
    assert per_split == pytest.approx([0.0, 0.0])
    # lower is better (MAE): the margin is the other row minus MMGA
    per_seed, per_split = random_splits.margins_over_splits(mmga, other, higher_is_better=False)
    assert per_seed == pytest.approx([-0.075, 0.025, 0.05])
    mmga_mae = np.array([[0.6, 0.7], [0.6, 0.9]])
    other_mae = np.array([[0.7, 0.7], [0.8, 0.8]])
    per_seed, per_split = random_splits.margins_over_splits(mmga_mae, other_mae, higher_is_better=False)
    assert per_split == pytest.approx([0.05, 0.05])
    assert per_seed == pytest.approx([0.15, -0.05])


def test_each_row_is_scored_on_each_split_as_the_report_scores_it(tiny_corpus_loaded, tmp_path, monkeypatch):
    """Every (split, seed) evaluation gets the corpus with that split and the seed's folder; a row without a
    training seed is evaluated once per split and its score repeated for every seed."""
    corpus = tiny_corpus_loaded
    calls = []

    def fake_evaluate_one(row, split_corpus, paths, cfg, checkpoint):
        assert checkpoint is None  # neither row reads a stage-2 checkpoint
        calls.append((row.name, f"seed_{paths.seed}", split_corpus.splits.copy(), cfg))
        value = float(split_corpus.splits.sum()) + len(calls) / 1000
        return SimpleNamespace(
            topic={"macro_f1": SimpleNamespace(mean=value)}, fans={"mae": SimpleNamespace(mean=-value)}
        )

    monkeypatch.setattr(random_splits, "evaluate_one", fake_evaluate_one)
    cfg = EvalConfig()
    run = run_probe.RunRecord(tmp_path, corpus, [0, 2], 2, cfg, [0, 1, 2], 3)
    known = {r.name: r for r in report_rows(3, baselines=True)}
    rows = [known["mmga_round_2"], known["frozen"]]
    split_list = [corpus.splits, *random_splits.new_splits(corpus.labels, 2)]
    seen = []
    out = random_splits.score_rows(run, rows, split_list, progress=seen.append)
    assert seen == [0, 1, 2]
    assert out["mmga_round_2"].shape == out["frozen"].shape == (3, 2, 2)
    assert [(n, folder) for n, folder, _, _ in calls[:3]] == [
        ("mmga_round_2", "seed_0"),
        ("mmga_round_2", "seed_2"),
        ("frozen", "seed_0"),  # evaluated once, from the first training seed's folder
    ]
    assert len(calls) == 3 * 3 and all(c[3] is cfg for c in calls)
    for j, splits in enumerate(split_list):
        assert all(np.array_equal(c[2], splits) for c in calls[3 * j : 3 * j + 3])
        assert out["frozen"][j, 0, 0] == out["frozen"][j, 1, 0]  # repeated across the seeds
        assert out["mmga_round_2"][j, 0, 0] != out["mmga_round_2"][j, 1, 0]
        assert np.array_equal(out["mmga_round_2"][j, :, 1], -out["mmga_round_2"][j, :, 0])
    assert corpus.splits is split_list[0]  # the run's corpus itself is left as it was


def test_a_row_that_reads_stage_2_gets_its_seeds_checkpoint(tiny_corpus_loaded, tmp_path, monkeypatch):
    corpus = tiny_corpus_loaded
    got = []

    class FakeManifest:  # the stage-2 outputs the run recorded, per (seed, variant, round)
        def outputs(self, key):
            return {"checkpoint": f"/ckpt/{key}"}

    def fake_evaluate_one(row, split_corpus, paths, cfg, checkpoint):
        got.append((row.name, paths.seed, checkpoint))
        return SimpleNamespace(
            topic={"macro_f1": SimpleNamespace(mean=0.5)}, fans={"mae": SimpleNamespace(mean=0.5)}
        )

    monkeypatch.setattr(random_splits, "evaluate_one", fake_evaluate_one)
    run = run_probe.RunRecord(tmp_path, corpus, [1], 2, EvalConfig(), [0, 1], 3)
    rows = {r.name: r for r in report_rows(3, baselines=True, finetune=True)}
    picked = [rows["mmga_finetuned"], rows["mmga_cold"], rows["no_align"]]
    random_splits.score_rows(run, picked, [corpus.splits], FakeManifest())
    paths = RunPaths(tmp_path).for_seed(1)
    assert got == [
        ("mmga_finetuned", 1, Path(f"/ckpt/{paths.stage_key('mmga', 2, 'stage2')}")),
        ("mmga_cold", 1, Path(f"/ckpt/{paths.stage_key('mmga', 2, 'stage2')}")),
        ("no_align", 1, None),
    ]


def test_report_values_read_each_rows_seeds_from_metrics_json(tmp_path):
    report = tmp_path / "report"
    report.mkdir()
    rows = {
        "no_align": {"topic": {"macro_f1": {"values": [0.9, 0.8]}}, "fans": {"mae": {"values": [0.6, 0.7]}}}
    }
    (report / "metrics.json").write_text(json.dumps({"rows": rows}))
    got = random_splits.report_values(tmp_path, ["no_align", "missing"])
    assert list(got) == ["no_align"]
    assert got["no_align"].tolist() == [[0.9, 0.6], [0.8, 0.7]]
