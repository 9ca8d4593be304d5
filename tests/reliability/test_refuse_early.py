"""Matrix, refuse early what cannot finish (issue 15, items 2, 3, 5 and 14).

| input | expected outcome |
|---|---|
| every `label` empty | runs; topic skipped, said in the run header and the report (n/a + reason) |
| every `fans` empty | fans skipped (decided up front) |
| a `split` column without any `val` row | refused before any training: exit 2, no stage folder |
| `edges.csv` with only self-loops | refused before the corpus is recorded; after fixing it, the rerun needs no `--force` |
| a trailing space in a `users.csv` id | error names users.csv, the line and `user_id` |
| a constant representation (no images) | the report prints n/a and the reason, not `nan ± nan` |
"""

from __future__ import annotations

import csv

import numpy as np
import pytest
from reliability_helpers import tiny_config

from bridge.alternate import main
from bridge.evaluation import tasks
from bridge.evaluation.heads import evaluate_representation
from bridge.evaluation.results import Evaluation, Stat, TaskScores
from bridge.evaluation.rows import report_rows
from bridge.report import markdown
from bridge.report.summary import summarize_row
from bridge.rounds.context import BridgeResult, BridgeRun
from bridge.rounds.corpus import prepare_corpus
from bridge.rounds.runner import run_bridge
from bridge.runfolder.manifest import Manifest
from bridge.runfolder.paths import RunPaths
from corpus import CorpusError, load_corpus


def _edit_users(root, column: str, value) -> None:
    path = root / "users.csv"
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    header = list(rows[0])
    if column not in header:
        header.append(column)
    for i, row in enumerate(rows):
        row[column] = value(i) if callable(value) else value
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)


def test_all_labels_empty_runs_and_reports_topic_as_skipped(corpus_copy, tmp_path, capsys):
    root = corpus_copy()
    _edit_users(root, "label", "")
    result = run_bridge(tiny_config(root), tmp_path / "run")
    out = capsys.readouterr().out
    header = out.split("[stage 1/")[0]  # everything said before the first stage finished
    assert "[tasks] topic: skipped (no user has a known label)" in header
    row = result.metrics["rows"]["mmga_round_0"]
    assert row["topic"]["skipped"] == "no user has a known label"
    assert np.isfinite(row["fans"]["mae"]["mean"])
    md = result.report.read_text()
    assert "- `topic`: n/a, the task was skipped: no user has a known label." in md
    assert "nan ± nan" not in md


@pytest.mark.parametrize(
    ("column", "value", "task", "reason"),
    [
        ("label", "", "topic", "no user has a known label"),
        ("fans", "", "fans", "no user has a known fans count"),
        (
            "split",
            lambda i: "train" if i % 2 else "test",
            "topic",
            "no user with a known label in the val split",
        ),
    ],
    ids=["labels empty", "fans empty", "no val rows"],
)
def test_tasks_are_decided_up_front(corpus_copy, column, value, task, reason):
    root = corpus_copy()
    _edit_users(root, column, value)
    corpus = load_corpus(root)
    skipped = tasks.unavailable_tasks(corpus.labels, corpus.fans, corpus.splits)
    assert skipped[task] == reason
    x = np.random.default_rng(0).standard_normal((corpus.num_users, 4))
    if len(skipped) < len(tasks.TASKS):
        evaluated = evaluate_representation(x, corpus.labels, corpus.fans, corpus.splits)
        assert evaluated[task].skipped == reason


def test_no_val_rows_is_refused_before_training(corpus_copy, tmp_path, capsys):
    root = corpus_copy()
    _edit_users(root, "split", lambda i: "train" if i % 2 else "test")
    run = tmp_path / "run"
    code = main(["--rounds", "1", "--corpus", str(root), "--run-dir", str(run), "--skip-baselines"])
    err = capsys.readouterr().err
    assert code == 2
    assert "no downstream task can be evaluated" in err and "val split" in err
    assert "Traceback" not in err
    assert not (run / "seed_0").exists()  # nothing trained


def test_self_loop_only_edges_do_not_bind_the_run_folder(corpus_copy, tmp_path):
    root = corpus_copy()
    good_edges = (root / "edges.csv").read_text()
    (root / "edges.csv").write_text("src,dst\nu00000,u00000\nu00001,u00001\n")
    cfg = tiny_config(root)
    paths = RunPaths(tmp_path / "run")
    paths.run_dir.mkdir()
    result = BridgeResult(run_dir=paths.run_dir, report=paths.report_dir / "report.md", metrics={})
    with pytest.warns(UserWarning), pytest.raises(CorpusError, match="edges.csv: the corpus has no edges"):
        prepare_corpus(BridgeRun(cfg, paths, Manifest.load(paths.manifest), result))
    assert Manifest.load(paths.manifest).data["corpus"] is None  # nothing recorded
    (root / "edges.csv").write_text(good_edges)
    corpus = prepare_corpus(BridgeRun(cfg, paths, Manifest.load(paths.manifest), result))  # no --force
    assert Manifest.load(paths.manifest).data["corpus"]["fingerprint"] == corpus.fingerprint


def test_corpus_recorded_without_results_can_be_rebound(tmp_path):
    manifest = Manifest(tmp_path / "manifest.json")
    manifest.bind_corpus(tmp_path / "c", "a" * 64)
    manifest.bind_corpus(tmp_path / "c", "b" * 64)  # nothing was computed: no conflict
    assert manifest.data["corpus"]["fingerprint"] == "b" * 64


def test_trailing_space_in_a_user_id_is_blamed_on_users_csv(corpus_copy):
    root = corpus_copy()
    _edit_users(root, "user_id", lambda i: f"u{i:05d} " if i == 3 else f"u{i:05d}")
    with pytest.raises(CorpusError) as info:
        load_corpus(root)
    assert (info.value.file, info.value.line, info.value.field) == ("users.csv", 5, "user_id")
    assert "'u00003 ' has leading or trailing whitespace" in str(info.value)


def _image_row():
    (row,) = [r for r in report_rows(1, baselines=False) if r.name == "mmga_image"]
    return row


def test_undefined_metric_prints_n_a_with_the_reason():
    nan, ok = Stat(float("nan"), float("nan"), (float("nan"),) * 2), Stat(0.5, 0.0, (0.5, 0.5))
    topic = TaskScores("topic", {"accuracy": ok, "macro_f1": ok}, n={"train": 1, "val": 1, "test": 1})
    fans = TaskScores("fans", {"mae": ok, "spearman": nan}, n={"train": 1, "val": 1, "test": 1})
    summary = summarize_row(_image_row(), {0: Evaluation(topic, fans, 4)}, (0,))
    assert markdown.fmt(summary.metric("fans", "spearman")) == "n/a"
    assert markdown.fmt(summary.metric("topic", "accuracy")) == "0.500 ± 0.000"
    notes = "\n".join(markdown.task_notes({"mmga_image": summary}))
    assert "n/a for `mmga_image` fans spearman: the metric is undefined there" in notes
    assert "constant representation" in notes


def test_constant_representation_gives_nan_spearman_and_is_explained(tiny_corpus_loaded):
    c = tiny_corpus_loaded
    x = np.zeros((c.num_users, 3))  # what R^I is on a corpus without images
    evaluation = evaluate_representation(x, c.labels, c.fans, c.splits)
    assert not np.isfinite(evaluation.fans["spearman"].mean)
    summary = summarize_row(_image_row(), {0: evaluation}, (0,))
    assert "`mmga_image` fans spearman" in "\n".join(markdown.task_notes({"mmga_image": summary}))
