"""The report over typed results: summaries over training seeds, the seed-aware comparison, the verdict sentences,
the notes for n/a cells, and labels drawn as text (never mathtext)."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.evaluation.results import Evaluation, Stat, TaskScores
from bridge.evaluation.rows import report_rows
from bridge.report.markdown import task_notes
from bridge.report.summary import compare_rows, summarize_row, verdict_lines


def _evaluation(f1: float, mae: float, spearman: float = 0.5) -> Evaluation:
    topic = TaskScores(
        "topic",
        {"accuracy": Stat.of([f1, f1]), "macro_f1": Stat.of([f1 - 0.01, f1 + 0.01])},
        n={"train": 6, "val": 2, "test": 2},
    )
    fans = TaskScores(
        "fans",
        {"mae": Stat.of([mae]), "spearman": Stat.of([spearman]), "bucket_accuracy": Stat.of([0.3])},
        n={"train": 6, "val": 2, "test": 2},
    )
    return Evaluation(topic, fans, dim=8)


ROWS = report_rows(1, baselines=False)  # stats_x, mmga_round_0, mmga_graph, mmga_text, mmga_image


def _summaries(seeds=(0, 1, 2)):
    evaluated = {"stats_x": {None: _evaluation(0.5, 0.9)}}
    for i, row in enumerate(ROWS[1:]):
        evaluated[row.name] = {s: _evaluation(0.8 + 0.01 * s + 0.001 * i, 0.6 + 0.01 * s) for s in seeds}
    return {row.name: summarize_row(row, evaluated[row.name], seeds) for row in ROWS}


def test_a_row_is_summarised_over_training_seeds_with_the_heads_spread():
    summaries = _summaries()
    f1 = summaries["mmga_round_0"].metric("topic", "macro_f1")
    assert f1.values == pytest.approx((0.8, 0.81, 0.82)) and f1.mean == pytest.approx(0.81)
    assert f1.std == pytest.approx(0.01) and f1.head_std == pytest.approx(np.std([0.79, 0.81], ddof=1))
    x = summaries["stats_x"].metric("topic", "macro_f1")  # no training seed: one evaluation, std 0
    assert x.values == (0.5, 0.5, 0.5) and x.std == 0.0
    data = summaries["mmga_round_0"].to_json()
    assert set(data["per_seed"]) == {"0", "1", "2"} and data["dim"] == 8
    assert data["topic"]["macro_f1"]["head_std"] == f1.head_std and data["topic"]["n"]["train"] == 6


def test_the_comparison_pairs_seeds_and_says_the_verdict():
    (comp,) = compare_rows(ROWS, _summaries())
    assert comp.against == "stats_x" and comp.mmga == "mmga_round_0"
    f1, mae = comp.margins["topic_macro_f1"], comp.margins["fans_mae"]
    assert f1.margins == pytest.approx((0.3, 0.31, 0.32)) and f1.verdict == "ahead"
    assert mae.margins == pytest.approx((0.3, 0.29, 0.28)) and mae.verdict == "ahead"  # lower MAE is better
    assert comp.to_json()["topic_macro_f1"]["ahead_in"] == 3
    assert verdict_lines([comp]) == [
        "Linear probe on frozen embeddings, topic macro-F1: `mmga_round_0` is ahead of stats_x.",
        "Linear probe on frozen embeddings, fans MAE: `mmga_round_0` is ahead of stats_x.",
    ]


def test_notes_explain_skipped_tasks_and_undefined_metrics():
    summaries = _summaries(seeds=(0,))
    skipped = TaskScores.skipped_task("fans", "no user has a known fans count")
    row = ROWS[1]
    no_fans = Evaluation(_evaluation(0.8, 0.6).topic, skipped, 8)
    notes = task_notes({row.name: summarize_row(row, {0: no_fans}, (0,))})
    assert notes[0] == "- `fans`: n/a, the task was skipped: no user has a known fans count."
    undefined = {name: s for name, s in summaries.items()}
    undefined["mmga_image"] = summarize_row(ROWS[4], {0: _evaluation(0.3, 0.9, spearman=float("nan"))}, (0,))
    assert "`mmga_image` fans spearman" in "\n".join(task_notes(undefined))


def test_topic_labels_are_drawn_as_text(tmp_path):
    import matplotlib.pyplot as plt

    from bridge.report.plots import literal

    assert literal("cost $5 and $x^2$") == r"cost \$5 and \$x^2\$"
    fig, ax = plt.subplots()
    ax.scatter([0], [0], label=literal(r"broken $\frac{$ label"))  # unparseable as mathtext
    ax.legend()
    fig.savefig(tmp_path / "legend.png")  # raises ValueError on mathtext it cannot parse
    plt.close(fig)


def test_validation_scores_of_the_chosen_heads_are_summarised():
    from bridge.evaluation.results import Choice

    def with_val(v: float) -> Evaluation:
        ev = _evaluation(0.8, 0.6)
        topic = TaskScores(
            "topic",
            ev.topic.scores,
            (Choice(0, "linear", 1e-3, v), Choice(1, "linear", 1e-2, v + 0.1)),
            ev.topic.n,
        )
        return Evaluation(topic, ev.fans, 8)

    summary = summarize_row(ROWS[1], {0: with_val(0.5), 1: with_val(0.7)}, (0, 1))
    assert summary.tasks["topic"].val.values == pytest.approx((0.55, 0.75))
    assert summary.to_json()["topic"]["val_selection_score"]["mean"] == pytest.approx(0.65)
    assert np.isnan(summary.tasks["fans"].val.mean)  # no choices recorded: unknown, not zero


def test_loss_curves_over_every_seed_mark_the_pair_classifiers_chance(tmp_path, monkeypatch):
    import matplotlib.axes

    from bridge.report.plots import plot_loss_curves

    logs = []
    for seed in range(2):
        folder = tmp_path / f"s{seed}"
        folder.mkdir()
        (folder / "metrics.csv").write_text("step,train/loss,train/gcl_text_loss\n0,2.0,0.7\n1,1.5,0.69\n")
        logs.append({"stage1": [folder], "stage2": [None]})
    marked = []
    real = matplotlib.axes.Axes.axhline
    monkeypatch.setattr(
        matplotlib.axes.Axes, "axhline", lambda ax, y=0, *a, **k: marked.append(y) or real(ax, y, *a, **k)
    )
    assert plot_loss_curves(logs, tmp_path / "loss.png")
    assert marked == [pytest.approx(np.log(2))] and (tmp_path / "loss.png").stat().st_size > 0


def test_per_topic_f1_and_the_confusion_matrix_come_from_the_chosen_heads(tmp_path):
    from bridge.evaluation import loop
    from bridge.report.markdown import class_f1, confusion
    from bridge.report.plots import plot_confusion

    y = np.array([0, 1, 0, 1, 0, 1, 1, 0, 1, 0])
    targets = loop.prepare_targets("topic", y, y >= 0, np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 2]), 3)
    good = loop.Candidate(0, "linear", 1e-3, np.array([0, 1]), np.array([1, 0, 1, 1]))  # y_test = 1 0 1 0
    scores = loop.select_and_score(targets, [good], seeds=(0,))
    assert [s.mean for s in scores.per_class_f1] == pytest.approx(
        [2 / 3, 0.8]
    )  # class 0: P 1, R 0.5; class 1
    assert scores.confusion == ((1, 1), (0, 2))
    ev = Evaluation(scores, _evaluation(0.8, 0.6).fans, 8)
    summary = summarize_row(ROWS[1], {0: ev, 1: ev}, (0, 1))
    assert class_f1(summary) == pytest.approx([2 / 3, 0.8])
    np.testing.assert_array_equal(confusion(summary), [[2, 2], [0, 4]])  # summed over training seeds
    plot_confusion(confusion(summary), ["$a$", "b"], tmp_path / "c.png", "t")
    assert (tmp_path / "c.png").stat().st_size > 0
    assert Evaluation.from_json(ev.to_json()).topic.confusion == scores.confusion  # through the manifest
